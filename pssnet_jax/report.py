"""``subnets.json`` and the FLOPs-accuracy plot of a PSS-Net run.

``subnets.json``: ``{"model", "selection", "targets", "subnets": [entry per kept subnet],
"max": entry, "min": entry}`` where an entry holds the target (MFLOPs, or 'max'/'min'), the
resolution and stage channels, integer ``flops`` and ``params`` of the plain subnet, its pool
score and rank, ``selection_accuracy`` (held-out accuracy under the default selection, test
accuracy under 'official', None under 'rank1') and ``test_accuracy`` / ``test_loss``.
"""

from __future__ import annotations

import logging

from common_jax import models, profile
from pssnet_jax.space import Space, Subnet

log = logging.getLogger("common_jax")
PLOT_FILE = "flops_accuracy.png"


def costs(space: Space, subnet: Subnet) -> dict:
    """Integer FLOPs / thop FLOPs / params of the plain subnet at its resolution."""
    return profile.totals(models.arch_layers(space.arch(subnet), subnet.resolution))


def entry(space: Space, subnet: Subnet, *, target, test: dict, score=None, rank=None,
          selection_accuracy=None) -> dict:
    counted = costs(space, subnet)
    return {"target": target, **subnet.to_json(), "flops": counted["flops"],
            "params": counted["params"], "score": score, "rank": rank,
            "selection_accuracy": selection_accuracy, "test_accuracy": test["accuracy"],
            "test_loss": test["loss"]}


def document(config, space: Space, kept: list, ends: dict) -> dict:
    return {"model": space.model, "selection": config.pssnet.selection,
            "targets": list(config.pssnet.targets), "subnets": kept, **ends}


def plot(doc: dict, path: str) -> None:
    """FLOPs (M) against test accuracy of the kept subnets, the max and the min net."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed; no %s", path)
        return
    points = sorted([doc["min"]] + doc["subnets"] + [doc["max"]], key=lambda e: e["flops"])
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot([p["flops"] / 1e6 for p in points], [100 * p["test_accuracy"] for p in points],
            "o-", label=f"PSS-Net {doc['model']} (kept subnets)")
    for name in ("max", "min"):
        ax.plot(doc[name]["flops"] / 1e6, 100 * doc[name]["test_accuracy"], "s", ms=9,
                label=f"{name} net")
    ax.set_xlabel("MFLOPs (multiply-accumulates)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    log.info("wrote %s", path)
