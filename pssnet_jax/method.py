"""PSS-Net plugged into the shared training loop (../shared/papers/pssnet.md §5-9).

Per step, on the host: draw a constraint (FLOPs, predicted latency; pssnet_jax/constraints.py)
with probability proportional to its number of pools, then a target T of it uniformly from
the targets its map reaches; with
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
from pssnet_jax import constraints as constraints_lib, latency, report, sampler
from pssnet_jax import space as space_lib, supernet, switch
from pssnet_jax.evaluation import SubnetEvaluator
from pssnet_jax.pools import Pools, exp_schedule
from pssnet_jax.space import Subnet
from pssnet_jax.step import StepFunctions

log = logging.getLogger("common_jax")
SELECTIONS = ("holdout", "rank1", "official")
SAMPLINGS = ("prioritized", "uniform")
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
        "constraints": ("flops",),  # pool keys: 'flops', 'latency' or both (the -M variant)
        "sampling": "prioritized",  # or 'uniform': the US-Net sandwich control (see draw)
        "bn_group_size": 0,  # ghost-BN group; 0 = statistics over the whole global batch
        "recal_batches": 9,
        "topk": 5,
        "selection": "holdout"})


def export_section(flops: float = 0.0, latency_ms: float = 0.0):
    """``config.export``: the budget of ``--mode=export``, FLOPs (MFLOPs) or predicted latency
    (ms, needs ``latency.table``); both 0 = the max net."""
    return ml_collections.ConfigDict({"flops": flops, "latency_ms": latency_ms})


def latency_section(table: str = "", targets=(0.0, 0.0, 0.0)):
    """``config.latency``: the latency table (``--mode=latency_table`` builds it) and the
    latency pools' targets (start, stop, step) in ms; zeros place ``num_pools`` targets
    between the min and max net's predicted latency (pssnet_jax/constraints.py)."""
    return ml_collections.ConfigDict({
        "table": table, "targets": tuple(targets), "num_pools": 8,
        "batch_size": 1, "repeats": 30, "max_units": 3000, "calibration_subnets": 10})


def make_space(config, info: data.DatasetInfo) -> space_lib.Space:
    cfg = config.pssnet
    return space_lib.make_space(
        config.model.name, num_classes=info.num_classes, in_channels=info.channels,
        resolutions=space_lib.resolution_range(*cfg.resolutions),
        small_input=config.model.small_input, width_mult=config.model.width_mult,
        mult_low=cfg.mult_range[0], mult_high=cfg.mult_range[1])


def validate(config, need_latency_table: bool = True) -> None:
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
    space = make_space(config, data.dataset_info(config.dataset.name))
    names = tuple(cfg.constraints)
    if not names or len(set(names)) != len(names) or not set(names) <= set(
            constraints_lib.CONSTRAINTS):
        raise ValueError(f"config.pssnet.constraints={names}: expected one or more distinct of "
                         f"{list(constraints_lib.CONSTRAINTS)}")
    if "flops" in names:
        _check_targets("config.pssnet.targets", cfg.targets, "MFLOPs",
                       [report.costs(space, s)["flops"] / 1e6
                        for s in (space.min_subnet(), space.max_subnet())])
    for key, allowed in (("selection", SELECTIONS), ("step_mode", STEP_MODES),
                         ("sampling", SAMPLINGS)):
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
    if config.export.flops < 0 or config.export.latency_ms < 0:
        raise ValueError(f"config.export.flops={config.export.flops!r} and latency_ms="
                         f"{config.export.latency_ms!r} must be >= 0")
    if config.export.flops and config.export.latency_ms:
        raise ValueError("config.export: give flops or latency_ms, not both")
    _validate_latency(config, space, need_latency_table)


def _check_targets(name: str, targets, unit: str, span: list) -> None:
    """ValueError unless (start, stop, step) is a grid with a target within ``span``."""
    start, stop, step = targets
    if not 0 <= start < stop or step <= 0:
        raise ValueError(f"{name}={tuple(targets)}: need 0 <= start < stop and step > 0 "
                         f"({unit})")
    low, high = span
    grid = np.arange(start + step, stop - step / 2, step)
    if not np.any((grid >= low - step / 2) & (grid < high + step / 2)):
        digits = 2 if unit == "MFLOPs" else 3
        raise ValueError(f"{name}={tuple(targets)}: no target on this grid lies within the "
                         f"structure space's {low:.{digits}f}..{high:.{digits}f} {unit}")


def _validate_latency(config, space, need_table: bool) -> None:
    """The latency table exists and fits the supernet wherever the config needs it."""
    needs = "latency" in config.pssnet.constraints or config.export.latency_ms > 0
    if "latency" not in config:
        if needs:
            raise ValueError("latency pools or export.latency_ms need a config.latency section "
                             "(pssnet_jax.method.latency_section)")
        return
    lat = config.latency
    if len(lat.targets) != 3:
        raise ValueError(f"config.latency.targets={tuple(lat.targets)}: expected (start, stop, "
                         f"step) in ms, or zeros for automatic targets")
    for key in ("num_pools", "batch_size", "repeats"):
        if lat[key] < 1:
            raise ValueError(f"config.latency.{key}={lat[key]!r} must be at least 1")
    if needs and need_table and not lat.table:
        raise ValueError("latency pools or export.latency_ms need config.latency.table (build "
                         "one with --mode=latency_table)")
    if needs and need_table:
        table = latency.load_table(lat.table)
        latency.check_table_matches(table, space, lat.table)
        if any(lat.targets) and "latency" in config.pssnet.constraints:
            _check_targets("config.latency.targets", lat.targets, "ms", [
                latency.predict_subnet_ms(table, space, s)
                for s in (space.min_subnet(), space.max_subnet())])


class PSSNet:
    """Host-side PSS-Net state (maps, pools, sampler generator) and the Method hooks."""

    def __init__(self, config, info: data.DatasetInfo):
        self.config, self.cfg, self.info = config, config.pssnet, info
        self.space = make_space(config, info)
        self.model = supernet.build_supernet(
            self.space.full_arch, models.DTYPES[config.compute_dtype],
            config.model.depthwise_impl, self.cfg.bn_group_size)
        self.max_subnet, self.min_subnet = self.space.max_subnet(), self.space.min_subnet()
        self.constraints = self.maps = None  # built by sampling_maps() on first use
        self.pools = None  # constraint name -> Pools
        self.rng = np.random.default_rng([config.seed, 0x9551])
        self.pending = None  # (constraint, target, subnet, step, metrics) not yet in a pool
        self.fns = self.evaluator = self.mesh = None  # set by _functions(run)
        self._latency_table = False  # not read yet; None when no table is configured

    # -- set-up ------------------------------------------------------------------------------
    def subnet_flops(self, subnet: Subnet) -> int:
        return report.costs(self.space, subnet)["flops"]

    def latency_table(self) -> dict | None:
        """The configured latency table, read once (None without one)."""
        if self._latency_table is False:
            self._latency_table = constraints_lib.latency_table_of(self.config, self.space)
        return self._latency_table

    def sampling_maps(self) -> dict:
        """Builds the constraints, their maps and empty pools on first use (profile and dry
        runs never do); returns {constraint name: map}."""
        if self.maps is None:
            self.constraints = constraints_lib.make_constraints(
                self.config, self.space, self.latency_table())
            maps = {}
            for constraint in self.constraints:
                start, stop, step = constraint.targets
                fmap = sampler.build_map(self.space, start, stop, step, self.cfg.map_samples,
                                         self.config.seed, self.cfg.map_tilt,
                                         constraint.values)
                if not fmap.targets:
                    key = "pssnet.targets" if constraint.name == "flops" else "latency.targets"
                    raise ValueError(f"config.{key}={tuple(constraint.targets)}: no subnet of "
                                     f"the structure space falls strictly inside this range")
                maps[constraint.name] = fmap
            self.maps = maps
            if self.pools is None:
                self.pools = {name: Pools(fmap.targets, self.cfg.pool_size, self.cfg.ema)
                              for name, fmap in maps.items()}
        return self.maps

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
    def draw(self, epoch: int, epochs: int) -> tuple[str, float | None, Subnet]:
        """(constraint, target, middle subnet) of one step (§7 steps 2-3): the constraint with
        probability proportional to its number of pools, a target of it uniformly, then a
        fresh subnet for the target (probability p_e, or while its pool is not full) or one
        from its pool with softmax(score / t_e). ``sampling='uniform'`` (the control without
        prioritized sampling) draws the subnet uniformly from the structure space instead;
        its score still enters the pool of its target (None outside every target), so the
        final selection works the same way."""
        maps = self.sampling_maps()
        names = list(maps)
        name = names[constraints_lib.choose([len(maps[n].targets) for n in names], self.rng)]
        fmap, pools = maps[name], self.pools[name]
        if self.cfg.sampling == "uniform":
            subnet = self.space.subnet(*self.space.random(self.rng))
            constraint = next(c for c in self.constraints if c.name == name)
            target = float(sampler.target_of(constraint.of_subnet(subnet), fmap.start,
                                             fmap.step))
            return name, (target if target in fmap.targets else None), subnet
        p = exp_schedule(*self.cfg.p_range, epoch, epochs)
        temperature = exp_schedule(*self.cfg.t_range, epoch, epochs)
        target = fmap.targets[self.rng.integers(len(fmap.targets))]
        explore = self.rng.random() < p or pools.size(target) < self.cfg.pool_size
        subnet = (sampler.sample(self.space, fmap, target, self.rng) if explore
                  else pools.sample(target, temperature, self.rng))
        return name, target, subnet

    def train_step(self, run: Run):
        fns = self._functions(run)
        self.sampling_maps()
        max_widths = self.widths(self.max_subnet)
        low = (self.widths(self.min_subnet), self.min_subnet.resolution)

        def step_fn(state, batch, step):
            name, target, subnet = self.draw(run.epoch(step), run.total_epochs)
            mid = (self.widths(subnet), subnet.resolution)
            state, metrics = fns.step(state, batch, max_widths, mid, low, self.cfg.step_mode)
            self.flush()  # the previous step's score, now that this step is dispatched
            self.pending = (name, target, subnet, step + 1,
                            {k: metrics[k] for k in ("score", "loss", "kl_mid", "kl_min")})
            if self.cfg.sync_pools:
                self.flush()
            return state, metrics

        return step_fn

    def flush(self) -> None:
        """Puts the pending score into its pool (waits for that step's result)."""
        if self.pending is not None:
            name, target, subnet, _, _ = self.pending
            score = self._checked_score()
            if target is not None:
                self.pools[name].update(target, subnet, score)
            self.pending = None

    def _checked_score(self) -> float:
        """The pending step's score; NonFiniteLoss naming the step and subnets if any of its
        losses is NaN or Inf."""
        name, target, subnet, step, metrics = self.pending
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        bad = {k: v for k, v in values.items() if not np.isfinite(v)}
        if bad:
            raise NonFiniteLoss(
                f"non-finite {bad} at step {step}: middle subnet {subnet.resolution} px, "
                f"channels {list(subnet.channels)} (target "
                f"{'none' if target is None else format(target, 'g')} "
                f"{constraints_lib.UNITS[name]}), min net {self.min_subnet.resolution} px; "
                f"stopping, the last good checkpoint is kept")
        return values["score"]

    def host_state(self) -> dict:
        pending = None
        if self.pending is not None:
            name, target, subnet, step, _ = self.pending
            pending = {"constraint": name, "target": target, **subnet.to_json(),
                       "step": step, "score": self._checked_score()}
        return {"pools": {name: pools.to_json() for name, pools in self.pools.items()}
                if self.pools else None,
                "rng": self.rng.bit_generator.state, "pending": pending}

    def load_host_state(self, host: dict) -> None:
        if not host:
            return
        pools = host.get("pools")
        if pools and "capacity" in pools:  # written before pools were kept per constraint
            pools = {"flops": pools}
        if pools:
            self.pools = {name: Pools.from_json(value) for name, value in pools.items()}
        self.rng.bit_generator.state = host["rng"]
        pending = host.get("pending")
        self.pending = pending and (pending.get("constraint", "flops"), pending["target"],
                                    Subnet.from_json(pending), pending["step"],
                                    {"score": pending["score"]})

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
        """Selects the kept subnet of every pool; writes subnets.json and the plot(s)."""
        maps = self.sampling_maps()
        self.flush()
        selection = self.cfg.selection
        split = {"holdout": "holdout", "official": "eval"}.get(selection)
        table = self.latency_table()

        def judged(subnet):
            """(BN statistics, accuracy on the selection data or None for 'rank1')."""
            stats = self.subnet_stats(run, state, subnet)
            accuracy = split and self.evaluate_subnet(run, state, subnet, stats, split)[
                "accuracy"]
            return stats, accuracy

        def entry(subnet, **kwargs):
            latency_ms = table and latency.predict_subnet_ms(table, self.space, subnet)
            return report.entry(self.space, subnet, latency_ms=latency_ms, **kwargs)

        kept = []
        for constraint in self.constraints:
            for target in maps[constraint.name].targets:
                best = None
                for rank, (subnet, score) in enumerate(self.pools[constraint.name].ranked(
                        target)[:self.cfg.topk if split else 1], 1):
                    stats, accuracy = judged(subnet)
                    if best is None or (accuracy is not None and accuracy > best[3]):
                        best = (subnet, score, rank, accuracy, stats)
                if best is None:
                    continue
                subnet, score, rank, accuracy, stats = best
                test = self.evaluate_subnet(run, state, subnet, stats, "eval")
                kept.append(entry(subnet, target=target, constraint=constraint.name,
                                  score=score, rank=rank, selection_accuracy=accuracy,
                                  test=test))
                log.info("%s target %g %s: kept %s at %d px (%.2f MFLOPs, rank %d), test "
                         "accuracy %.4f", constraint.name, target, constraint.unit,
                         subnet.channels, subnet.resolution, kept[-1]["flops"] / 1e6, rank,
                         test["accuracy"])
        ends = {}
        for name, subnet in (("max", self.max_subnet), ("min", self.min_subnet)):
            stats, accuracy = judged(subnet)
            test = self.evaluate_subnet(run, state, subnet, stats, "eval")
            ends[name] = entry(subnet, target=name, test=test, selection_accuracy=accuracy)
        document = report.document(self.config, self.space, kept, ends, self.constraints)
        write_json(os.path.join(workdir, switch.SUBNETS_FILE), document)
        if jax.process_index() == 0:
            report.plot(document, os.path.join(workdir, report.PLOT_FILE))
            if table:
                report.plot(document, os.path.join(workdir, report.LATENCY_PLOT_FILE),
                            metric="latency")
        return {"min_flops": ends["min"]["flops"],
                "min_eval_accuracy": ends["min"]["test_accuracy"], "num_kept_subnets": len(kept)}

    def export(self, run: Run, state, workdir: str, directory: str) -> str:
        """Exports the best kept subnet under ``config.export.flops`` (MFLOPs) or
        ``config.export.latency_ms`` (predicted ms) as a plain model."""
        document = switch.load_subnets(workdir)
        if self.config.export.latency_ms:
            budget, metric = self.config.export.latency_ms, "latency"
        else:
            budget, metric = self.config.export.flops or document["max"]["flops"] / 1e6, "flops"
        entry = switch.best_for_budget(document, budget, metric)
        subnet = Subnet.from_json(entry)
        self.space.check(subnet)
        arch = self.space.arch(subnet)
        stats = self.subnet_stats(run, state, subnet)
        variables = supernet.slice_variables(
            {"params": state["params"], "batch_stats": jax.device_get(stats)}, arch)
        log.info("exporting %s (%.2f MFLOPs) for a budget of %g %s", subnet.channels,
                 entry["flops"] / 1e6, budget, constraints_lib.UNITS[metric])
        return export_lib.export_model(
            directory, arch, variables, image_size=subnet.resolution, info=self.info,
            extra={"input_size": self.space.resolutions[-1], "subnet": subnet.to_json(),
                   "flops": entry["flops"], "params": entry["params"],
                   "latency_ms": entry.get("latency_ms"), "target": entry["target"],
                   "constraint": entry.get("constraint")})


def pssnet_method(config, info: data.DatasetInfo) -> Method:
    pss = PSSNet(config, info)
    max_widths = supernet.widths_of(pss.space.full_arch)
    return Method(pss.space.full_arch, pss.model,
                  init_inputs=(max_widths, pss.space.resolutions[-1]),
                  train_step=pss.train_step, evaluate=pss.evaluate, host_state=pss.host_state,
                  load_host_state=pss.load_host_state, finalize=pss.finalize, export=pss.export,
                  extra_costs={"min_flops": pss.subnet_flops(pss.min_subnet)}, host=pss)
