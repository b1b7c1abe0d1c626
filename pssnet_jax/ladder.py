"""The budget ladder of a PSS-Net run (``--mode=export --config.export.all=True``).

Every kept subnet (the min net, the kept subnet of every target, the max net) is exported to
its own folder in ``config.export.format``, and ``ladder.json`` lists them by FLOPs with
params, predicted latency (when a latency table was used), selection and test accuracy,
resolution, the artifact file and, for ONNX artifacts with onnxruntime installed, the
measured onnxruntime latency (median of ``config.export.latency_runs`` calls at each of
``config.export.latency_batches``) on the machine named in ``measured_on``.
``pick_subnet.py`` (``ladder_pick.py``, standard library only) is copied beside it, and
with measured latencies ``ladder.png`` plots test accuracy against them.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os

import jax

from common_jax import artifacts, paths
from pssnet_jax import subnet_export, switch
from pssnet_jax.supernet_run import SupernetRun

log = logging.getLogger(__name__)
LADDER_FILE = "ladder.json"
PICKER_FILE = "pick_subnet.py"
PLOT_FILE = "ladder.png"
FORMAT_VERSION = 1


def _rung(entry: dict, index: int, artifact: str) -> dict:
    target = entry["target"]
    name = f"{index:02d}_{target if isinstance(target, str) else f'{target:g}'}"
    return {"directory": name, "artifact": artifact, "target": target,
            "constraint": entry.get("constraint"), "flops": entry["flops"],
            "params": entry["params"], "latency_ms": entry.get("latency_ms"),
            "selection_accuracy": entry.get("selection_accuracy"),
            "test_accuracy": entry.get("test_accuracy"), "resolution": entry["resolution"],
            "channels": entry["channels"], "onnxruntime_ms": None}


def _measure(rungs: list[dict], directory: str, config) -> str | None:
    """Adds the measured onnxruntime latency to ONNX rungs; the machine, or None."""
    if config.export.format != "onnx":
        return None
    if importlib.util.find_spec("onnxruntime") is None:
        log.warning("onnxruntime is not installed: ladder.json gets no measured latency "
                    "(pip install onnxruntime)")
        return None
    for rung in rungs:
        folder = paths.join(directory, rung["directory"])
        meta = json.loads(paths.read_text(paths.join(folder, "model.json")))
        rung["onnxruntime_ms"] = artifacts.onnxruntime_latency_ms(
            paths.join(folder, rung["artifact"]), artifacts.input_shape(meta),
            config.export.latency_batches, config.export.latency_runs)
        log.info("%s: onnxruntime %s ms", rung["directory"], rung["onnxruntime_ms"])
    return artifacts.machine()


def export_ladder(pss: SupernetRun, state, workdir: str, directory: str) -> str:
    """Exports every kept subnet of ``workdir`` under ``directory`` with ``ladder.json`` and
    ``pick_subnet.py``; returns ``directory``."""
    config = pss.config
    entries = sorted(switch.candidates(switch.load_subnets(workdir)), key=lambda e: e["flops"])
    artifact = artifacts.FILES.get(config.export.format, "model.json")
    rungs = [_rung(entry, i, artifact) for i, entry in enumerate(entries)]
    for entry, rung in zip(entries, rungs):
        log.info("ladder: exporting %s (%.2f MFLOPs)", rung["directory"], entry["flops"] / 1e6)
        subnet_export.export_subnet(pss, state, entry, paths.join(directory, rung["directory"]))
    ladder = {"format_version": FORMAT_VERSION, "export_format": config.export.format,
              "selection_split": config.pssnet.selection, "measured_on": None,
              "rungs": rungs}
    ladder["measured_on"] = _measure(rungs, directory, config)
    if jax.process_index() == 0:
        paths.write_text(paths.join(directory, LADDER_FILE), json.dumps(ladder, indent=2))
        with open(os.path.join(os.path.dirname(__file__), "ladder_pick.py")) as f:
            paths.write_text(paths.join(directory, PICKER_FILE), f.read())
        evaluated = all(r["test_accuracy"] is not None for r in rungs)
        if ladder["measured_on"] and evaluated:
            plot(ladder, paths.join(directory, PLOT_FILE))
        elif ladder["measured_on"]:
            log.info("no %s: the kept subnets have no test accuracy yet (an imported run; "
                     "--mode=eval selects and evaluates them)", PLOT_FILE)
    return directory


def markdown_table(ladder: dict) -> str:
    """The rungs as a Markdown table (README's Deploy section is this table of
    docs/deploy/ladder.json)."""
    batches = sorted({int(b) for r in ladder["rungs"] for b in (r["onnxruntime_ms"] or {})})
    lines = ["| rung | resolution | MFLOPs | params | held-out acc. | test acc. | " +
             " | ".join(f"onnxruntime ms, batch {b}" for b in batches) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(batches)]
    for r in ladder["rungs"]:
        held = "-" if r["selection_accuracy"] is None else f"{100 * r['selection_accuracy']:.1f}%"
        ms = [f"{(r['onnxruntime_ms'] or {}).get(str(b), float('nan')):.3f}" for b in batches]
        lines.append(f"| {r['directory']} | {r['resolution']} | {r['flops'] / 1e6:.2f} | "
                     f"{r['params']:,} | {held} | {100 * r['test_accuracy']:.2f}% | " +
                     " | ".join(ms) + " |")
    return "\n".join(lines)


def latency_sentence(ladder: dict, low: int = 16, high: int = 20) -> str:
    """README's reading of a ladder's measured latencies: the FLOPs and batch-1 latency
    ranges, and at batch 32 the ``low`` px rungs against the ``high`` px ones (which are
    slower; ValueError when the file says otherwise, so the reading cannot go stale)."""
    rungs = ladder["rungs"]
    mflops = [r["flops"] / 1e6 for r in rungs]
    batch1 = [r["onnxruntime_ms"]["1"] for r in rungs]
    by_res = {res: [r for r in rungs if r["resolution"] == res] for res in (low, high)}
    slow = min(r["onnxruntime_ms"]["32"] for r in by_res[low])
    if slow <= max(r["onnxruntime_ms"]["32"] for r in by_res[high]):
        raise ValueError(f"the {low} px rungs are not all slower than the {high} px ones")

    def span(res):
        values = [r["flops"] / 1e6 for r in by_res[res]]
        return f"{min(values):.1f}-{max(values):.1f}"
    return (f"at batch 1 these networks of {min(mflops):.0f}-{max(mflops):.0f} MFLOPs are "
            f"dominated by per-call overhead, so the latency spread is small "
            f"({min(batch1):.2f}-{max(batch1):.2f} ms); at batch 32 latency follows FLOPs "
            f"within a resolution but not across them (the {low} px rungs, {span(low)} MFLOPs, "
            f"take longer than the {high} px ones of {span(high)} MFLOPs)")


def plot(ladder: dict, path: str) -> None:
    """Test accuracy against measured onnxruntime latency, one panel per batch size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    batches = sorted({int(b) for r in ladder["rungs"] for b in (r["onnxruntime_ms"] or {})})
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 3.8), dpi=120,
                             squeeze=False)
    for ax, batch in zip(axes[0], batches):
        xs = [r["onnxruntime_ms"][str(batch)] for r in ladder["rungs"]]
        ys = [100 * r["test_accuracy"] for r in ladder["rungs"]]
        ax.plot(xs, ys, "o")
        for r, x, y in zip(ladder["rungs"], xs, ys):
            ax.annotate(f"{r['flops'] / 1e6:.1f}M", (x, y), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
        ax.set_xlabel(f"onnxruntime latency (ms, batch {batch}, median)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"kept subnets as ONNX artifacts; {ladder['measured_on']}", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    paths.write_bytes(path, buffer.getvalue())
