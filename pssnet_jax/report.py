"""``subnets.json`` and the FLOPs- (and latency-) accuracy plots of a PSS-Net run.

``subnets.json``: ``{"model", "selection", "constraints", "targets" (per constraint),
"subnets": [entry per kept subnet], "max": entry, "min": entry}`` where an entry holds its
constraint and target (MFLOPs or ms, or 'max'/'min'), the resolution and stage channels,
integer ``flops`` and ``params`` of the plain subnet, ``latency_ms`` predicted by the
configured latency table (None without one), its pool score and rank,
``selection_accuracy`` (held-out accuracy under the default selection, test accuracy under
'official', None under 'rank1') and ``test_accuracy`` / ``test_loss``.
"""

from __future__ import annotations

import io
import logging

from common_jax import models, paths, profile
from pssnet_jax.space import Space, Subnet

log = logging.getLogger(__name__)
PLOT_FILE = "flops_accuracy.png"
LATENCY_PLOT_FILE = "latency_accuracy.png"


def costs(space: Space, subnet: Subnet) -> dict:
    """Integer FLOPs / thop FLOPs / params of the plain subnet at its resolution."""
    return profile.totals(models.arch_layers(space.arch(subnet), subnet.resolution))


def entry(space: Space, subnet: Subnet, *, target, test: dict, constraint=None, score=None,
          rank=None, selection_accuracy=None, latency_ms=None) -> dict:
    counted = costs(space, subnet)
    return {"constraint": constraint, "target": target, **subnet.to_json(),
            "flops": counted["flops"], "params": counted["params"], "latency_ms": latency_ms,
            "score": score, "rank": rank,
            "selection_accuracy": selection_accuracy, "test_accuracy": test["accuracy"],
            "test_loss": test["loss"]}


def document(config, space: Space, kept: list, ends: dict, constraints) -> dict:
    return {"model": space.model, "selection": config.pssnet.selection,
            "constraints": [c.name for c in constraints],
            "targets": {c.name: list(c.targets) for c in constraints}, "subnets": kept, **ends}


def run_sentence(summary: dict) -> str:
    """README's account of one run from its ``summary.json``: the training loop's seconds
    (``wall_time_s``, which starts after set-up: data, structure-space maps) with its compile
    seconds, the kept subnets and the max and min nets' test accuracy."""
    return (f"{summary['wall_time_s']:.0f} s from the start of its training loop to the end "
            f"(`wall_time_s`; the set-up before it is not counted), "
            f"{summary['compile_time_s']:.0f} s of it compiling, "
            f"{summary['num_kept_subnets']} kept subnets, max net "
            f"{100 * summary['eval_accuracy']:.1f}%, min net "
            f"{100 * summary['min_eval_accuracy']:.1f}%")


def latency_run_sentence(summary: dict, doc: dict) -> str:
    """docs/latency.md's account of a latency-pool run: its training loop's time, its pools
    between the min and max net's predicted latency, the kept subnets."""
    low, high = doc["min"]["latency_ms"], doc["max"]["latency_ms"]
    return (f"{summary['wall_time_s'] / 60:.1f} minutes of training and selection "
            f"({summary['wall_time_s']:.0f} s), {len({e['target'] for e in doc['subnets']})} "
            f"latency pools with a kept subnet between the "
            f"min and the max net's predicted latency ({low:.4f} and {high:.4f} ms, "
            f"{100 * (high - low) / low:.1f}% apart), {summary['num_kept_subnets']} kept subnets")


def accuracy_comparison(summary: dict, other: dict) -> str:
    """'The max net reached a% and the min net b%, against c% / d%' of two runs' summaries."""
    return (f"The max net reached {100 * summary['eval_accuracy']:.2f}% and the min net "
            f"{100 * summary['min_eval_accuracy']:.2f}%, against "
            f"{100 * other['eval_accuracy']:.2f}% / {100 * other['min_eval_accuracy']:.2f}%")


def markdown_table(doc: dict) -> str:
    """The kept subnets of a subnets.json document as a Markdown table, min net first and max
    net last (README's table of the embedded default run is this table of its raw output);
    with a latency table, a column of each subnet's predicted latency."""
    entries = [doc["min"], *doc["subnets"], doc["max"]]
    latency = any(e.get("latency_ms") is not None for e in entries)
    unit = {("flops",): "MFLOPs", ("latency",): "ms"}.get(tuple(doc["constraints"]))
    lines = [f"| target{f' ({unit})' if unit else ''} | resolution | stage channels | MFLOPs | "
             f"params | {'predicted ms | ' if latency else ''}pool rank | held-out acc. | "
             f"test acc. |", "|---|---|---|---|---|" + "---|" * (4 if latency else 3)]
    for e in entries:
        rank = "-" if e.get("rank") is None else str(e["rank"])
        held = ("-" if e.get("selection_accuracy") is None
                else f"{100 * e['selection_accuracy']:.1f}%")
        predicted = f"{e['latency_ms']:.4f} | " if latency else ""
        target = (f"{e['target']:.4f}" if e.get("constraint") == "latency" else e["target"])
        lines.append(f"| {target} | {e['resolution']} | "
                     f"{' '.join(str(c) for c in e['channels'])} | {e['flops'] / 1e6:.2f} | "
                     f"{e['params']:,} | {predicted}{rank} | {held} | "
                     f"{100 * e['test_accuracy']:.2f}% |")
    return "\n".join(lines)


def plot(doc: dict, path: str, metric: str = "flops") -> None:
    """MFLOPs (or predicted latency, ``metric='latency'``) against test accuracy of the kept
    subnets (one series per constraint), the max and the min net."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed; no %s", path)
        return
    def x(e):
        return e["flops"] / 1e6 if metric == "flops" else e["latency_ms"]

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for constraint in doc.get("constraints", ["flops"]):
        points = sorted([doc["min"]] + [e for e in doc["subnets"] if e.get("constraint",
                         "flops") == constraint] + [doc["max"]], key=x)
        ax.plot([x(p) for p in points], [100 * p["test_accuracy"] for p in points], "o-",
                label=f"PSS-Net {doc['model']} ({constraint} pools, kept subnets)")
    for name in ("max", "min"):
        ax.plot(x(doc[name]), 100 * doc[name]["test_accuracy"], "s", ms=9, label=f"{name} net")
    ax.set_xlabel("MFLOPs (multiply-accumulates)" if metric == "flops"
                  else "predicted latency (ms, this device's table)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    paths.write_bytes(path, buffer.getvalue())
    log.info("wrote %s", path)
