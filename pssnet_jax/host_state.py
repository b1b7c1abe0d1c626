"""PSS-Net's host-side state (../shared/papers/pssnet.md §5-7): what checkpoints store besides
the train state, so that a resumed run continues with identical pools and draws.

``HostState`` holds the per-constraint pools, the sampling generator (one seeded generator
that every host shares) and the one pending score. The score of step t is put into its pool
after step t + 1 has been dispatched (``record``), so the host never waits for the device;
``sync_pools=True`` flushes at once (the official order). Scores are means over the global
batch, so all hosts keep identical pools.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from common_jax.loop import NonFiniteLoss
from pssnet_jax.constraints import UNITS
from pssnet_jax.pools import Pools
from pssnet_jax.space import Subnet

SCORE_KEYS = ("score", "loss", "kl_mid", "kl_min")


def sampling_generator(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, 0x9551])


@dataclasses.dataclass
class PendingScore:
    """The middle subnet of one step and its step's losses (device scalars until read;
    ``{"score": float}`` when restored from a checkpoint)."""

    constraint: str
    target: float | None  # None: a uniform-sampling subnet outside every target
    subnet: Subnet
    step: int
    metrics: dict
    min_resolution: int = 0  # the min net's resolution, for the error message

    def score(self) -> float:
        """The score; NonFiniteLoss naming the step and subnets if any loss is NaN or Inf."""
        values = {k: float(v) for k, v in jax.device_get(self.metrics).items()}
        bad = {k: v for k, v in values.items() if not np.isfinite(v)}
        if bad:
            target = "none" if self.target is None else format(self.target, "g")
            raise NonFiniteLoss(
                f"non-finite {bad} at step {self.step}: middle subnet "
                f"{self.subnet.resolution} px, channels {list(self.subnet.channels)} (target "
                f"{target} {UNITS[self.constraint]}), min net {self.min_resolution} px; "
                f"stopping, the last good checkpoint is kept")
        return values["score"]

    def to_json(self) -> dict:
        return {"constraint": self.constraint, "target": self.target, **self.subnet.to_json(),
                "step": self.step, "score": self.score()}

    @staticmethod
    def from_json(value: dict) -> "PendingScore":
        return PendingScore(value.get("constraint", "flops"), value["target"],
                            Subnet.from_json(value), value["step"], {"score": value["score"]})


@dataclasses.dataclass
class HostState:
    """Pools per constraint (name -> ``Pools``), the sampling generator, the pending score."""

    pools: dict
    rng: np.random.Generator
    pending: PendingScore | None = None

    @staticmethod
    def fresh(targets: dict, pool_size: int, ema: float, seed: int) -> "HostState":
        """Empty pools for ``targets`` (constraint name -> target list)."""
        return HostState({name: Pools(values, pool_size, ema)
                          for name, values in targets.items()}, sampling_generator(seed))

    def record(self, pending: PendingScore, sync: bool = False) -> None:
        """Flushes the previous step's score, then keeps this one pending (``sync``: flushes
        it at once)."""
        self.flush()
        self.pending = pending
        if sync:
            self.flush()

    def flush(self) -> None:
        """Puts the pending score into its pool (waits for that step's result)."""
        if self.pending is not None:
            score = self.pending.score()
            if self.pending.target is not None:
                self.pools[self.pending.constraint].update(self.pending.target,
                                                           self.pending.subnet, score)
            self.pending = None

    def to_json(self) -> dict:
        return {"pools": {name: pools.to_json() for name, pools in self.pools.items()},
                "rng": self.rng.bit_generator.state,
                "pending": self.pending and self.pending.to_json()}

    def load_json(self, value: dict) -> None:
        """Restores checkpointed host state into this (fresh) one; state written before
        pools were kept per constraint (a single FLOPs pool set) loads too."""
        pools = value.get("pools")
        if pools and "capacity" in pools:
            pools = {"flops": pools}
        if pools:
            self.pools = {name: Pools.from_json(item) for name, item in pools.items()}
        self.rng.bit_generator.state = value["rng"]
        self.pending = value.get("pending") and PendingScore.from_json(value["pending"])
