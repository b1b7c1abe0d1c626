"""PSS-Net plugged into the shared training loop (../shared/papers/pssnet.md §5-9).

Per step, on the host: draw a target T uniformly from the targets the map reaches; with
probability p_e = p_start (p_end / p_start)^(e/E), or while pool[T] holds fewer than
``pool_size`` entries, draw a fresh subnet for T from the FLOPs-conditioned sampler, else draw
from pool[T] with softmax(score / t_e); then run the jitted step (max net + that subnet + the
min net) and put the subnet's score into pool[T].

Deviation (documented, on by default): the host does not wait for a step's score before
dispatching the next step, so the score of step t enters its pool after step t + 1 has been
sampled and dispatched. ``sync_pools=True`` gives the official order (score in the pool before
the next draw); the two give identical pools whenever the same target is not drawn in two
consecutive steps. Sampling uses one seeded generator that every host shares, and scores are
means over the global batch, so all hosts keep identical pools.

At the end, every pool's top ``topk`` subnets by score are BN-recalibrated and evaluated on a
held-out slice of the training split (``selection='holdout'``; 'rank1' keeps the top subnet
without evaluation, 'official' evaluates on the test split as the official code does), the
best is kept, and its test accuracy is reported in ``subnets.json`` with a FLOPs-accuracy plot.
"""

from __future__ import annotations

import logging
import os

import jax
import ml_collections
import numpy as np

from common_jax import data, export as export_lib, mesh as mesh_lib, models
from common_jax.train import Method, NonFiniteLoss, Run, write_json
from pssnet_jax import report, sampler, space as space_lib, supernet, switch
from pssnet_jax.evaluation import SubnetEvaluator
from pssnet_jax.pools import Pools, exp_schedule
from pssnet_jax.space import Subnet
from pssnet_jax.step import StepFunctions

log = logging.getLogger("common_jax")
SELECTIONS = ("holdout", "rank1", "official")
STEP_MODES = ("split", "single")


def pssnet_section(resolutions=(128, 224, 8), targets=(70.0, 300.0, 10.0)):
    """``config.pssnet``: the structure space, the targets and the pool/sampling rules."""
    return ml_collections.ConfigDict({
        "resolutions": tuple(resolutions),  # (lowest, highest, step); highest = crop size
        "mult_range": (0.75, 1.0),
        "targets": tuple(targets),  # (start, stop, step) in MFLOPs; pools strictly inside
        "map_samples": 100_000,
        "map_tilt": 0,  # extra map samples with multipliers biased towards 1 (sampler.py)
        "pool_size": 50,
        "ema": 0.9,
        "p_range": (1.0, 0.01),  # structure-space sampling probability, epoch 0 -> E
        "t_range": (1.0, 0.01),  # pool softmax temperature, epoch 0 -> E
        "sync_pools": False,
        "step_mode": "split",
        "bn_group_size": 0,  # ghost-BN group; 0 = statistics over the whole global batch
        "recal_batches": 9,
        "topk": 5,
        "selection": "holdout"})


def export_section(flops: float = 0.0):
    """``config.export``: the FLOPs budget (MFLOPs) of ``--mode=export``; 0 = the max net."""
    return ml_collections.ConfigDict({"flops": flops})


def make_space(config, info: data.DatasetInfo) -> space_lib.Space:
    cfg = config.pssnet
    return space_lib.make_space(
        config.model.name, num_classes=info.num_classes, in_channels=info.channels,
        resolutions=space_lib.resolution_range(*cfg.resolutions),
        small_input=config.model.small_input, width_mult=config.model.width_mult,
        mult_low=cfg.mult_range[0], mult_high=cfg.mult_range[1])


def validate(config) -> None:
    """One-line ValueErrors for a bad ``config.pssnet`` (before anything is compiled)."""
    if "pssnet" not in config:
        raise ValueError("config.method='pssnet' needs a config.pssnet section (see "
                         "configs/pssnet/*.py)")
    cfg = config.pssnet
    for key, names in (("resolutions", "(lowest, highest, step)"), ("targets",
                       "(start, stop, step) in MFLOPs"), ("mult_range", "(low, high)"),
                       ("p_range", "(start, end)"), ("t_range", "(start, end)")):
        if len(cfg[key]) != len(names.split(",")):
            raise ValueError(f"config.pssnet.{key}={tuple(cfg[key])}: expected {names}")
    if config.model.name not in space_lib.MODELS:
        raise ValueError(f"config.model.name={config.model.name!r}: PSS-Net supernets are "
                         f"{list(space_lib.MODELS)}")
    lo, hi, step = cfg.resolutions
    space_lib.resolution_range(lo, hi, step)
    size = data.image_size(config.dataset)
    if hi != size:
        raise ValueError(f"config.pssnet.resolutions={tuple(cfg.resolutions)}: the highest "
                         f"resolution must equal the crop size {size} (config.dataset.image_size)")
    if not 0 < cfg.mult_range[0] <= cfg.mult_range[1] <= 1:
        raise ValueError(f"config.pssnet.mult_range={tuple(cfg.mult_range)}: need 0 < low <= "
                         f"high <= 1")
    start, stop, tstep = cfg.targets
    if not 0 <= start < stop or tstep <= 0:
        raise ValueError(f"config.pssnet.targets={tuple(cfg.targets)}: need 0 <= start < stop "
                         f"and step > 0 (MFLOPs)")
    space = make_space(config, data.dataset_info(config.dataset.name))
    low, high = (report.costs(space, s)["flops"] / 1e6
                 for s in (space.min_subnet(), space.max_subnet()))
    grid = np.arange(start + tstep, stop - tstep / 2, tstep)
    if not np.any((grid >= low - tstep / 2) & (grid < high + tstep / 2)):
        raise ValueError(f"config.pssnet.targets={tuple(cfg.targets)}: no target on this grid "
                         f"lies within the structure space's {low:.2f}..{high:.2f} MFLOPs")
    for key, allowed in (("selection", SELECTIONS), ("step_mode", STEP_MODES)):
        if cfg[key] not in allowed:
            raise ValueError(f"config.pssnet.{key}={cfg[key]!r}: expected one of "
                             f"{list(allowed)}")
    if cfg.selection == "holdout" and not config.dataset.holdout_examples:
        raise ValueError("config.pssnet.selection='holdout' needs config.dataset."
                         "holdout_examples > 0 (or selection 'rank1' / 'official')")
    for key in ("pool_size", "topk", "recal_batches", "map_samples"):
        if cfg[key] < 1:
            raise ValueError(f"config.pssnet.{key}={cfg[key]!r} must be at least 1")
    if not 0 <= cfg.ema < 1:
        raise ValueError(f"config.pssnet.ema={cfg.ema!r} must be in [0, 1)")
    if cfg.bn_group_size and config.batch_size % cfg.bn_group_size:
        raise ValueError(f"config.pssnet.bn_group_size={cfg.bn_group_size} must divide "
                         f"config.batch_size={config.batch_size}")
    if config.export.flops < 0:
        raise ValueError(f"config.export.flops={config.export.flops!r} must be >= 0 (MFLOPs)")


class PSSNet:
    """Host-side PSS-Net state (map, pools, sampler generator) and the Method hooks."""

    def __init__(self, config, info: data.DatasetInfo):
        self.config, self.cfg, self.info = config, config.pssnet, info
        self.space = make_space(config, info)
        self.model = supernet.build_supernet(
            self.space.full_arch, models.DTYPES[config.compute_dtype],
            config.model.depthwise_impl, self.cfg.bn_group_size)
        self.max_subnet, self.min_subnet = self.space.max_subnet(), self.space.min_subnet()
        self.fmap = None
        self.pools = None
        self.rng = np.random.default_rng([config.seed, 0x9551])
        self.pending = None  # (target, subnet, step, device metrics) not yet in its pool
        self.fns = self.evaluator = self.mesh = None  # set by _functions(run)

    # -- set-up ------------------------------------------------------------------------------
    def subnet_flops(self, subnet: Subnet) -> int:
        return report.costs(self.space, subnet)["flops"]

    def _sampling(self):
        """Builds the map and empty pools on first use (profile and dry runs never do)."""
        if self.fmap is None:
            start, stop, step = self.cfg.targets
            self.fmap = sampler.build_map(self.space, start, stop, step, self.cfg.map_samples,
                                          self.config.seed, self.cfg.map_tilt)
            if not self.fmap.targets:
                raise ValueError(f"config.pssnet.targets={tuple(self.cfg.targets)}: no subnet "
                                 f"of the structure space falls strictly inside this range")
            if self.pools is None:
                self.pools = Pools(self.fmap.targets, self.cfg.pool_size, self.cfg.ema)
        return self.fmap

    def _functions(self, run: Run):
        if self.fns is None:
            self.fns = StepFunctions(self.model, run.tx, run.schedule, self.info,
                                     models.DTYPES[self.config.compute_dtype],
                                     self.space.resolutions[-1])
            self.evaluator = SubnetEvaluator(self.fns, run.mesh, self.cfg.recal_batches,
                                             run.input.train_batches)
            self.mesh = run.mesh
        return self.fns

    def widths(self, subnet: Subnet):
        arrays = supernet.widths_of(self.space.arch(subnet))
        return jax.device_put(arrays, mesh_lib.replicated(self.mesh))

    # -- training ----------------------------------------------------------------------------
    def train_step(self, run: Run):
        fns = self._functions(run)
        fmap = self._sampling()
        max_widths = self.widths(self.max_subnet)
        low = (self.widths(self.min_subnet), self.min_subnet.resolution)

        def step_fn(state, batch, step):
            epoch, epochs = run.epoch(step), run.total_epochs
            p = exp_schedule(*self.cfg.p_range, epoch, epochs)
            temperature = exp_schedule(*self.cfg.t_range, epoch, epochs)
            target = fmap.targets[self.rng.integers(len(fmap.targets))]
            explore = self.rng.random() < p or self.pools.size(target) < self.cfg.pool_size
            subnet = (sampler.sample(self.space, fmap, target, self.rng) if explore
                      else self.pools.sample(target, temperature, self.rng))
            mid = (self.widths(subnet), subnet.resolution)
            state, metrics = fns.step(state, batch, max_widths, mid, low, self.cfg.step_mode)
            self.flush()  # the previous step's score, now that this step is dispatched
            self.pending = (target, subnet, step + 1,
                            {k: metrics[k] for k in ("score", "loss", "kl_mid", "kl_min")})
            if self.cfg.sync_pools:
                self.flush()
            return state, metrics

        return step_fn

    def flush(self) -> None:
        """Puts the pending score into its pool (waits for that step's result)."""
        if self.pending is not None:
            target, subnet, _, _ = self.pending
            self.pools.update(target, subnet, self._checked_score())
            self.pending = None

    def _checked_score(self) -> float:
        """The pending step's score; NonFiniteLoss naming the step and subnets if any of its
        losses is NaN or Inf."""
        target, subnet, step, metrics = self.pending
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        bad = {k: v for k, v in values.items() if not np.isfinite(v)}
        if bad:
            raise NonFiniteLoss(
                f"non-finite {bad} at step {step}: middle subnet {subnet.resolution} px, "
                f"channels {list(subnet.channels)} (target {target:g} MFLOPs), min net "
                f"{self.min_subnet.resolution} px; stopping, the last good checkpoint is kept")
        return values["score"]

    def host_state(self) -> dict:
        pending = None
        if self.pending is not None:
            target, subnet, step, _ = self.pending
            pending = {"target": float(target), **subnet.to_json(), "step": step,
                       "score": self._checked_score()}
        return {"pools": self.pools.to_json() if self.pools else None,
                "rng": self.rng.bit_generator.state, "pending": pending}

    def load_host_state(self, host: dict) -> None:
        if not host:
            return
        if host.get("pools"):
            self.pools = Pools.from_json(host["pools"])
        self.rng.bit_generator.state = host["rng"]
        pending = host.get("pending")
        self.pending = pending and (pending["target"], Subnet.from_json(pending),
                                    pending["step"], {"score": pending["score"]})

    # -- evaluation, selection, export -------------------------------------------------------
    def subnet_stats(self, run: Run, state, subnet: Subnet):
        self._functions(run)
        return self.evaluator.recalibrate(state["params"], state["batch_stats"],
                                          self.widths(subnet), subnet.resolution)

    def evaluate_subnet(self, run: Run, state, subnet: Subnet, stats, split: str) -> dict:
        batches = run.input.holdout_batches() if split == "holdout" else run.input.eval_batches()
        return self.evaluator.evaluate(state["params"], stats, self.widths(subnet),
                                       subnet.resolution, batches)

    def evaluate(self, run: Run, state) -> dict:
        """The max net, after BN recalibration, on the eval split."""
        stats = self.subnet_stats(run, state, self.max_subnet)
        result = self.evaluate_subnet(run, state, self.max_subnet, stats, "eval")
        return {"eval_loss": result["loss"], "eval_accuracy": result["accuracy"]}

    def finalize(self, run: Run, state, workdir: str) -> dict:
        """Selects the kept subnet of every pool; writes subnets.json and the plot."""
        self._sampling()
        self.flush()
        selection = self.cfg.selection
        split = {"holdout": "holdout", "official": "eval"}.get(selection)

        def judged(subnet):
            """(BN statistics, accuracy on the selection data or None for 'rank1')."""
            stats = self.subnet_stats(run, state, subnet)
            accuracy = split and self.evaluate_subnet(run, state, subnet, stats, split)[
                "accuracy"]
            return stats, accuracy

        kept = []
        for target in self.fmap.targets:
            best = None
            for rank, (subnet, score) in enumerate(
                    self.pools.ranked(target)[:self.cfg.topk if split else 1], 1):
                stats, accuracy = judged(subnet)
                if best is None or (accuracy is not None and accuracy > best[3]):
                    best = (subnet, score, rank, accuracy, stats)
            if best is None:
                continue
            subnet, score, rank, accuracy, stats = best
            test = self.evaluate_subnet(run, state, subnet, stats, "eval")
            kept.append(report.entry(self.space, subnet, target=target, score=score, rank=rank,
                                     selection_accuracy=accuracy, test=test))
            log.info("target %g MFLOPs: kept %s at %d px (%.2f MFLOPs, rank %d), test accuracy "
                     "%.4f", target, subnet.channels, subnet.resolution,
                     kept[-1]["flops"] / 1e6, rank, test["accuracy"])
        ends = {}
        for name, subnet in (("max", self.max_subnet), ("min", self.min_subnet)):
            stats, accuracy = judged(subnet)
            test = self.evaluate_subnet(run, state, subnet, stats, "eval")
            ends[name] = report.entry(self.space, subnet, target=name, test=test,
                                      selection_accuracy=accuracy)
        document = report.document(self.config, self.space, kept, ends)
        write_json(os.path.join(workdir, switch.SUBNETS_FILE), document)
        if jax.process_index() == 0:
            report.plot(document, os.path.join(workdir, report.PLOT_FILE))
        return {"min_flops": ends["min"]["flops"],
                "min_eval_accuracy": ends["min"]["test_accuracy"], "num_kept_subnets": len(kept)}

    def export(self, run: Run, state, workdir: str, directory: str) -> str:
        """Exports the best kept subnet under ``config.export.flops`` as a plain model."""
        document = switch.load_subnets(workdir)
        budget = self.config.export.flops or document["max"]["flops"] / 1e6
        entry = switch.best_for_budget(document, budget)
        subnet = Subnet.from_json(entry)
        self.space.check(subnet)
        arch = self.space.arch(subnet)
        stats = self.subnet_stats(run, state, subnet)
        variables = supernet.slice_variables(
            {"params": state["params"], "batch_stats": jax.device_get(stats)}, arch)
        log.info("exporting %s (%.2f MFLOPs) for a budget of %.2f MFLOPs", subnet.channels,
                 entry["flops"] / 1e6, budget)
        return export_lib.export_model(
            directory, arch, variables, image_size=subnet.resolution, info=self.info,
            extra={"input_size": self.space.resolutions[-1], "subnet": subnet.to_json(),
                   "flops": entry["flops"], "params": entry["params"],
                   "target": entry["target"]})


def pssnet_method(config, info: data.DatasetInfo) -> Method:
    pss = PSSNet(config, info)
    max_widths = supernet.widths_of(pss.space.full_arch)
    return Method(pss.space.full_arch, pss.model,
                  init_inputs=(max_widths, pss.space.resolutions[-1]),
                  train_step=pss.train_step, evaluate=pss.evaluate, host_state=pss.host_state,
                  load_host_state=pss.load_host_state, finalize=pss.finalize, export=pss.export,
                  extra_costs={"min_flops": pss.subnet_flops(pss.min_subnet)})
