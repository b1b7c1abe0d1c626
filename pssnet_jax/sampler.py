"""Resource targets, the map, and the conditioned sampler (../shared/papers/pssnet.md §4).

Targets lie on a grid ``start + k * step`` of a metric (MFLOPs by default; any constraint's
``values`` function, e.g. predicted latency in ms); a subnet belongs to target T when its
metric rounds to T on that grid. Only targets strictly inside ``[start, stop]`` get pools: the
end points are the max and min nets, trained every step anyway.

The map: ``map_samples`` subnets drawn uniformly from the structure space (seeded), from
which each reachable target gets the empirical marginals P(resolution | T) and
P(m_i = v | T) per stage. Sampling for T draws the resolution and every multiplier
independently from those marginals and rejects until the subnet falls in T (as the official
``ArchSampler``); after ``max_batches`` rejected batches it falls back to one of the map's own
samples for T, so sampling always terminates.

Unreachable targets: uniform multipliers make high-FLOPs MBV1 subnets (520-560 M, where the
paper has pools) practically impossible (§4.2). With ``tilt > 0`` the map adds that many
samples again, split evenly over multiplier ranges [l, 1.0] for l = 0.75, 0.80, 0.85, 0.90,
0.95 (a documented deviation), which populates every target of the MBV1 grid 120..560.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from pssnet_jax import space as space_lib
from pssnet_jax.space import Space, Subnet

TILT_LOWS = (0.75, 0.80, 0.85, 0.90, 0.95)
FALLBACK_SAMPLES = 64


def target_of(flops_m, start: float, step: float) -> np.ndarray:
    """The grid target (MFLOPs) of FLOPs values in MFLOPs: round((v - o) / step) * step + o,
    rounded to 6 decimals so that fractional grids compare exactly."""
    offset = start % step
    return np.round(np.round((np.asarray(flops_m) - offset) / step) * step + offset, 6)


def uniform_draws(space: Space, count: int, rng: np.random.Generator,
                  low: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(resolutions (N,), multipliers (N, stages)) drawn as ``Space.random`` does."""
    lo, hi = space.resolutions[0], space.resolutions[-1]
    step = space.resolutions[1] - lo if len(space.resolutions) > 1 else 8
    raw = rng.uniform(lo, hi, count)
    resolutions = np.maximum(lo, (raw + step / 2).astype(np.int64) // step * step)
    mults = np.round(rng.uniform(space.mult_low if low is None else low, space.mult_high,
                                 (count, space.num_stages)), 3)
    return resolutions, mults


def flops_metric(space: Space) -> Callable:
    """MFLOPs of (resolutions (N,), multipliers (N, stages))."""
    return lambda resolutions, multipliers: space_lib.flops(space, resolutions, multipliers) / 1e6


@dataclasses.dataclass
class ResourceMap:
    """Per-target marginals of resolution and multipliers, plus a few samples per target, for
    one metric (``metric(resolutions, multipliers)`` in the targets' unit)."""

    targets: tuple
    resolutions: np.ndarray  # the space's resolutions
    mult_values: np.ndarray  # the 3-decimal multiplier grid
    resolution_probs: dict  # T -> (R,)
    mult_probs: dict  # T -> (stages, V)
    samples: dict  # T -> (resolutions (k,), multipliers (k, stages))
    start: float
    step: float
    metric: Callable


def build_map(space: Space, start: float, stop: float, step: float, num_samples: int,
              seed: int, tilt: int = 0, metric: Callable | None = None) -> ResourceMap:
    """The map of §4.2 from ``num_samples`` uniform (plus ``tilt`` tilted) draws; ``metric``
    defaults to MFLOPs."""
    metric = metric or flops_metric(space)
    rng = np.random.default_rng([seed, 0x3A9])
    res, mults = uniform_draws(space, num_samples, rng)
    for low in TILT_LOWS if tilt else ():
        r, m = uniform_draws(space, tilt // len(TILT_LOWS), rng, low)
        res, mults = np.concatenate([res, r]), np.concatenate([mults, m])
    targets = target_of(metric(res, mults), start, step)
    values = np.round(np.arange(round(space.mult_low * 1000), round(space.mult_high * 1000) + 1)
                      / 1000, 3)
    grid = set(np.round(np.arange(start + step, stop - step / 2, step), 6).tolist())
    fmap = ResourceMap((), np.asarray(space.resolutions), values, {}, {}, {}, start, step, metric)
    present = []
    for target in sorted(set(targets.tolist()) & grid):
        rows = targets == target
        present.append(float(target))
        fmap.resolution_probs[target] = np.array(
            [np.sum(res[rows] == r) for r in space.resolutions], np.float64) / rows.sum()
        index = np.rint((mults[rows] - values[0]) * 1000).astype(int)
        counts = np.stack([np.bincount(index[:, s], minlength=len(values))
                           for s in range(space.num_stages)]).astype(np.float64)
        fmap.mult_probs[target] = counts / counts.sum(axis=1, keepdims=True)
        fmap.samples[target] = (res[rows][:FALLBACK_SAMPLES], mults[rows][:FALLBACK_SAMPLES])
    fmap.targets = tuple(present)
    return fmap


def sample(space: Space, fmap: ResourceMap, target: float, rng: np.random.Generator,
           batch: int = 64, max_batches: int = 50) -> Subnet:
    """A subnet whose metric falls in ``target``, drawn from the target's marginals."""
    res_p, mult_p = fmap.resolution_probs[target], fmap.mult_probs[target]
    cumulative = np.cumsum(mult_p, axis=1)
    for _ in range(max_batches):
        res = fmap.resolutions[rng.choice(len(res_p), size=batch, p=res_p)]
        u = rng.random((batch, space.num_stages, 1))
        index = np.minimum((u > cumulative[None]).sum(-1), len(fmap.mult_values) - 1)
        mults = fmap.mult_values[index]
        hits = np.flatnonzero(target_of(fmap.metric(res, mults), fmap.start,
                                        fmap.step) == target)
        if hits.size:
            return space.subnet(int(res[hits[0]]), mults[hits[0]].tolist())
    res, mults = fmap.samples[target]
    pick = rng.integers(len(res))
    return space.subnet(int(res[pick]), mults[pick].tolist())
