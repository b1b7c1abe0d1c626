"""The middle subnet of one PSS-Net step (../shared/papers/pssnet.md §7 steps 2-3).

``SamplingPlan``: the constraints (FLOPs, predicted latency; ``constraints.py``) and their
maps (``sampler.py``), built from a config. ``draw``: a constraint with probability
proportional to its number of pools, a target of it uniformly from the targets its map
reaches; with probability p_e = p_start (p_end / p_start)^(e/E), or while pool[T] holds fewer
than ``pool_size`` entries, a fresh subnet for T from the conditioned sampler, else one from
pool[T] with softmax(score / t_e).
"""

from __future__ import annotations

import dataclasses

from pssnet_jax import constraints as constraints_lib, report, sampler
from pssnet_jax.host_state import SCORE_KEYS, HostState, PendingScore
from pssnet_jax.pools import exp_schedule
from pssnet_jax.space import Space, Subnet


@dataclasses.dataclass
class SamplingPlan:
    """The structure space, ``config.pssnet``, the constraints and their maps."""

    space: Space
    cfg: object
    constraints: list
    maps: dict  # constraint name -> sampler.ResourceMap

    def targets(self) -> dict:
        """Constraint name -> its pools' targets."""
        return {name: fmap.targets for name, fmap in self.maps.items()}


def plan_for(config, space: Space, latency_table: dict | None) -> SamplingPlan:
    """Builds the constraints of ``config.pssnet.constraints`` and their maps."""
    constraints = constraints_lib.make_constraints(config, space, latency_table)
    maps = {}
    for constraint in constraints:
        start, stop, step = constraint.targets
        fmap = sampler.build_map(space, start, stop, step, config.pssnet.map_samples,
                                 config.seed, config.pssnet.map_tilt, constraint.values)
        if not fmap.targets:
            key = "pssnet.targets" if constraint.name == "flops" else "latency.targets"
            raise ValueError(f"config.{key}={tuple(constraint.targets)}: no subnet of the "
                             f"structure space falls strictly inside this range")
        maps[constraint.name] = fmap
    return SamplingPlan(space, config.pssnet, constraints, maps)


def draw(plan: SamplingPlan, host: HostState, epoch: int,
         epochs: int) -> tuple[str, float | None, Subnet]:
    """(constraint, target, middle subnet) of one step. ``sampling='uniform'`` (the control
    without prioritized sampling) draws the subnet uniformly from the structure space
    instead; its score still enters the pool of its target (None outside every target), so
    the final selection works the same way."""
    names = list(plan.maps)
    name = names[constraints_lib.choose([len(plan.maps[n].targets) for n in names], host.rng)]
    fmap, pools, cfg = plan.maps[name], host.pools[name], plan.cfg
    if cfg.sampling == "uniform":
        subnet = plan.space.subnet(*plan.space.random(host.rng))
        constraint = next(c for c in plan.constraints if c.name == name)
        target = float(sampler.target_of(constraint.of_subnet(subnet), fmap.start, fmap.step))
        return name, (target if target in fmap.targets else None), subnet
    p = exp_schedule(*cfg.p_range, epoch, epochs)
    temperature = exp_schedule(*cfg.t_range, epoch, epochs)
    target = fmap.targets[host.rng.integers(len(fmap.targets))]
    explore = host.rng.random() < p or pools.size(target) < cfg.pool_size
    subnet = (sampler.sample(plan.space, fmap, target, host.rng) if explore
              else pools.sample(target, temperature, host.rng))
    return name, target, subnet


def sampled_step(plan: SamplingPlan, host: HostState, step_fn, state, batch, step: int,
                 epoch: int, epochs: int, min_resolution: int):
    """One PSS-Net step on the host side: draw the middle subnet, run ``step_fn(state, batch,
    subnet) -> (state, metrics)`` (the compiled max + middle + min step), then record the
    step's score (the previous step's score enters its pool now that this one is
    dispatched; at once with ``sync_pools``). Returns (state, metrics, middle subnet)."""
    name, target, subnet = draw(plan, host, epoch, epochs)
    state, metrics = step_fn(state, batch, subnet)
    host.record(PendingScore(name, target, subnet, step + 1,
                             {key: metrics[key] for key in SCORE_KEYS}, min_resolution),
                plan.cfg.sync_pools)
    return state, metrics, subnet


def diagnostics(plan: SamplingPlan, host: HostState, metrics: dict, subnet: Subnet,
                epoch: int, epochs: int) -> dict:
    """TensorBoard scalars of a log step: the step's loss terms, the middle subnet's FLOPs
    and resolution, the schedules p_e and t_e, and how full each constraint's pools are."""
    cfg = plan.cfg
    out = {"loss_max_ce": metrics["loss"], "loss_kl_mid": metrics["kl_mid"],
           "loss_kl_min": metrics["kl_min"],
           "middle_mflops": report.costs(plan.space, subnet)["flops"] / 1e6,
           "middle_resolution": subnet.resolution,
           "p_e": exp_schedule(*cfg.p_range, epoch, epochs),
           "t_e": exp_schedule(*cfg.t_range, epoch, epochs)}
    for name, pools in host.pools.items():
        targets = plan.maps[name].targets
        out[f"pool_fill_{name}"] = sum(pools.size(t) for t in targets) / (
            len(targets) * cfg.pool_size)
    return out
