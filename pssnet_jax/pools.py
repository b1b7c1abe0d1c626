"""Per-target subnet pools and the two sampling schedules (../shared/papers/pssnet.md §5-6).

Host-side plain Python state. ``pools[T]`` maps a ``Subnet`` to its score (higher is better:
the negative training loss). Every sampled subnet is inserted; a re-visited one gets the
exponential moving average ``lambda * old + (1 - lambda) * new``; when a pool holds more than
``capacity`` entries the lowest score (the first such in insertion order) is evicted, which
may be the entry just inserted. Sampling from a pool draws with ``softmax(score / t_e)``.
Pools round-trip through JSON (a list of entries per target) exactly, insertion order
included, so a resumed run continues with identical pools.
"""

from __future__ import annotations

import numpy as np

from pssnet_jax.space import Subnet


def exp_schedule(start: float, end: float, epoch: int, total_epochs: int) -> float:
    """``start * (end / start) ** (epoch / total_epochs)`` (evaluated once per epoch)."""
    return start * (end / start) ** (epoch / total_epochs)


class Pools:
    """One insertion-ordered pool of scored subnets per resource target."""

    def __init__(self, targets, capacity: int = 50, ema: float = 0.9):
        self.capacity, self.ema = capacity, ema
        self.entries: dict[float, dict[Subnet, float]] = {float(t): {} for t in targets}

    def __len__(self) -> int:
        return sum(len(pool) for pool in self.entries.values())

    def size(self, target: float) -> int:
        return len(self.entries[target])

    def update(self, target: float, subnet: Subnet, score: float) -> None:
        """Insert (or EMA-update) ``subnet`` in pool ``target``; evict the lowest if over."""
        pool = self.entries[target]
        pool[subnet] = (self.ema * pool[subnet] + (1 - self.ema) * score) if subnet in pool \
            else float(score)
        if len(pool) > self.capacity:
            del pool[min(pool, key=pool.get)]

    def probabilities(self, target: float, temperature: float) -> np.ndarray:
        """softmax(score / temperature) over the pool, in insertion order."""
        scores = np.fromiter(self.entries[target].values(), np.float64) / temperature
        weights = np.exp(scores - scores.max())
        return weights / weights.sum()

    def sample(self, target: float, temperature: float, rng: np.random.Generator) -> Subnet:
        keys = list(self.entries[target])
        return keys[rng.choice(len(keys), p=self.probabilities(target, temperature))]

    def ranked(self, target: float) -> list[tuple[Subnet, float]]:
        """The pool's entries by descending score (ties: insertion order)."""
        return sorted(self.entries[target].items(), key=lambda item: -item[1])

    def to_json(self) -> dict:
        return {"capacity": self.capacity, "ema": self.ema,
                "pools": {str(t): [{**s.to_json(), "score": v} for s, v in pool.items()]
                          for t, pool in self.entries.items()}}

    @staticmethod
    def from_json(value: dict) -> "Pools":
        pools = Pools([float(t) for t in value["pools"]], value["capacity"], value["ema"])
        for target, entries in value["pools"].items():
            pools.entries[float(target)] = {Subnet.from_json(e): float(e["score"])
                                            for e in entries}
        return pools
