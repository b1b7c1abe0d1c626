"""Budget switching: which kept subnet to run under a FLOPs budget.

``best_for_budget(load_subnets(workdir), 150)`` answers "what should I run under 150 MFLOPs?"
with the ``subnets.json`` entry (kept subnets, max and min net) that fits and was best on the
selection data (largest FLOPs when the run kept subnets without evaluating them).
"""

from __future__ import annotations

import json
import os

SUBNETS_FILE = "subnets.json"


def load_subnets(workdir: str) -> dict:
    path = os.path.join(workdir, SUBNETS_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{path} does not exist; train the PSS-Net run (or --mode=eval) first")
    with open(path) as f:
        return json.load(f)


def candidates(document: dict) -> list[dict]:
    return [document["min"], *document["subnets"], document["max"]]


def best_for_budget(document: dict, budget_mflops: float) -> dict:
    """The entry that fits ``budget_mflops`` with the best selection accuracy (ties and runs
    without selection accuracy: the most FLOPs). ValueError below the smallest subnet."""
    fitting = [e for e in candidates(document) if e["flops"] <= budget_mflops * 1e6]
    if not fitting:
        smallest = min(e["flops"] for e in candidates(document)) / 1e6
        raise ValueError(f"FLOPs budget {budget_mflops:g} MFLOPs is below the smallest kept "
                         f"subnet ({smallest:.2f} MFLOPs); use at least that")

    return max(fitting, key=lambda e: (-1.0 if e["selection_accuracy"] is None
                                       else e["selection_accuracy"], e["flops"]))
