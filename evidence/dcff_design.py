"""The DCFF study a reviewer asks for (issue #28 parts 1-2): the temperature schedule and the
run length crossed (2 x 2), and an L1-norm control pruned from the full-width network of the
same recipe, all on the evidence study's data and compact widths (evidence/study.py).

    python -m evidence.dcff_design                  # 5 seeds, every arm (hours on 2 CPU cores)
    python -m evidence.dcff_design --tiny           # its smoke-test form on the embedded subset
    python -m evidence.dcff_design --seeds=0,1      # some seeds (the rest later: runs are reused)
    python -m evidence.dcff_design --seeds=4 --arms="scratch 8,scratch 4"  # some arms

Arms, each seed (ResNet-20 on 28 px Fashion-MNIST, rates ``[0.5]*9+[0.0]*3``, cosine LR):

- ``baseline`` (full width) for 4 and for 8 epochs;
- DCFF ``faithful`` and ``stable`` with the ``epoch`` (official: T recomputed per epoch of
  this run) and the ``progress`` (T of progress x 300 paper epochs, every 3 steps) schedules,
  each for 4 and for 8 epochs;
- ``scratch`` (the compact widths, no fusion) for 4 and for 8 epochs;
- ``l1``: the full-width ``baseline`` of E epochs pruned by L1 norm (Li et al.) to the compact
  widths, fine-tuned for 4 epochs at lr 0.02: ``l1 4+4`` has the total training of the
  8-epoch arms, ``l1 8+4`` pre-trains as long as they do and trains 12 epochs in all.

Every run has its own workdir under ``--workdir``, reused only when its config.json equals the
run's config (``evidence.study.train_or_reuse``), and leaves its config.json, summary.json
and provenance.jsonl under ``--records`` (committed), reused on an equal config too, so the
study continues across sessions and machines and never mixes recipes. Writes
``results.json`` (rows, provenance, each run's config digest) and ``tables.md`` to ``--out``;
docs/RESULTS.md section 1c reads them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time

from common_jax.data import idx
from common_jax.provenance import config_digest, provenance
from evidence import study
from pssnet_dcff import api

LENGTHS = (4, 8)
SCHEDULES = ("epoch", "progress")
MODES = ("faithful", "stable")
FINETUNE_EPOCHS = 4
log = logging.getLogger(__name__)


def arms(epochs: tuple = LENGTHS, finetune: int = FINETUNE_EPOCHS) -> list[dict]:
    """Every arm of one seed: {"arm", "variant", "schedule", "epochs", "total_epochs"}, with
    ``pretrain_epochs`` for L1 (the baseline it is pruned from). Each L1 arm follows its
    baseline, so the checkpoint it is pruned from is there when it starts."""
    out = []
    for e in epochs:
        out += [{"arm": f"baseline {e}", "variant": "baseline", "schedule": None, "epochs": e,
                 "total_epochs": e},
                {"arm": f"l1 {e}+{finetune}", "variant": "l1", "schedule": None,
                 "epochs": finetune, "pretrain_epochs": e, "total_epochs": e + finetune}]
    out += [{"arm": f"{mode} {schedule} {e}", "variant": mode, "schedule": schedule,
             "epochs": e, "total_epochs": e}
            for e in epochs for schedule in SCHEDULES for mode in MODES]
    out += [{"arm": f"scratch {e}", "variant": "scratch", "schedule": None, "epochs": e,
             "total_epochs": e} for e in epochs]
    return out


def workdir_name(arm: dict, seed: int) -> str:
    return arm["arm"].replace(" ", "_").replace("+", "_ft") + f"_seed{seed}"


def arm_config(arm: dict, seed: int, scale: dict, data_dir: str, root: str,
               validate: bool = True):
    """The run's config (for L1: of its fine-tuning, from the pruned baseline under ``root``;
    ``validate=False`` before that export exists)."""
    extra = {"num_epochs": arm["epochs"]}
    if arm["schedule"] == "progress":
        extra.update(study.PROGRESS_SCHEDULE)
    if arm["variant"] == "l1":
        extra.update(init_from=pruned_dir(arm, seed, root),
                     **{"optimizer.learning_rate": scale["finetune_lr"]})
    return study.dcff_config(arm["variant"], seed, scale, data_dir, validate, **extra)


def _baseline_arm(arm: dict) -> dict:
    """The full-width arm an L1 arm is pruned from."""
    return {"arm": f"baseline {arm['pretrain_epochs']}", "variant": "baseline",
            "schedule": None, "epochs": arm["pretrain_epochs"]}


def pruned_dir(arm: dict, seed: int, root: str) -> str:
    """Where an L1 arm's pruned baseline is exported: beside that baseline's run."""
    return os.path.join(root, workdir_name(_baseline_arm(arm), seed), "pruned")


def prune_baseline(arm: dict, seed: int, scale: dict, data_dir: str, root: str) -> None:
    """The L1 arm's starting point: its baseline (trained first, as an arm of its own) pruned
    to the compact widths by L1 norm (``study.export_pruned``)."""
    pre = _baseline_arm(arm)
    pre_config = arm_config(pre, seed, scale, data_dir, root)
    pre_dir = os.path.join(root, workdir_name(pre, seed))
    study.train_or_reuse(pre_config, pre_dir)
    study.export_pruned(pre_config, pre_dir, pruned_dir(arm, seed, root))


def run_arm(arm: dict, seed: int, scale: dict, data_dir: str, root: str,
            train: bool = True, records: str | None = None) -> dict | None:
    """One arm of one seed: trained or reused; its row of results.json. With ``train``
    False only a finished run is read (None if there is none). ``records`` is the committed
    folder of finished runs' config.json and summary.json (``study.train_or_reuse``): a
    record of the arm's config is reused without its workdir."""
    config = arm_config(arm, seed, scale, data_dir, root, validate=False)
    name = workdir_name(arm, seed)
    workdir, record = os.path.join(root, name), records and os.path.join(records, name)
    summary = record and study.reusable_summary(config, record)
    if not summary and not train:
        summary = study.reusable_summary(config, workdir)
    elif not summary:
        if arm["variant"] == "l1":
            prune_baseline(arm, seed, scale, data_dir, root)
        config = arm_config(arm, seed, scale, data_dir, root)
        summary = study.train_or_reuse(config, workdir, record)
    if not summary:
        return None
    return {**arm, "seed": seed, "test_accuracy": summary["eval_accuracy"],
            "flops": summary["flops"], "params": summary["params"],
            "wall_time_s": summary["wall_time_s"], "config_sha256": config_digest(config),
            "workdir": workdir}


def accuracies(rows: list[dict]) -> dict:
    """arm -> {seed: test accuracy}."""
    out: dict = {}
    for row in rows:
        out.setdefault(row["arm"], {})[row["seed"]] = row["test_accuracy"]
    return out


def arm_table(rows: list[dict]) -> str:
    """Per arm: total epochs, MFLOPs, test accuracy % mean ± std over seeds, per seed."""
    lines = ["| arm | schedule | training epochs (total) | MFLOPs | test accuracy % "
             "(mean ± std, n) | per seed |", "|---|---|---|---|---|---|"]
    seen = []
    for row in rows:
        if row["arm"] not in seen:
            seen.append(row["arm"])
    for name in seen:
        runs = [r for r in rows if r["arm"] == name]
        first = runs[0]
        epochs = (f"{first['pretrain_epochs']} + {first['epochs']} fine-tuning"
                  if first["variant"] == "l1" else str(first["epochs"]))
        lines.append(f"| {first['variant']} | {first['schedule'] or '-'} | {epochs} "
                     f"({first['total_epochs']}) | {first['flops'] / 1e6:.2f} | "
                     f"{study.mean_std(r['test_accuracy'] for r in runs)} (n={len(runs)}) | "
                     + ", ".join(f"{100 * r['test_accuracy']:.2f}" for r in runs) + " |")
    return "\n".join(lines)


def comparisons(lengths: tuple = LENGTHS, finetune: int = FINETUNE_EPOCHS) -> list[tuple]:
    """(question, arm A, arm B) of the paired tables: the schedule at equal length, the
    length at equal schedule, and DCFF and scratch against the controls."""
    short, long = lengths
    out = [("schedule at equal length", f"{m} progress {e}", f"{m} epoch {e}")
           for e in lengths for m in MODES]
    out += [("length at equal schedule", f"{m} {s} {long}", f"{m} {s} {short}")
            for s in SCHEDULES for m in MODES]
    out += [("length at equal schedule", f"scratch {long}", f"scratch {short}")]
    for e in lengths:
        out += [("against the controls", f"{m} {s} {e}", f"scratch {e}")
                for s in SCHEDULES for m in MODES]
    l1_equal, l1_long = f"l1 {short}+{finetune}", f"l1 {long}+{finetune}"
    for control in (l1_equal, l1_long):
        out += [("against the controls", f"{m} {s} {long}", control)
                for s in SCHEDULES for m in MODES]
        out.append(("against the controls", f"scratch {long}", control))
    return out


def paired_table(rows: list[dict], lengths: tuple = LENGTHS,
                 finetune: int = FINETUNE_EPOCHS) -> str:
    """The comparisons of ``comparisons`` paired by seed (seeds both arms have): n, mean
    difference in points, paired t-test and Wilcoxon signed-rank p-values."""
    acc = accuracies(rows)
    lines = ["| question | comparison | n | mean difference (points) | paired t-test p | "
             "Wilcoxon p |", "|---|---|---|---|---|---|"]
    for question, a, b in comparisons(lengths, finetune):
        cells = _paired(acc, a, b)
        if cells[2] != "-":  # at least 2 pairs
            lines.append(f"| {question} | {a} - {b} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _paired(acc: dict, a: str, b: str) -> list[str]:
    """[n, mean difference, t-test p, Wilcoxon p] of arm a - arm b over the seeds both have
    (``acc``: ``accuracies``); '-' for the statistics with fewer than 2 pairs."""
    seeds = sorted(set(acc.get(a, {})) & set(acc.get(b, {})))
    return study.paired_cells([acc[a][s] for s in seeds],
                              [acc[b][s] for s in seeds]).split(" | ")


def difference(rows: list[dict], a: str, b: str) -> str:
    """'+4.20 points (p 0.00132)': arm a - arm b paired by seed, two-sided paired t-test."""
    _, diff, t_p, _ = _paired(accuracies(rows), a, b)
    return f"{diff} points (p {t_p})"


def arm_mean(rows: list[dict], arm: str) -> str:
    """'89.89 ± 0.06%': an arm's test accuracy over its seeds."""
    return study.mean_std(r["test_accuracy"] for r in rows if r["arm"] == arm) + "%"


def schedule_sentence(rows: list[dict], lengths: tuple = LENGTHS) -> str:
    """docs/RESULTS.md section 1c: progress - epoch schedule at each length, per DCFF mode."""
    parts = [f"at {e} epochs: faithful "
             f"{difference(rows, f'faithful progress {e}', f'faithful epoch {e}')}, stable "
             f"{difference(rows, f'stable progress {e}', f'stable epoch {e}')}" for e in lengths]
    return "the progress schedule against the per-epoch one " + "; ".join(parts)


def length_sentence(rows: list[dict], lengths: tuple = LENGTHS) -> str:
    """docs/RESULTS.md section 1c: the long - short length at each schedule, and scratch's."""
    short, long = lengths
    parts = [f"{m} {difference(rows, f'{m} epoch {long}', f'{m} epoch {short}')} with the "
             f"per-epoch and {difference(rows, f'{m} progress {long}', f'{m} progress {short}')}"
             f" with the progress schedule" for m in MODES]
    return (f"{long} epochs against {short}: " + ", ".join(parts) +
            f", scratch {difference(rows, f'scratch {long}', f'scratch {short}')}")


def control_sentence(rows: list[dict], lengths: tuple = LENGTHS,
                     finetune: int = FINETUNE_EPOCHS) -> str:
    """docs/RESULTS.md section 1c and README: the 8-epoch progress DCFF arms and scratch
    against L1 pruned from the full-width network of the same length (more training in all)
    and from the one of half the length (the same training in all)."""
    short, long = lengths
    text = []
    for pre, words in ((long, f"trained as long as DCFF ({long} epochs; {long + finetune} in "
                              f"all)"),
                       (short, f"of {short} epochs ({short + finetune} in all, as DCFF)")):
        control = f"l1 {pre}+{finetune}"
        text.append(
            f"L1 pruned from the full-width network {words} and fine-tuned for {finetune} "
            f"reaches {arm_mean(rows, control)}; against it faithful "
            f"{difference(rows, f'faithful progress {long}', control)}, stable "
            f"{difference(rows, f'stable progress {long}', control)}, scratch "
            f"{difference(rows, f'scratch {long}', control)}")
    return "; ".join(text)


def scratch_sentence(rows: list[dict], lengths: tuple = LENGTHS) -> str:
    """docs/RESULTS.md section 1c and README: DCFF - scratch at each length and schedule."""
    parts = [f"{m} {s} {e} {difference(rows, f'{m} {s} {e}', f'scratch {e}')}"
             for e in lengths for s in SCHEDULES for m in MODES]
    return "DCFF against scratch of the same length: " + ", ".join(parts)


def claim_sentence(rows: list[dict], lengths: tuple = LENGTHS,
                   finetune: int = FINETUNE_EPOCHS) -> str:
    """README's DCFF claim: the setup in numbers, the L1 controls (``control_sentence``), the
    long progress arms against scratch and the schedule (``schedule_sentence``)."""
    short, long = lengths
    seeds = len({r["seed"] for r in rows})
    flops = {r["variant"]: r["flops"] / 1e6 for r in rows}
    against = ", ".join(f"{m} {difference(rows, f'{m} progress {long}', f'scratch {long}')}"
                        for m in MODES)
    return (f"ResNet-20 at {flops['scratch']:.2f} of its {flops['baseline']:.2f} MFLOPs on the "
            f"full Fashion-MNIST over {seeds} seeds, DCFF for {long} epochs with the "
            f"temperature by training progress: {control_sentence(rows, lengths, finetune)}. "
            f"Against training the same widths from scratch for as long: {against}. A short "
            f"run needs the progress schedule: {schedule_sentence(rows, lengths)}")


def paper_scale_sentence() -> str:
    """README's and docs/RESULTS.md's scale of the paper's CIFAR-10 runs: the epochs of the
    ResNet-56 DCFF config."""
    config = api.load_config("configs/dcff/resnet56_cifar10.py")
    return (f"the paper's CIFAR-10 runs (configs/dcff/resnet56_cifar10.py) train "
            f"{config.num_epochs} epochs")


def bonferroni_sentence(rows: list[dict], lengths: tuple = LENGTHS,
                        finetune: int = FINETUNE_EPOCHS) -> str:
    """docs/RESULTS.md section 1c: which comparisons of the paired table keep a t-test p under
    0.05 / (the number of comparisons)."""
    acc = accuracies(rows)
    tested = [(a, b, _paired(acc, a, b)) for _, a, b in comparisons(lengths, finetune)]
    tested = [(a, b, cells) for a, b, cells in tested if cells[2] != "-"]
    bound = 0.05 / len(tested)
    kept = [f"{a} - {b} ({cells[1]})" for a, b, cells in tested if float(cells[2]) < bound]
    return (f"{len(kept)} of the {len(tested)} paired comparisons keep a t-test p under the "
            f"Bonferroni bound 0.05 / {len(tested)} = {bound:.2g}"
            + (": " + ", ".join(kept) if kept else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="smoke-test form (embedded data)")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma list")
    parser.add_argument("--data_dir", default=idx.DEFAULT_FASHION_MNIST_DIR,
                        help="the full Fashion-MNIST IDX files")
    parser.add_argument("--workdir", default="runs/dcff_design")
    parser.add_argument("--out", default=None,
                        help="default: docs/evidence/dcff_design (--tiny: <workdir>/out)")
    parser.add_argument("--records", default=None,
                        help="committed config.json + summary.json of every finished run, "
                             "reused on an equal config (default: <out>/runs, none with "
                             "--tiny; '' for none)")
    parser.add_argument("--arms", default="",
                        help="comma list of arm names to run (e.g. 'scratch 8,stable epoch 4'; "
                             "default every arm), so two processes can share a seed's arms")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: tables of the finished runs only")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.out is None:
        args.out = (os.path.join(args.workdir, "out") if args.tiny
                    else "docs/evidence/dcff_design")
    if args.records is None:
        args.records = "" if args.tiny else os.path.join(args.out, "runs")
    scale = study.TINY if args.tiny else study.FULL
    lengths, finetune = ((1, 2), 1) if args.tiny else (LENGTHS, FINETUNE_EPOCHS)
    names = [a["arm"] for a in arms(lengths, finetune)]
    chosen = [a.strip() for a in args.arms.split(",") if a.strip()] or names
    unknown = [a for a in chosen if a not in names]
    if unknown:
        raise SystemExit(f"--arms: unknown arm(s) {', '.join(map(repr, unknown))}; "
                         f"allowed: {', '.join(names)}")
    if not args.tiny:
        idx.load_idx_split(args.data_dir, "t10k")  # a clear error before hours of work
    study.quiet_logging()
    command = shlex.join(["python", "-m", "evidence.dcff_design", *sys.argv[1:]])
    start, rows = time.perf_counter(), []
    for seed in seeds:
        for arm in [a for a in arms(lengths, finetune) if a["arm"] in chosen]:
            if not args.report:
                log.info("dcff_design: %s seed %d", arm["arm"], seed)
            row = run_arm(arm, seed, scale, args.data_dir, args.workdir, not args.report,
                          args.records or None)
            rows += [row] if row else []
    tables = ["## DCFF: schedule x length, and the L1 control", "", arm_table(rows), "",
              paired_table(rows, lengths, finetune), ""]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"command": command, "provenance": provenance(command), "seeds": seeds,
                   "lengths": list(lengths), "finetune_epochs": finetune,
                   "wall_time_s": time.perf_counter() - start, "rows": rows}, f, indent=2)
    with open(os.path.join(args.out, "tables.md"), "w") as f:
        f.write("\n".join(tables))
    print("\n".join(tables))


if __name__ == "__main__":
    main()
