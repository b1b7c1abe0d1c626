"""The README's DCFF table on the embedded data (issue #17 part 6): the full-width ResNet-20
baseline and DCFF's three modes at the embedded rates, 10 epochs each, seed 0.

    python -m evidence.embedded_dcff [--workdir=runs/embedded_dcff] \
        [--out=docs/results/embedded_dcff.json]

Each run is ``python launch.py --config=<config>[:<mode>]`` in its own workdir under
``--workdir`` (a finished one is reused). ``--out`` records each run's FLOPs, params, final
test accuracy and wall time; ``markdown_table`` renders the README's table from it.
"""

from __future__ import annotations

import argparse
import json
import os

from common_jax.provenance import provenance
from evidence.study import quiet_logging, train_or_reuse
from pssnet_dcff import api

RUNS = (  # (config, argument, README label)
    ("configs/baselines/embedded.py", None,
     "`configs/baselines/embedded.py` (ResNet-20, full width)"),
    ("configs/dcff/embedded.py", None, "`configs/dcff/embedded.py` (faithful)"),
    ("configs/dcff/embedded.py", "stable", "`configs/dcff/embedded.py:stable`"),
    ("configs/dcff/embedded.py", "scratch",
     "`configs/dcff/embedded.py:scratch` (same widths, no fusion)"),
)


def markdown_table(document: dict) -> str:
    """README's table: run, MFLOPs, params, final test accuracy, minutes."""
    lines = ["| run | MFLOPs | params | test accuracy | minutes |", "|---|---|---|---|---|"]
    for row in document["rows"]:
        lines.append(f"| {row['label']} | {row['flops'] / 1e6:.2f} | {row['params']:,} | "
                     f"{100 * row['eval_accuracy']:.2f}% | {row['wall_time_s'] / 60:.1f} |")
    return "\n".join(lines)


def baseline_sentence(document: dict) -> str:
    """README's summary line of the full-width baseline (the document's first row)."""
    row = document["rows"][0]
    return (f"reaches {100 * row['eval_accuracy']:.1f}% ([DCFF](#dcff) table: "
            f"{row['wall_time_s'] / 60:.1f} minutes")


def fused_vs_scratch(document: dict) -> str:
    """DCFF (faithful, the default) against the same widths from scratch on the embedded
    set: 'DCFF a% against scratch b%'."""
    rows = {row["config"]: row for row in document["rows"]}
    return (f"DCFF {100 * rows['configs/dcff/embedded.py']['eval_accuracy']:.2f}% against "
            f"scratch {100 * rows['configs/dcff/embedded.py:scratch']['eval_accuracy']:.2f}%")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="runs/embedded_dcff")
    parser.add_argument("--out", default="docs/results/embedded_dcff.json")
    args = parser.parse_args()
    quiet_logging()
    rows = []
    for path, arg, label in RUNS:
        name = os.path.basename(os.path.dirname(path)) + (f"_{arg}" if arg else "")
        summary = train_or_reuse(api.load_config(path, arg), os.path.join(args.workdir, name))
        rows.append({"config": path + (f":{arg}" if arg else ""), "label": label,
                     **{k: summary[k] for k in ("flops", "params", "eval_accuracy",
                                                "best_eval_accuracy", "wall_time_s")
                        if k in summary}})
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"command": "python -m evidence.embedded_dcff",
                   "provenance": provenance("python -m evidence.embedded_dcff"), "rows": rows},
                  f, indent=2)
    print(markdown_table({"rows": rows}))


if __name__ == "__main__":
    main()
