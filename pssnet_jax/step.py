"""The PSS-Net training step (../shared/papers/pssnet.md §7) as separately compiled pieces.

One step trains three subnets on the same batch with the pre-update weights: the max net
with cross-entropy, then the middle subnet and the min net with KL(softmax(z_max) ||
softmax(z)) (teacher under stop-gradient, 'batchmean', temperature 1); the three gradients are
summed (not averaged) into one SGD update. The middle subnet's pool score is -CE(z_mid, y) of
its own training forward (no extra pass). BatchNorm running statistics are updated by the
three forwards in that order.

Each subnet's gradient is computed under ``jax.shard_map`` over the data axis with the
weights cast to device-varying, so it leaves its program as per-device partial gradients
(a leading axis of one entry per device) instead of being all-reduced: the update sums the
three subnets' partials and reduces them over the devices once, so the gradient crosses the
interconnect once a step, not three times. BatchNorm statistics are combined across devices
inside (``supernet.MaskedBatchNorm.axis_name``), losses and metrics are means over devices.

``split`` mode (default) compiles the max-net gradient, a subnet gradient per resolution and
the update as separate functions, so a new middle resolution costs only one small compile
(see the compile-time issue); ``single`` mode is the same arithmetic in one function. Both
give the same numbers to float tolerance (a test).
"""

from __future__ import annotations

import functools
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from common_jax import data, mesh as mesh_lib
from common_jax.losses import at_least_float32, cross_entropy

log = logging.getLogger(__name__)


def mean_cross_entropy(logits, labels):
    return jnp.mean(cross_entropy(logits, labels))


def kl_to_teacher(teacher, logits):
    """KL(teacher || softmax(logits)), summed over classes, mean over the batch."""
    log_q = jax.nn.log_softmax(at_least_float32(logits))
    return jnp.mean(jnp.sum(jax.scipy.special.xlogy(teacher, teacher) - teacher * log_q, -1))


class CompileCache:
    """Ahead-of-time compiled functions keyed by name and static arguments; every compile is
    logged with its duration (``times`` keeps them for reports)."""

    def __init__(self):
        self._functions: dict = {}
        self.times: dict = {}

    def get(self, name, fn, args, static=(), donate=(), shardings=(None, None)):
        """The compiled ``fn`` for arguments like ``args``; ``shardings`` = (in, out) pins
        the program's input and output shardings (pytree prefixes, as ``jax.jit`` takes)."""
        key = (name,) + tuple(static)
        if key not in self._functions:
            start = time.perf_counter()
            in_shardings, out_shardings = shardings
            self._functions[key] = jax.jit(
                fn, donate_argnums=donate, in_shardings=in_shardings,
                out_shardings=out_shardings).lower(*args).compile()
            self.times[" ".join(map(str, key))] = time.perf_counter() - start
            log.info("compiled %s in %.1f s", " ".join(map(str, key)),
                     time.perf_counter() - start)
        return self._functions[key]

    def programs(self) -> dict:
        """{name: compiled function} of everything compiled so far, in compile order."""
        return {" ".join(map(str, key)): fn for key, fn in self._functions.items()}


class StepFunctions:
    """The jitted pieces of the PSS-Net step for one supernet and optimizer."""

    def __init__(self, model, tx, schedule, info: data.DatasetInfo, dtype, max_resolution: int,
                 mesh=None):
        self.model, self.tx, self.schedule = model, tx, schedule
        self.info, self.dtype, self.max_resolution = info, dtype, max_resolution
        self.compiled, self._zeros = CompileCache(), {}
        self.mesh = mesh if mesh is not None else mesh_lib.data_mesh()
        # the shardings every program pins: state and widths replicated, batches (and the
        # per-device partial gradients) split over the devices
        self.replicated = mesh_lib.replicated(self.mesh)
        self.sharded = mesh_lib.batch_sharded(self.mesh)
        # the same supernet, its BatchNorm combining statistics across the devices
        self.sharded_model = model.clone(bn_axis_name=mesh_lib.DATA_AXIS)

    def no_teacher(self, batch):
        """The max net's (unused) teacher: zeros of the batch's logits shape, split over the
        devices as the gradient program pins it, built once per batch size on every process
        without a cross-host check (split mode passes it every step)."""
        shape = (batch["label"].shape[0], self.model.num_classes)
        if shape not in self._zeros:
            zeros = np.zeros(shape, np.float32)
            self._zeros[shape] = jax.make_array_from_callback(shape, self.sharded,
                                                              lambda index: zeros[index])
        return self._zeros[shape]

    # -- pure pieces ------------------------------------------------------------------------
    def images(self, batch):
        """The batch's images normalised in the compute dtype."""
        return data.normalize(batch["image"], self.info.mean, self.info.std, self.dtype)

    def _grad(self, params, batch_stats, batch, widths, teacher, ce_weight, kl_weight,
              resolution):
        """Gradient of ``ce_weight * CE(z, y) + kl_weight * KL(teacher || softmax(z))`` for one
        subnet, as per-device partial gradients (``total_gradient`` sums them). The max net
        uses weights (1, 0) and the others (0, 1): one compiled function per resolution serves
        all three (a zero-weighted term adds exact zeros). Returns (partial gradients, BN
        statistics, the subnet's softmax sharded like the batch, metrics)."""
        axis = mesh_lib.DATA_AXIS

        def local(params, batch_stats, batch, widths, teacher, ce_weight, kl_weight):
            def loss_fn(p):
                logits, updates = self.sharded_model.apply(
                    {"params": p, "batch_stats": batch_stats}, self.images(batch), widths,
                    resolution, train=True, mutable=["batch_stats"])
                ce = jax.lax.pmean(mean_cross_entropy(logits, batch["label"]), axis)
                kl = jax.lax.pmean(kl_to_teacher(teacher, logits), axis)
                return ce_weight * ce + kl_weight * kl, (logits, ce, kl, updates["batch_stats"])

            # device-varying weights: the gradient stays this device's part, not all-reduced
            varying = jax.lax.pcast(params, axis, to="varying")
            (_, (logits, ce, kl, stats)), grads = jax.value_and_grad(
                loss_fn, has_aux=True)(varying)
            probs = jax.lax.stop_gradient(jax.nn.softmax(at_least_float32(logits)))
            accuracy = jax.lax.pmean(jnp.mean(jnp.argmax(logits, -1) == batch["label"]), axis)
            return (jax.tree.map(lambda g: g[None], grads), stats, probs,
                    {"ce": ce, "kl": kl, "accuracy": accuracy, "score": -ce})

        return jax.shard_map(
            local, mesh=self.mesh, in_specs=(P(), P(), P(axis), P(), P(axis), P(), P()),
            out_specs=(P(axis), P(), P(axis), P()))(
                params, batch_stats, batch, widths, teacher, ce_weight, kl_weight)

    @staticmethod
    def total_gradient(grads):
        """The summed gradient of the three subnets from their per-device partials: summed
        on each device first, then over the devices (one all-reduce of the gradient)."""
        return jax.tree.map(lambda *g: jnp.sum(sum(g), axis=0), *grads)

    def subnet_grad(self, resolution: int):
        """The uncompiled gradient function of one resolution (what ``step`` compiles)."""
        return functools.partial(self._grad, resolution=resolution)

    def _update(self, state, grads, batch_stats):
        """(new state, learning rate used): one SGD step with the summed gradients."""
        total = self.total_gradient(grads)
        updates, opt_state = self.tx.update(total, state["opt_state"], state["params"])
        new_state = dict(state, step=state["step"] + 1, batch_stats=batch_stats,
                         opt_state=opt_state, params=optax.apply_updates(state["params"], updates))
        return new_state, self.schedule(state["step"])

    def _three(self, grad_fn, state, batch, nets, no_teacher=None):
        """Max net (CE), then middle and min net (KL to the max net): grads, stats, metrics.
        ``grad_fn(resolution)`` gives the gradient function for a resolution; ``no_teacher``
        the max net's zero teacher (built here when traced inside one program)."""
        params, stats = state["params"], state["batch_stats"]
        (max_widths, max_res), *students = nets
        if no_teacher is None:
            no_teacher = jnp.zeros((batch["label"].shape[0], self.model.num_classes),
                                   jnp.float32)
        g_max, stats, teacher, top = grad_fn(max_res)(params, stats, batch, max_widths,
                                                      no_teacher, 1.0, 0.0)
        grads, outs = [g_max], []
        for widths, resolution in students:
            g, stats, _, out = grad_fn(resolution)(params, stats, batch, widths, teacher, 0.0,
                                                   1.0)
            grads.append(g)
            outs.append(out)
        metrics = {"loss": top["ce"], "accuracy": top["accuracy"], "score": outs[0]["score"],
                   "kl_mid": outs[0]["kl"], "kl_min": outs[1]["kl"]}
        return tuple(grads), stats, metrics

    def _single(self, state, batch, max_widths, mid_widths, min_widths, resolutions):
        nets = tuple(zip((max_widths, mid_widths, min_widths), resolutions))
        grads, stats, metrics = self._three(self.subnet_grad, state, batch, nets)
        new_state, lr = self._update(state, grads, stats)
        return new_state, {**metrics, "learning_rate": lr}

    # -- compiled entry points ---------------------------------------------------------------
    def step(self, state, batch, max_widths, mid, low, mode: str = "split"):
        """One training step; ``mid``/``low`` are (widths, resolution) of the middle and min
        subnets. Returns (state, metrics) as device values (nothing is waited for)."""
        nets = ((max_widths, self.max_resolution), mid, low)
        if mode == "single":
            resolutions = tuple(r for _, r in nets)
            args = (state, batch, max_widths, mid[0], low[0])
            return self.single_program(resolutions, args)(*args)

        def grad_fn(resolution):
            def call(*args):
                return self.grad_program(resolution, args)(*args)
            return call

        grads, stats, metrics = self._three(grad_fn, state, batch, nets, self.no_teacher(batch))
        args = (state, grads, stats)
        new_state, lr = self.update_program(args)(*args)
        return new_state, {**metrics, "learning_rate": lr}

    # -- the compiled programs (compiled on first request, or ahead by precompile.py) -------
    def grad_program(self, resolution: int, args):
        """Split mode: one subnet's gradient at ``resolution`` for arguments like ``args``."""
        r, b = self.replicated, self.sharded
        return self.compiled.get("subnet grad at", self.subnet_grad(resolution), args,
                                 (resolution,), shardings=((r, r, b, r, b, r, r), (b, r, b, r)))

    def update_program(self, args):
        """Split mode: the SGD update with the three gradients (the state is donated)."""
        r = self.replicated
        return self.compiled.get("update", self._update, args, donate=(0,),
                                 shardings=((r, self.sharded, r), (r, r)))

    def single_program(self, resolutions: tuple, args):
        """Single mode: the whole step for the (max, middle, min) nets' resolutions."""
        fn = functools.partial(self._single, resolutions=resolutions)
        r = self.replicated
        return self.compiled.get("single step", fn, args, resolutions, donate=(0,),
                                 shardings=((r, self.sharded, r, r, r), (r, r)))
