"""The shared training loop: jit over a data mesh, donated state, periodic eval and checkpoints.

``train_and_evaluate(config, workdir)`` trains (resuming from the newest checkpoint in the
workdir), evaluates, and writes ``summary.json``; ``evaluate_checkpoint`` only evaluates.
The train state is a plain dict ``{"step", "params", "batch_stats", "opt_state", "rng"}``,
created already replicated over the mesh. Everything that can be wrong with a config is
checked in ``setup`` before anything is compiled.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from common_jax import (checkpoint, compilation_cache, data, mesh as mesh_lib, models, optim,
                        profile)
from common_jax.metrics import MetricWriter
from common_jax.preemption import Preemption

log = logging.getLogger("common_jax")
BEST = "best_checkpoint"


def default_variables(state: dict, params) -> dict:
    return {"params": params, "batch_stats": state["batch_stats"]}


@dataclasses.dataclass
class Method:
    """What a training method plugs into the shared loop; the baseline uses the defaults.

    arch: the plain-width description of the trained network (profile, summary, export).
    model: the flax module that is trained (e.g. DCFF's fused network).
    extra_state: init variables -> extra train-state entries, traced inside the jitted init.
    variables: (state, params) -> the variables passed to ``model.apply``.
    before_epoch: (state, epoch, total_epochs) -> state, called before the first step of
        every epoch and once when a run resumes mid-epoch (it must detect that itself).
    export_variables: state -> variables of the exported (plain-width) model.
    init_inputs: extra arguments of ``model.init`` after the images (e.g. supernet widths).
    train_step: run -> step(state, batch, step) -> (state, metrics), replacing the default
        jitted step (PSS-Net samples a subnet on the host and runs several compiled pieces);
        metrics must hold ``loss``, ``accuracy`` and ``learning_rate``.
    evaluate: (run, state) -> {"eval_loss", "eval_accuracy", ...}, replacing the default.
    host_state / load_host_state: JSON-serialisable host-side state saved in every
        checkpoint and restored on resume (PSS-Net's pools and sampler).
    finalize: (run, state, workdir) -> extra summary entries, after training and in eval mode.
    export: (run, state, workdir, directory) -> directory, replacing the default export.
    extra_costs: integer costs added to the profile JSON and the summary (PSS-Net: min_flops).
    host: the method's host-side object, for benchmarks and tests (PSS-Net: its ``PSSNet``).
    """

    arch: dict
    model: Any
    extra_state: Callable[[Any], dict] = lambda variables: {}
    variables: Callable[[dict, Any], dict] = default_variables
    before_epoch: Callable[[dict, int, int], dict] | None = None
    export_variables: Callable[[dict], dict] = lambda state: default_variables(
        state, state["params"])
    init_inputs: tuple = ()
    train_step: Callable | None = None
    evaluate: Callable | None = None
    host_state: Callable[[], dict] = dict
    load_host_state: Callable[[dict], None] = lambda host: None
    finalize: Callable | None = None
    export: Callable | None = None
    extra_costs: dict = dataclasses.field(default_factory=dict)
    host: Any = None


def baseline_method(config: ml_collections.ConfigDict, info: data.DatasetInfo) -> Method:
    """Plain training of ``config.model`` at its full (or width-multiplied) widths."""
    arch = models.arch_from_config(config.model, info.num_classes, info.channels)
    return Method(arch, models.build_model(arch, dtype=config.compute_dtype,
                                           depthwise_impl=config.model.depthwise_impl))


def method_for(config: ml_collections.ConfigDict) -> Method:
    """The Method of ``config.method`` (builds modules, compiles nothing)."""
    info = data.dataset_info(config.dataset.name)
    if config.method == "dcff":
        from dcff_jax import method as dcff_method
        return dcff_method.dcff_method(config, info)
    if config.method == "pssnet":
        from pssnet_jax import method as pssnet_method
        return pssnet_method.pssnet_method(config, info)
    return baseline_method(config, info)


@dataclasses.dataclass
class Run:
    """What a config resolves to before anything is compiled."""

    config: ml_collections.ConfigDict
    input: data.Input
    method: Method
    steps_per_epoch: int
    total_steps: int
    schedule: Callable
    tx: optax.GradientTransformation
    mesh: Any

    @property
    def arch(self) -> dict:
        return self.method.arch

    @property
    def model(self):
        return self.method.model

    @property
    def total_epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)

    def epoch(self, step: int) -> int:
        return step // self.steps_per_epoch

    def normalize(self, images, dtype):
        return data.normalize(images, self.input.info.mean, self.input.info.std, dtype)

    @functools.cached_property
    def eval_step(self):
        return make_eval_step(self)


def setup(config: ml_collections.ConfigDict) -> Run:
    """Loads the dataset description and builds model and optimizer; raises ValueError with a
    one-line message naming the bad value for anything that cannot run."""
    processes = jax.process_count()
    eval_batch = config.eval_batch_size or config.batch_size
    for key, value in (("batch_size", config.batch_size), ("eval_batch_size", eval_batch)):
        if value % jax.device_count():
            raise ValueError(f"config.{key}={value} is not divisible by the "
                             f"{jax.device_count()} devices; use a multiple of "
                             f"{jax.device_count()}")
    method = method_for(config)
    models.arch_layers(method.arch, data.image_size(config.dataset))  # size errors surface here
    compilation_cache.enable(config.compilation_cache_dir)
    inputs = data.make_input(config.dataset, global_batch=config.batch_size,
                             eval_batch=eval_batch, seed=config.seed,
                             process_index=jax.process_index(), process_count=processes)
    steps_per_epoch = inputs.num_train // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"config.batch_size={config.batch_size} is larger than the "
                         f"{inputs.num_train} training examples of {config.dataset.name!r}")
    total_steps = config.num_train_steps or config.num_epochs * steps_per_epoch
    schedule = optim.learning_rate_schedule(config.optimizer, steps_per_epoch, total_steps)
    return Run(config, inputs, method, steps_per_epoch, total_steps, schedule,
               optim.sgd(config.optimizer, schedule), mesh_lib.data_mesh())


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy with integer labels, in float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def _init_fn(run: Run):
    size, channels = run.input.image_size, run.input.info.channels

    def init(seed):
        init_key, train_key = jax.random.split(jax.random.key(seed))
        variables = run.model.init(init_key, jnp.zeros((1, size, size, channels)),
                                   *run.method.init_inputs, train=False)
        return {"step": jnp.zeros((), jnp.int32), "params": variables["params"],
                "batch_stats": variables.get("batch_stats", {}),
                "opt_state": run.tx.init(variables["params"]),
                "rng": jax.random.key_data(train_key),
                **run.method.extra_state(variables)}

    return init


def init_state(run: Run):
    """A fresh train state, created directly with replicated shardings."""
    replicated = mesh_lib.replicated(run.mesh)
    return jax.jit(_init_fn(run), static_argnums=0, out_shardings=replicated)(run.config.seed)


def initialized_from_export(run: Run, state: dict, directory: str) -> dict:
    """``state`` with the params and BN statistics of an exported model of the same
    architecture (fine-tuning a pruned or pre-trained model); the optimizer starts fresh."""
    from common_jax import export  # export imports this module
    _, variables, meta = export.load_exported(directory)
    if json.dumps(meta["arch"], sort_keys=True) != json.dumps(run.arch, sort_keys=True):
        raise ValueError(f"config.init_from={directory!r}: its architecture differs from the "
                         f"config's model ({meta['arch'].get('family')} vs "
                         f"{run.arch.get('family')}, or other widths)")
    replicated = mesh_lib.replicated(run.mesh)
    loaded = {key: jax.device_put(jax.tree.map(jnp.asarray, variables[key]), replicated)
              for key in ("params", "batch_stats")}
    log.info("initialised params and BN statistics from %s", directory)
    return dict(state, **loaded)


def abstract_state(run: Run):
    """Shapes, dtypes and shardings of the train state, without computing it."""
    replicated = mesh_lib.replicated(run.mesh)
    shapes = jax.eval_shape(_init_fn(run), run.config.seed)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                        shapes)


def make_train_step(run: Run):
    """jit(state, batch) -> (state, metrics); the state argument is donated."""
    dtype = models.DTYPES[run.config.compute_dtype]

    def train_step(state, batch):
        images = run.normalize(batch["image"], dtype)

        def loss_fn(params):
            logits, updates = run.model.apply(run.method.variables(state, params), images,
                                              train=True, mutable=["batch_stats"])
            loss = jnp.mean(cross_entropy(logits, batch["label"]))
            return loss, (logits, updates["batch_stats"])

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"])
        updates, opt_state = run.tx.update(grads, state["opt_state"], state["params"])
        new_state = dict(state, step=state["step"] + 1, batch_stats=batch_stats,
                         opt_state=opt_state,
                         params=optax.apply_updates(state["params"], updates))
        metrics = {"loss": loss,
                   "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
                   "learning_rate": run.schedule(state["step"])}
        return new_state, metrics

    replicated = mesh_lib.replicated(run.mesh)
    return jax.jit(train_step, donate_argnums=0, out_shardings=(replicated, replicated))


def make_eval_step(run: Run):
    """jit(state, batch) -> sums of loss, correct predictions and real examples."""
    dtype = models.DTYPES[run.config.compute_dtype]

    def eval_step(state, batch):
        images = run.normalize(batch["image"], dtype)
        logits = run.model.apply(run.method.variables(state, state["params"]), images,
                                 train=False)
        mask = batch["mask"]
        return {"loss": jnp.sum(cross_entropy(logits, batch["label"]) * mask),
                "correct": jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * mask),
                "count": jnp.sum(mask)}

    return jax.jit(eval_step, out_shardings=mesh_lib.replicated(run.mesh))


def evaluate(run: Run, eval_step, state) -> dict:
    """Loss and accuracy over the whole eval split (sums accumulated in float64 on host)."""
    totals = {"loss": 0.0, "correct": 0.0, "count": 0.0}
    for batch in run.input.eval_batches():
        sums = jax.device_get(eval_step(state, mesh_lib.global_batch(batch, run.mesh)))
        for key in totals:
            totals[key] += float(sums[key])
    count = max(totals["count"], 1.0)
    return {"eval_loss": totals["loss"] / count, "eval_accuracy": totals["correct"] / count}


def model_costs(run: Run) -> dict:
    """Analytic FLOPs/params of the model at the run's input size (integers)."""
    return {**profile.totals(models.arch_layers(run.arch, run.input.image_size)),
            **run.method.extra_costs}


def write_json(path: str, payload: dict) -> None:
    """Writes JSON atomically (temp file + rename), from process 0 only."""
    if jax.process_index() != 0:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    log.info("wrote %s", path)


def _record_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Saves config.json; warns about keys that differ from the one a resumed run used."""
    path = os.path.join(workdir, "config.json")
    current = json.loads(config.to_json())
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        flat_prev, flat_cur = _flatten(previous), _flatten(current)
        changed = sorted(k for k in set(flat_prev) | set(flat_cur)
                         if flat_prev.get(k) != flat_cur.get(k))
        if changed:
            log.warning("config differs from the one this workdir was started with: %s",
                        ", ".join(f"{k}: {flat_prev.get(k)!r} -> {flat_cur.get(k)!r}"
                                  for k in changed))
    write_json(path, current)


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _compile(name: str, jitted, *args):
    """AOT-compiles ``jitted`` for ``args`` and logs the compile time."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    log.info("compiled %s in %.1f s", name, time.perf_counter() - start)
    return compiled


class NonFiniteLoss(ValueError):
    """Training produced NaN or Inf; raised before a checkpoint could store the bad state."""


class _TrainWindow:
    """Per-step metrics since the last log line; flushed to host floats in step order, so a
    run resumed from a checkpoint (which stores the unflushed values) reports the same."""

    def __init__(self, values=(), last=None):
        self.values = list(values)  # [step, loss, accuracy], device scalars or floats
        self.last = last or {}

    def add(self, step: int, metrics: dict) -> None:
        self.values.append((step, metrics["loss"], metrics["accuracy"]))

    def host_values(self) -> list:
        """The values as floats; NonFiniteLoss names the first step whose loss is not finite."""
        values = [[int(s), float(loss), float(acc)]
                  for s, loss, acc in jax.device_get(self.values)]
        for step, loss, _ in values:
            if not math.isfinite(loss):
                raise NonFiniteLoss(f"training loss is {loss} at step {step}; stopping, the "
                                    f"last good checkpoint is kept")
        self.values = values
        return values

    def flush(self) -> dict:
        values = self.host_values()
        if values:
            self.last = {"train_loss": sum(v[1] for v in values) / len(values),
                         "train_accuracy": sum(v[2] for v in values) / len(values)}
        self.values = []
        return self.last


def _host_state(run: Run, step: int, window: _TrainWindow, best: dict) -> dict:
    epoch, index = divmod(step, run.steps_per_epoch)
    return {"step": step, "data_position": {"epoch": epoch, "step_in_epoch": index},
            "train_window": window.host_values(), "last_train": window.last, "best": best,
            "method": run.method.host_state()}


def _digest(payload) -> str:
    """A short hash of JSON-serialisable state: equal on every host when hosts agree."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def run_evaluation(run: Run, state) -> dict:
    """The method's evaluation, or loss/accuracy of the trained model on the eval split."""
    if run.method.evaluate:
        return run.method.evaluate(run, state)
    return evaluate(run, run.eval_step, state)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_after: int | None = None) -> dict:
    """Trains ``config`` in ``workdir`` (resuming if it holds a checkpoint) and returns the
    summary written to ``summary.json``. ``stop_after`` ends this invocation at that global
    step with a checkpoint, without changing the schedule; the same call resumes.

    With ``config.keep_best_checkpoint`` the state of the best eval accuracy so far is also
    kept (``<workdir>/best_checkpoint``), which is how the official DCFF code selects models
    (on the test set); ``summary.json`` then reports ``best_eval_accuracy`` too. The log
    reports when the first step completed and how much was compiled."""
    with compilation_cache.CompileStats() as compiles:
        return _train(config, workdir, stop_after, compiles)


def _train(config, workdir, stop_after, compiles) -> dict:
    run = setup(config)
    os.makedirs(workdir, exist_ok=True)
    _record_config(workdir, config)
    writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
    mngr = checkpoint.manager(workdir, config.keep_checkpoints, config.async_checkpoints)
    best_mngr = (checkpoint.manager(workdir, 1, config.async_checkpoints, name=BEST)
                 if config.keep_best_checkpoint else None)
    start = time.perf_counter()

    window, step, best = _TrainWindow(), 0, {}
    restored = checkpoint.restore_newest_good(mngr, abstract_state(run))
    if restored is not None:
        state, host = restored
        step, best = int(host["step"]), host.get("best", {})
        window = _TrainWindow(host["train_window"], host["last_train"])
        run.method.load_host_state(host.get("method", {}))
        log.info("resumed from checkpoint at step %d (epoch %d)", step, run.epoch(step))
    else:
        state = init_state(run)
        if config.init_from:
            state = initialized_from_export(run, state, config.init_from)
    costs = model_costs(run)
    log.info("%s on %s: %d steps (%d epochs of %d steps), %.2f MFLOPs, %d params, %d devices",
             config.model.name, config.dataset.name, run.total_steps, run.total_epochs,
             run.steps_per_epoch, costs["flops"] / 1e6, costs["params"], jax.device_count())

    end = run.total_steps if stop_after is None else min(stop_after, run.total_steps)
    eval_every = config.eval_every_steps or run.steps_per_epoch
    ckpt_every = config.checkpoint_every_steps or run.steps_per_epoch
    batches = run.input.train_batches(step)
    train_step = run.method.train_step(run) if run.method.train_step else None
    eval_metrics, tic, window_start, resumed_at = {}, time.perf_counter(), step, step
    preemption, preempted = Preemption(), False
    while step < end and not preempted:
        if run.method.before_epoch and (step % run.steps_per_epoch == 0 or step == resumed_at):
            state = run.method.before_epoch(state, run.epoch(step), run.total_epochs)
        batch = mesh_lib.global_batch(next(batches), run.mesh)
        if train_step is None:
            compiled = _compile("train step", make_train_step(run), state, batch)
            train_step = lambda state, batch, step: compiled(state, batch)  # noqa: E731
        state, metrics = train_step(state, batch, step)
        window.add(step + 1, metrics)
        step += 1
        if step == resumed_at + 1:  # throughput is measured from here on, without compiles
            jax.block_until_ready(metrics)
            log.info("first step done %.1f s after start; %s", time.perf_counter() - start,
                     compiles.line())
            tic, window_start = time.perf_counter(), step
        if step % config.log_every_steps == 0 or step == run.total_steps:
            lr = float(metrics["learning_rate"])
            last = window.flush()
            rate = (step - window_start) * config.batch_size / (time.perf_counter() - tic)
            log.info("step %d/%d | epoch %d | loss %.4f | acc %.4f | lr %.5f | %.0f img/s",
                     step, run.total_steps, run.epoch(step - 1), last["train_loss"],
                     last["train_accuracy"], lr, rate)
            writer.write(step, {**last, "learning_rate": lr, "images_per_s": rate})
            tic, window_start = time.perf_counter(), step
        if step % eval_every == 0 or step == run.total_steps:
            eval_metrics = run_evaluation(run, state)
            log.info("eval at step %d | loss %.4f | accuracy %.4f", step,
                     eval_metrics["eval_loss"], eval_metrics["eval_accuracy"])
            writer.write(step, eval_metrics)
            if best_mngr and eval_metrics["eval_accuracy"] > best.get("eval_accuracy", -1.0):
                best = {"eval_accuracy": eval_metrics["eval_accuracy"], "step": step}
                if step not in best_mngr.all_steps():  # else saved before a crash: identical
                    checkpoint.save(best_mngr, step, state, _host_state(run, step, window, best))
                    # Two managers finalising at once collide in orbax's multi-host barriers.
                    best_mngr.wait_until_finished()
            tic, window_start = time.perf_counter(), step
        preempted = preemption.requested(step)
        if step % ckpt_every == 0 or step == end or preempted:
            host = _host_state(run, step, window, best)
            checkpoint.save(mngr, step, state, host)
            log.info("checkpoint at step %d (method host state %s)", step,
                     _digest(host["method"]))
    preemption.close()
    for manager in (mngr, best_mngr):
        if manager:
            manager.wait_until_finished()
            manager.close()
    writer.close()
    log.info("compilation: %s", compiles.line())
    if step < run.total_steps:
        log.info("stopped at step %d of %d%s; run the same command again to continue", step,
                 run.total_steps, " (preempted)" if preempted else "")
        return {"step": step, "finished": False, "preempted": preempted}
    if not eval_metrics:  # resumed at the very end: evaluate the final state again
        eval_metrics = run_evaluation(run, state)
    summary = {"step": step, **window.last, **eval_metrics, **costs, "mode": "train",
               "model": config.model.name, "dataset": config.dataset.name}
    if run.method.finalize:
        summary.update(run.method.finalize(run, state, workdir))
    summary.update(wall_time_s=time.perf_counter() - start, xla_compiles=compiles.compiled,
                   compile_time_s=compiles.seconds)
    if best:
        summary.update(best_eval_accuracy=best["eval_accuracy"], best_step=best["step"])
    write_json(os.path.join(workdir, "summary.json"), summary)
    return summary


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Evaluates the newest checkpoint of ``workdir`` and writes ``summary.json``."""
    run = setup(config)
    state, host = restore_latest(run, workdir)
    run.method.load_host_state(host.get("method", {}))
    metrics = run_evaluation(run, state)
    log.info("eval of step %d | loss %.4f | accuracy %.4f", host["step"], metrics["eval_loss"],
             metrics["eval_accuracy"])
    summary = {"step": int(host["step"]), **host.get("last_train", {}), **metrics,
               **model_costs(run), "mode": "eval", "model": config.model.name,
               "dataset": config.dataset.name}
    if run.method.finalize:
        summary.update(run.method.finalize(run, state, workdir))
    write_json(os.path.join(workdir, "summary.json"), summary)
    return summary


def restore_latest(run: Run, workdir: str, source: str = "final"):
    """(state, host) of the newest checkpoint, or of the best-eval one for ``source='best'``;
    ValueError if the workdir has none."""
    name = BEST if source == "best" else checkpoint.CHECKPOINTS
    if not os.path.isdir(checkpoint.checkpoint_dir(workdir, name)):
        raise ValueError(f"--workdir={workdir!r} holds no {name}/; "
                         + ("train with --config.keep_best_checkpoint=True first"
                            if source == "best" else "train first"))
    mngr = checkpoint.manager(workdir, read_only=True, name=name)
    restored = checkpoint.restore_newest_good(mngr, abstract_state(run), quarantine=False)
    mngr.close()
    if restored is None:
        raise ValueError(f"--workdir={workdir!r} holds no complete checkpoint in {name}/; "
                         f"train first")
    return restored
