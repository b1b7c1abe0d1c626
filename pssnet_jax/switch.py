"""Budget switching: which kept subnet to run under a FLOPs or latency budget.

``best_for_budget(load_subnets(workdir), 150)`` answers "what should I run under 150 MFLOPs?"
(``best_for_budget(doc, 2.5, "latency")``: under 2.5 ms of predicted latency) with the
``subnets.json`` entry (kept subnets, max and min net) that fits and was best on the
selection data (largest FLOPs when the run kept subnets without evaluating them).
"""

from __future__ import annotations

import json

from common_jax import paths

SUBNETS_FILE = "subnets.json"


def load_subnets(workdir: str) -> dict:
    path = paths.join(workdir, SUBNETS_FILE)
    if not paths.exists(path):
        raise ValueError(f"{path} does not exist; train the PSS-Net run (or --mode=eval) first")
    return json.loads(paths.read_text(path))


def candidates(document: dict) -> list[dict]:
    return [document["min"], *document["subnets"], document["max"]]


def cost(entry: dict, metric: str) -> float:
    """An entry's MFLOPs (``metric='flops'``) or predicted latency in ms (``'latency'``)."""
    if metric == "flops":
        return entry["flops"] / 1e6
    if metric == "latency":
        if entry.get("latency_ms") is None:
            raise ValueError("this run's subnets.json has no predicted latencies; set "
                             "config.latency.table and run --mode=eval to add them")
        return entry["latency_ms"]
    raise ValueError(f"budget metric {metric!r}: expected 'flops' or 'latency'")


def best_for_budget(document: dict, budget: float, metric: str = "flops") -> dict:
    """The entry that fits ``budget`` (MFLOPs, or ms for ``metric='latency'``) with the best
    selection accuracy (ties and runs without selection accuracy: the most FLOPs).
    ValueError below the smallest subnet."""
    unit, label = ("MFLOPs", "FLOPs") if metric == "flops" else ("ms", "latency")
    fitting = [e for e in candidates(document) if cost(e, metric) <= budget]
    if not fitting:
        smallest = min(cost(e, metric) for e in candidates(document))
        raise ValueError(f"{label} budget {budget:g} {unit} is below the smallest kept "
                         f"subnet ({smallest:.3f} {unit}); use at least that")

    return max(fitting, key=lambda e: (-1.0 if e["selection_accuracy"] is None
                                       else e["selection_accuracy"], e["flops"]))
