"""The resource constraints that key PSS-Net pools (../shared/papers/pssnet.md §3, §4.1, §7).

``flops``: MFLOPs of the official counter (the -F variants). ``latency``: milliseconds
predicted by a latency table measured on the user's own device (``pssnet_jax/latency.py``;
the -G/-C variants measured theirs once on the authors' GPU/CPU). Several constraints at once
(the -M variant): every constraint has its own targets, map and pools, so a subnet belongs to
one pool per constraint; each step first draws the constraint with probability proportional
to its number of pools (§7 step 2), then a target of it uniformly.

Latency targets ``(0, 0, 0)`` (the default) are placed automatically for the table's device:
``latency.num_pools`` pools evenly between the min and the max net's predicted latency.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from pssnet_jax import latency, report, sampler, space as space_lib
from pssnet_jax.space import Space, Subnet

CONSTRAINTS = ("flops", "latency")
UNITS = {"flops": "MFLOPs", "latency": "ms"}


@dataclasses.dataclass
class Constraint:
    """One constraint: its name, target grid (start, stop, step) and metric."""

    name: str
    targets: tuple
    values: Callable  # (resolutions (N,), multipliers (N, stages)) -> (N,) metric values
    of_subnet: Callable  # Subnet -> metric value

    @property
    def unit(self) -> str:
        return UNITS[self.name]


def flops_constraint(space: Space, targets) -> Constraint:
    def of_subnet(subnet: Subnet) -> float:
        return report.costs(space, subnet)["flops"] / 1e6

    return Constraint("flops", tuple(targets), sampler.flops_metric(space), of_subnet)


def latency_constraint(space: Space, table: dict, targets=(0.0, 0.0, 0.0),
                       num_pools: int = 8) -> Constraint:
    """Predicted latency (ms) from ``table``; automatic targets when ``targets`` is zeros."""
    cache: dict = {}

    def of_subnet(subnet: Subnet) -> float:
        if subnet not in cache:
            cache[subnet] = latency.predict_subnet_ms(table, space, subnet)
        return cache[subnet]

    def values(resolutions, multipliers):
        widths = space_lib.stage_widths(space, multipliers)
        return np.asarray([of_subnet(Subnet(int(r), tuple(int(c) for c in row)))
                           for r, row in zip(resolutions, widths)])

    if not any(targets):
        low = of_subnet(space.min_subnet())
        high = of_subnet(space.max_subnet())
        step = (high - low) / (num_pools + 1)
        targets = (round(low, 6), round(high, 6), round(step, 6))
    return Constraint("latency", tuple(targets), values, of_subnet)


def make_constraints(config, space: Space, table: dict | None) -> list[Constraint]:
    """The constraints of ``config.pssnet.constraints``; latency ones use ``table``, the
    configured latency table (``latency_table_of``)."""
    out = []
    for name in config.pssnet.constraints:
        if name == "flops":
            out.append(flops_constraint(space, config.pssnet.targets))
        else:
            out.append(latency_constraint(space, table, config.latency.targets,
                                          config.latency.num_pools))
    return out


def latency_table_of(config, space: Space) -> dict | None:
    """The configured latency table (checked against the space), or None."""
    path = config.latency.table if "latency" in config else ""
    if not path:
        return None
    table = latency.load_table(path)
    latency.check_table_matches(table, space, path)
    return table


def choose(pool_counts: list[int], rng: np.random.Generator) -> int:
    """Index of the constraint for this step, with probability proportional to its number of
    pools (§7 step 2); no draw when there is only one."""
    if len(pool_counts) == 1:
        return 0
    counts = np.asarray(pool_counts, np.float64)
    return int(rng.choice(len(counts), p=counts / counts.sum()))
