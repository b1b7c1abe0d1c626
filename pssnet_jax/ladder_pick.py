"""Choose the artifact of a PSS-Net budget ladder for a budget.

Standard library only, so it runs where the artifacts are deployed: ``--mode=export
--config.export.all=True`` copies this file beside ``ladder.json`` as ``pick_subnet.py``.

    python pick_subnet.py ladder.json --flops 4.0          # MFLOPs
    python pick_subnet.py ladder.json --latency_ms 2.0     # measured onnxruntime ms, batch 1
    python pick_subnet.py ladder.json --latency_ms 9 --batch 32
    python pick_subnet.py ladder.json --predicted_ms 2.0   # the latency table's prediction

    from pick_subnet import load, pick
    rung = pick(load("ladder.json"), flops=4.0)   # rung["path"]: the artifact to run

Among the rungs within the budget the one with the best selection accuracy (held-out images
by default, as the training run chose its subnets) wins; ties go to the larger subnet.
"""

import argparse
import json
import os

BUDGETS = ("flops", "latency_ms", "predicted_ms")


def load(path: str) -> dict:
    """The ladder of ``ladder.json`` with ``root`` (its folder) added."""
    with open(path) as f:
        ladder = json.load(f)
    ladder["root"] = os.path.dirname(os.path.abspath(path))
    return ladder


def cost(rung: dict, budget: str, batch: int = 1) -> float:
    """A rung's MFLOPs, measured onnxruntime ms at ``batch``, or predicted ms."""
    if budget == "flops":
        return rung["flops"] / 1e6
    if budget == "predicted_ms":
        value = rung.get("latency_ms")
        missing = "no predicted latency (the run used no latency table)"
    else:
        value = (rung.get("onnxruntime_ms") or {}).get(str(batch))
        missing = (f"no measured latency at batch {batch} (export with "
                   f"--config.export.format=onnx and onnxruntime installed)")
    if value is None:
        raise ValueError(f"rung {rung['directory']!r} has {missing}")
    return float(value)


def pick(ladder: dict, *, flops=None, latency_ms=None, predicted_ms=None, batch: int = 1):
    """The rung to run under one budget; ValueError below the smallest rung."""
    given = {k: v for k, v in zip(BUDGETS, (flops, latency_ms, predicted_ms)) if v is not None}
    if len(given) != 1:
        raise ValueError(f"give exactly one budget of {list(BUDGETS)}; got {sorted(given)}")
    (budget, limit), = given.items()
    rungs = ladder["rungs"]
    fitting = [r for r in rungs if cost(r, budget, batch) <= limit]
    if not fitting:
        smallest = min(cost(r, budget, batch) for r in rungs)
        raise ValueError(f"{budget} budget {limit:g} is below the smallest rung "
                         f"({smallest:.4g}); use at least that")
    best = max(fitting, key=lambda r: (-1.0 if r.get("selection_accuracy") is None
                                       else r["selection_accuracy"], r["flops"]))
    root = ladder.get("root", ".")
    return dict(best, path=os.path.join(root, best["directory"], best["artifact"]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ladder", help="path of ladder.json")
    for budget in BUDGETS:
        parser.add_argument(f"--{budget}", type=float)
    parser.add_argument("--batch", type=int, default=1, help="batch of --latency_ms")
    args = parser.parse_args(argv)
    try:
        rung = pick(load(args.ladder), flops=args.flops, latency_ms=args.latency_ms,
                    predicted_ms=args.predicted_ms, batch=args.batch)
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    print(json.dumps(rung, indent=2))


if __name__ == "__main__":
    main()
