"""The embedded PSS-Net recipe sweep (issue #17 part 3): candidate learning rates and warm-ups
of configs/pssnet/embedded.py over several seeds, each with its standalone control
(configs/pssnet/embedded_alone.py: the max net trained alone with the same recipe).

    python -m evidence.recipe_sweep                       # every candidate, seeds 0-4
    python -m evidence.recipe_sweep --candidates=lr0.0375_w1 --seeds=0,1

Every run has its own workdir under ``--workdir`` and is skipped when its summary exists
(``evidence.study.train_or_reuse``), so the sweep can run in parts. Per run it records the
max net's test accuracy, every kept subnet, the first logged training loss and the largest
training loss after the warm-up (logged every step), and writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from evidence.study import quiet_logging, train_or_reuse
from pssnet_dcff import api

CANDIDATES = {
    "lr0.0375_w1": {"optimizer.learning_rate": 0.0375, "optimizer.warmup_epochs": 1},
    "lr0.075_w1": {"optimizer.learning_rate": 0.075, "optimizer.warmup_epochs": 1},
    "lr0.1": {"optimizer.learning_rate": 0.1, "optimizer.warmup_epochs": 0},
}
SUPERNET, ALONE = "configs/pssnet/embedded.py", "configs/pssnet/embedded_alone.py"

log = logging.getLogger(__name__)


def loss_profile(workdir: str, warmup_steps: int) -> dict:
    """First logged training loss and the largest one after ``warmup_steps``."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    losses = [(r["step"], r["train_loss"]) for r in rows if "train_loss" in r]
    after = [loss for step, loss in losses if step > warmup_steps]
    return {"first_train_loss": losses[0][1],
            "max_train_loss_after_warmup": max(after) if after else None}


def run_one(candidate: str, seed: int, root: str) -> dict:
    overrides = {**CANDIDATES[candidate], "seed": seed, "log_every_steps": 1}
    row = {"candidate": candidate, "seed": seed, **CANDIDATES[candidate]}
    supernet_dir = os.path.join(root, f"{candidate}_seed{seed}")
    config = api.load_config(SUPERNET, **overrides)
    summary = train_or_reuse(config, supernet_dir)
    steps_per_epoch = summary["step"] // config.num_epochs
    warmup = int(config.optimizer.warmup_epochs * steps_per_epoch)
    row.update(loss_profile(supernet_dir, warmup), wall_time_s=summary["wall_time_s"],
               subnets=api.kept_subnets(supernet_dir))
    row["max_net_test_accuracy"] = row["subnets"][-1]["test_accuracy"]
    alone_dir = os.path.join(root, f"alone_{candidate}_seed{seed}")
    alone = train_or_reuse(api.load_config(ALONE, **overrides), alone_dir)
    row["alone_test_accuracy"] = alone["eval_accuracy"]
    row["alone_wall_time_s"] = alone["wall_time_s"]
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--workdir", default="runs/recipe_sweep")
    parser.add_argument("--out", default="docs/evidence/recipe_sweep.json")
    args = parser.parse_args()
    candidates = args.candidates.split(",")
    unknown = [c for c in candidates if c not in CANDIDATES]
    if unknown:
        raise SystemExit(f"--candidates: unknown {unknown}; expected some of {list(CANDIDATES)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    quiet_logging()
    rows = []
    for seed in seeds:
        for candidate in candidates:
            log.info("recipe sweep: %s seed %d", candidate, seed)
            rows.append(run_one(candidate, seed, args.workdir))
            os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
            with open(args.out, "w") as f:
                json.dump({"command": "python -m evidence.recipe_sweep", "rows": rows}, f,
                          indent=2)
    print(f"wrote {args.out} ({len(rows)} runs)")


if __name__ == "__main__":
    main()
