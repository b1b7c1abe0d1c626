"""The evidence study: both papers' claims at small scale, with controls, several seeds,
tables and plots (docs/RESULTS.md reads them).

    python -m evidence.study            # the study (about 50 minutes on 2 CPU cores)
    python -m evidence.study --tiny     # its smoke-test form on the embedded subset
    python -m evidence.study --only=dcff --dcff_schedule=progress --dcff_epochs=8 \
        --seeds=0,1,2,3,4 --workdir=runs/evidence_progress --out=docs/evidence/dcff_progress
                                        # DCFF at the paper's proportions (issue #17 part 4)

1. DCFF: a ResNet-20 on 28 px Fashion-MNIST (15,000 training images of the full set, all
   10,000 test images; IDX files from ``--data_dir``), compact rates ``[0.5]*9+[0.0]*3``
   (every block's first conv halved, residual widths kept: 15.5 of 30.8 MFLOPs, -50%), 4
   epochs, cosine LR. Variants: the full-width ``baseline``; DCFF ``faithful`` and ``stable``;
   ``scratch`` (the same compact widths, no fusion); ``l1`` (Li et al.'s L1-norm filter
   pruning of the baseline trained for half the epochs, then fine-tuned for the other half at
   lr 0.02: the same total number of steps). Three seeds each.
2. PSS-Net: the embedded default (configs/pssnet/embedded.py) for 4 epochs with prioritized
   pool sampling against the same supernet with the middle subnet drawn uniformly from the
   structure space (the US-Net sandwich; its scores still fill the pools so that the final
   selection is the same). Three seeds each; FLOPs-accuracy curves of the kept subnets.

``--dcff_schedule=progress`` runs DCFF with the temperature a function of training progress
(``dcff.schedule='progress'``, ``paper_epochs`` 300, recomputed every 3 steps), so that the
soft phase (T < 4,600) is the paper's share of training (0.3%) instead of a whole epoch;
``--dcff_epochs`` and ``--seeds`` change the run length and the seeds. The tables then add a
paired comparison over seeds (t-test and Wilcoxon signed-rank) of each DCFF mode against
scratch and L1 at equal FLOPs.

Every run has its own workdir under ``--workdir`` and is skipped when its summary exists and
its config.json equals the run's config, so an interrupted study continues; a workdir of
another config stops the study with the differing keys. Writes ``results.json``, ``tables.md``, ``dcff.png`` and
``pssnet.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import statistics
import sys
import time

from common_jax import data, export as export_lib, files, paths
from common_jax.provenance import provenance
from common_jax.data import idx
from dcff_jax import architectures
from evidence.l1_pruning import prune_first_convs
from pssnet_dcff import api

log = logging.getLogger(__name__)
DCFF_RATES = "[0.5]*9+[0.0]*3"
DCFF_VARIANTS = ("baseline", "faithful", "stable", "scratch", "l1")
# the temperature as a function of training progress, recomputed every 3 steps (section 1b)
PROGRESS_SCHEDULE = {"dcff.schedule": "progress", "dcff.paper_epochs": 300,
                     "dcff.update_every_steps": 3}
SAMPLINGS = ("prioritized", "uniform")
FULL = {
    "seeds": (0, 1, 2),
    "pss_seeds": (0, 1, 2),
    "dcff": {"dataset.name": "fashion_mnist_idx", "dataset.num_train_examples": 15_000,
             "dataset.num_eval_examples": 0, "num_epochs": 4, "log_every_steps": 50},
    "pss": {"num_epochs": 4},
    "finetune_lr": 0.02,
}
TINY = {
    "seeds": (0, 1),
    "pss_seeds": (0,),
    "dcff": {"dataset.name": "embedded", "dataset.num_train_examples": 512,
             "dataset.num_eval_examples": 200, "batch_size": 64, "num_epochs": 2,
             "log_every_steps": 4, "async_checkpoints": False},
    "pss": {"num_epochs": 2, "batch_size": 64, "dataset.num_train_examples": 640,
            "dataset.holdout_examples": 128, "dataset.num_eval_examples": 256,
            "pssnet.resolutions": (24, 28, 4), "pssnet.targets": (3.5, 6.0, 0.5),
            "pssnet.map_samples": 4000, "pssnet.pool_size": 2, "pssnet.topk": 2,
            "pssnet.recal_batches": 2, "async_checkpoints": False},
    "finetune_lr": 0.02,
}


def train_or_reuse(config, workdir: str, record: str | None = None) -> dict:
    """The run's summary: trained now, or read from a finished earlier run. A workdir
    whose config.json differs from ``config`` in any key is neither reused nor resumed: the
    study stops naming the differing keys (use another ``--workdir``), so runs of an older
    recipe never mix into new tables. ``record`` is a committed folder holding a finished
    run's config.json and summary.json (``keep_record``): one of the same config is reused
    without training, one of another config stops the study the same way, and a run trained
    now leaves its record there, so a study continues on a machine whose runs/ is gone."""
    for folder in ([record] if record else []) + [workdir]:
        summary = reusable_summary(config, folder)
        if summary is not None:
            return summary
    summary = api.train(config, workdir).summary
    if not summary.get("finished", True):
        raise SystemExit(f"{workdir}: stopped at step {summary['step']} (preempted); "
                         "rerun the same command to continue from its checkpoint")
    if record:
        keep_record(workdir, record)
    return summary


def reusable_summary(config, workdir: str) -> dict | None:
    """The summary of a finished run of exactly ``config`` in ``workdir``, None when there
    is none; stops naming the differing keys when ``workdir`` holds another config."""
    changes = files.config_changes(workdir, config)
    if changes:
        raise SystemExit(f"{workdir}: holds a run of another config ({files.change_text(changes)}"
                         f"); use another --workdir for this study, or the config it was run "
                         f"with")
    return finished_summary(workdir)


def keep_record(workdir: str, record: str) -> None:
    """Copies a finished run's config.json, summary.json and provenance.jsonl (the commit
    and command it ran at) to ``record``."""
    paths.makedirs(record)
    for name in ("config.json", "summary.json", "provenance.jsonl"):
        paths.write_text(paths.join(record, name), paths.read_text(paths.join(workdir, name)))


def finished_summary(workdir: str) -> dict | None:
    """The summary.json of a run in ``workdir`` that finished (not preempted), else None."""
    path = paths.join(workdir, "summary.json")
    if not paths.exists(path):
        return None
    summary = json.loads(paths.read_text(path))
    return summary if summary.get("finished", True) and not summary.get("preempted") else None


def quiet_logging() -> None:
    """INFO lines with a time stamp; orbax's and JAX's notes silenced."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S", force=True)
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax's per-save notes
    logging.getLogger("jax").setLevel(logging.WARNING)


def dcff_config(variant: str, seed: int, scale: dict, data_dir: str, validate: bool = True,
                **extra):
    overrides = {**scale["dcff"], "seed": seed, **extra}
    if overrides["dataset.name"] == "fashion_mnist_idx":
        overrides["dataset.data_dir"] = data_dir
    if variant == "baseline":
        return api.load_config("configs/baselines/embedded.py", validate=validate, **overrides)
    mode = "scratch" if variant == "l1" else variant
    return api.load_config("configs/dcff/embedded.py", mode, validate=validate,
                           **{"dcff.rates": DCFF_RATES}, **scale.get("dcff_schedule", {}),
                           **overrides)


def export_pruned(pre_config, pre_dir: str, pruned_dir: str) -> None:
    """The full-width run of ``pre_config`` in ``pre_dir`` pruned by L1 norm to the compact
    widths of DCFF_RATES and exported to ``pruned_dir`` (kept if already there)."""
    if os.path.exists(os.path.join(pruned_dir, "model.json")):
        return
    info = data.dataset_info(pre_config.dataset.name)
    compact, _ = architectures.compact_arch("resnet20", DCFF_RATES, num_classes=info.num_classes,
                                            in_channels=info.channels)
    _, variables, _ = export_lib.load_exported(api.export(pre_config, pre_dir))
    export_lib.export_model(pruned_dir, compact, prune_first_convs(variables, compact),
                            image_size=data.image_size(pre_config.dataset), info=info)


def run_l1(seed: int, scale: dict, data_dir: str, root: str) -> dict:
    """Pre-train at full width for half the epochs, prune conv1s by L1 norm, fine-tune the
    compact model for the other half (same total steps as every other variant)."""
    epochs = scale["dcff"]["num_epochs"]
    pre = dcff_config("baseline", seed, scale, data_dir, num_epochs=epochs // 2)
    pre_dir = os.path.join(root, f"l1_pretrain_seed{seed}")
    pre_summary = train_or_reuse(pre, pre_dir)
    pruned_dir = os.path.join(pre_dir, "pruned")
    export_pruned(pre, pre_dir, pruned_dir)
    tune = dcff_config("l1", seed, scale, data_dir, num_epochs=epochs - epochs // 2,
                       init_from=pruned_dir,
                       **{"optimizer.learning_rate": scale["finetune_lr"]})
    summary = dict(train_or_reuse(tune, os.path.join(root, f"l1_seed{seed}")))
    summary["wall_time_s"] += pre_summary["wall_time_s"]
    return summary


def learning_curve(workdir: str) -> list[dict]:
    """The run's logged training losses and evaluations: [{"step", "train_loss" or
    "eval_accuracy"}] from its metrics.jsonl (the raw numbers behind the curves the docs cite)."""
    curve = []
    text = paths.read_text(paths.join(workdir, "metrics.jsonl"))
    for line in filter(str.strip, text.splitlines()):
        row = json.loads(line)
        curve += [{"step": row["step"], key: row[key]}
                  for key in ("train_loss", "eval_accuracy") if key in row]
    return curve


def run_dcff(scale: dict, data_dir: str, root: str) -> list[dict]:
    """Every DCFF variant and seed; ``curve`` is the run's learning curve (for L1, of its
    fine-tuning part)."""
    rows = []
    for seed in scale["seeds"]:
        for variant in DCFF_VARIANTS:
            log.info("evidence: DCFF %s seed %d", variant, seed)
            workdir = os.path.join(root, f"{variant}_seed{seed}")
            if variant == "l1":
                summary = run_l1(seed, scale, data_dir, root)
            else:
                summary = train_or_reuse(dcff_config(variant, seed, scale, data_dir), workdir)
            rows.append({"variant": variant, "seed": seed,
                         "test_accuracy": summary["eval_accuracy"], "flops": summary["flops"],
                         "params": summary["params"], "wall_time_s": summary["wall_time_s"],
                         "curve": learning_curve(workdir)})
    return rows


def run_pss(scale: dict, root: str) -> list[dict]:
    rows = []
    for seed in scale["pss_seeds"]:
        for sampling in SAMPLINGS:
            log.info("evidence: PSS-Net %s seed %d", sampling, seed)
            config = api.load_config("configs/pssnet/embedded.py", seed=seed,
                                     **{**scale["pss"], "pssnet.sampling": sampling})
            workdir = os.path.join(root, f"pss_{sampling}_seed{seed}")
            summary = train_or_reuse(config, workdir)
            rows.append({"sampling": sampling, "seed": seed,
                         "wall_time_s": summary["wall_time_s"],
                         "subnets": api.kept_subnets(workdir)})
    return rows


def paired_cells(ours: list[float], theirs: list[float]) -> str:
    """Table cells of a comparison paired by seed: n, mean difference in points, two-sided
    paired t-test and Wilcoxon signed-rank p-values ('-' with fewer than 2 pairs)."""
    from scipy import stats
    diff = [100 * (a - b) for a, b in zip(ours, theirs)]
    if len(diff) < 2:
        return f"{len(diff)} | - | - | -"
    t_p = stats.ttest_rel(ours, theirs).pvalue
    w_p = stats.wilcoxon(diff).pvalue if any(diff) else 1.0
    return f"{len(diff)} | {statistics.mean(diff):+.2f} | {t_p:.3g} | {w_p:.3g}"


def paired_table(rows: list[dict]) -> str:
    """Each DCFF mode against scratch and L1 (same compact widths and FLOPs), paired by seed:
    mean difference, two-sided paired t-test and Wilcoxon signed-rank p-values."""
    acc = {(r["variant"], r["seed"]): r["test_accuracy"] for r in rows}
    lines = ["| comparison | n | mean difference (points) | paired t-test p | Wilcoxon p |",
             "|---|---|---|---|---|"]
    for mode in ("faithful", "stable"):
        for control in ("scratch", "l1"):
            seeds = sorted(s for v, s in acc if v == mode and (control, s) in acc)
            if len(seeds) < 2:
                continue
            cells = paired_cells([acc[(mode, s)] for s in seeds],
                                 [acc[(control, s)] for s in seeds])
            lines.append(f"| {mode} - {control} | {cells} |")
    seeds = sorted(s for v, s in acc if v == "scratch" and ("l1", s) in acc)
    if len(seeds) >= 2:  # how strong the L1 control is: the same widths trained from scratch
        cells = paired_cells([acc[("scratch", s)] for s in seeds],
                             [acc[("l1", s)] for s in seeds])
        lines.append(f"| scratch - l1 | {cells} |")
    return "\n".join(lines)


def dcff_means_sentence(rows: list[dict]) -> str:
    """README's summary of a DCFF study's means: 'DCFF a-b%, L1 c%, scratch d%, full width
    e%' (test accuracy means over seeds; the variants the study ran)."""
    means = {v: 100 * statistics.mean(r["test_accuracy"] for r in rows if r["variant"] == v)
             for v in DCFF_VARIANTS if any(r["variant"] == v for r in rows)}
    modes = sorted(means[m] for m in ("faithful", "stable"))
    parts = [f"DCFF {modes[0]:.2f}-{modes[1]:.2f}%"]
    parts += [f"{label} {means[v]:.2f}%" for v, label in (("l1", "L1"), ("scratch", "scratch"),
                                                           ("baseline", "full width"))
              if v in means]
    return ", ".join(parts)


def dcff_claim_sentence(rows: list[dict]) -> str:
    """README's summary of a DCFF study's paired table: each mode against L1 and scratch,
    and scratch against L1 (the strength of the L1 control), mean points and t-test p."""
    cells = {}
    for line in paired_table(rows).splitlines()[2:]:
        parts = [p.strip() for p in line.strip("| ").split(" | ")]
        cells[parts[0]] = parts

    diff = {name: cells[name][2] for name in cells}
    p = {name: cells[name][3] for name in cells}
    return (f"DCFF beats this L1 control by {diff['faithful - l1']} (faithful) and "
            f"{diff['stable - l1']} (stable) points (paired t-test p {p['faithful - l1']} and "
            f"{p['stable - l1']}), but training the same widths from scratch beats it by more "
            f"({diff['scratch - l1']} points, p {p['scratch - l1']}), and DCFF does not beat "
            f"scratch ({diff['faithful - scratch']} and {diff['stable - scratch']} points, p "
            f"{p['faithful - scratch']} and {p['stable - scratch']})")


def wins_sentence(rows: list[dict], control: str = "l1") -> str:
    """On how many seeds each DCFF mode beats ``control`` (seeds both ran)."""
    acc = {(r["variant"], r["seed"]): r["test_accuracy"] for r in rows}
    parts = []
    for mode in ("stable", "faithful"):
        seeds = [s for v, s in acc if v == mode and (control, s) in acc]
        wins = sum(acc[(mode, s)] > acc[(control, s)] for s in seeds)
        parts.append(f"{mode} on {wins} of {len(seeds)}")
    return f"DCFF beats {control.upper()} seed by seed: " + ", ".join(parts)


def mean_std(values) -> str:
    values = list(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * std:.2f}"


def dcff_table(rows: list[dict]) -> str:
    lines = ["| variant | MFLOPs | params | test accuracy % (mean ± std) | per seed | minutes |",
             "|---|---|---|---|---|---|"]
    for variant in DCFF_VARIANTS:
        runs = [r for r in rows if r["variant"] == variant]
        if not runs:
            continue
        seeds = ", ".join(f"{100 * r['test_accuracy']:.2f}" for r in runs)
        minutes = statistics.mean(r["wall_time_s"] for r in runs) / 60
        lines.append(f"| {variant} | {runs[0]['flops'] / 1e6:.2f} | {runs[0]['params']:,} | "
                     f"{mean_std(r['test_accuracy'] for r in runs)} (n={len(runs)}) | "
                     f"{seeds} | {minutes:.1f} |")
    return "\n".join(lines)


def curve_table(rows: list[dict], seed: int, variants=("faithful", "stable", "scratch")) -> str:
    """Learning curves of one seed: the first logged training loss and the test accuracy %
    after every evaluation (once per epoch), per variant (the raw numbers of ``curve``)."""
    runs = {r["variant"]: r for r in rows if r["seed"] == seed and r["variant"] in variants}
    curves = {v: runs[v]["curve"] for v in variants if v in runs}
    evals = {v: [c for c in curve if "eval_accuracy" in c] for v, curve in curves.items()}
    first = {v: next(c for c in curve if "train_loss" in c) for v, curve in curves.items()}
    count = len(next(iter(evals.values())))
    lines = ["| variant (seed %d) | training loss at step %d | test %% after epoch 1 | %s |" % (
        seed, next(iter(first.values()))["step"], " | ".join(map(str, range(2, count + 1)))),
        "|---|---|" + "---|" * count]
    for v in curves:
        lines.append(f"| {v} | {first[v]['train_loss']:.2f} | "
                     + " | ".join(f"{100 * c['eval_accuracy']:.1f}" for c in evals[v]) + " |")
    return "\n".join(lines)


def duration_sentence(results: dict) -> str:
    """How long a study's runs took in all (``wall_time_s`` of its results.json)."""
    return f"The whole study took {results['wall_time_s'] / 60:.0f} minutes"


def rerun_sentence(rerun: list[dict], study: list[dict], seed: int = 0,
                   variants=("faithful", "stable", "scratch")) -> str:
    """How a rerun of one seed compares with the study's run of that seed: the largest
    difference of final test accuracy over ``variants``, and the rerun's accuracies."""
    old = {r["variant"]: r["test_accuracy"] for r in study if r["seed"] == seed}
    new = {r["variant"]: r["test_accuracy"] for r in rerun
           if r["seed"] == seed and r["variant"] in variants}
    gap = max(abs(new[v] - old[v]) for v in new)
    return (f"its final accuracies differ from the table's seed {seed} by at most "
            f"{100 * gap:.1f} points: " + ", ".join(f"{v} {100 * a:.2f}%"
                                                     for v, a in new.items()))


def first_epoch_sentence(rows: list[dict], seed: int = 0) -> str:
    """Seed ``seed``'s first epoch, DCFF (faithful, stable) against scratch: the first
    logged training loss (chance: ln 10), the test accuracy after epoch 1, and faithful's
    after epoch 2 (``curve``)."""
    runs = {r["variant"]: r["curve"] for r in rows if r["seed"] == seed}
    first = {v: next(c for c in curve if "train_loss" in c) for v, curve in runs.items()}
    evals = {v: [c["eval_accuracy"] for c in curve if "eval_accuracy" in c]
             for v, curve in runs.items()}
    fused = ("faithful", "stable")
    losses = sorted(first[v]["train_loss"] for v in fused)
    accs = sorted(100 * evals[v][0] for v in fused)
    return (f"the training loss after {first['scratch']['step']} steps is "
            f"{losses[0]:.2f}-{losses[1]:.2f} (chance: {math.log(10):.2f}) against "
            f"{first['scratch']['train_loss']:.2f} for scratch, and the test accuracy after "
            f"the epoch is {accs[0]:.1f}-{accs[1]:.1f}% against "
            f"{100 * evals['scratch'][0]:.1f}%; from epoch 1 on (high temperature, nearly "
            f"one-hot fusion) the fused models learn but never catch up, and faithful falls "
            f"from {100 * evals['faithful'][0]:.1f}% to {100 * evals['faithful'][1]:.1f}% "
            f"after epoch 2")


def by_target(runs: list[dict]) -> dict:
    """target -> [(flops, test accuracy) per seed]."""
    out: dict = {}
    for run in runs:
        for entry in run["subnets"]:
            out.setdefault(str(entry["target"]), []).append((entry["flops"],
                                                            entry["test_accuracy"]))
    return out


def target_order(key: str) -> float:
    return -1.0 if key == "min" else float("inf") if key == "max" else float(key)


def middle_targets(subnets: list[dict]) -> set:
    """The FLOPs targets (not min/max) a run kept a subnet for."""
    return {e["target"] for e in subnets if e["target"] not in ("min", "max")}


def common_targets(subnet_lists) -> list:
    """The targets every one of ``subnet_lists`` kept, ascending: a mean over kept subnets
    compares runs only over these (a run that kept no subnet for a target would otherwise
    average over other targets)."""
    return sorted(set.intersection(*[middle_targets(s) for s in subnet_lists]))


def kept_mean(subnets: list[dict], targets, key: str = "test_accuracy") -> float:
    """Mean ``key`` of a run's kept subnets at ``targets``."""
    return statistics.mean(e[key] for e in subnets if e["target"] in targets)


def pss_table(rows: list[dict]) -> str:
    per = {s: by_target([r for r in rows if r["sampling"] == s]) for s in SAMPLINGS}
    targets = sorted(set().union(*[set(p) for p in per.values()]), key=target_order)
    lines = ["| target (MFLOPs) | " + " | ".join(f"{s}: test accuracy % (mean ± std, n)"
                                                   for s in SAMPLINGS) + " |",
             "|---|" + "---|" * len(SAMPLINGS)]
    for target in targets:
        cells = []
        for sampling in SAMPLINGS:
            points = per[sampling].get(target, [])
            cells.append(f"{mean_std(a for _, a in points)} ({len(points)})" if points
                         else "-")
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    common, means = common_targets(r["subnets"] for r in rows), []
    for sampling in SAMPLINGS:
        kept = [kept_mean(r["subnets"], common) for r in rows if r["sampling"] == sampling]
        means.append(f"{mean_std(kept)} ({len(kept)})")
    lines.append(f"| mean over kept subnets ({len(common)} targets every run kept) | "
                 + " | ".join(means) + " |")
    return "\n".join(lines)


def pss_seed_sentence(rows: list[dict]) -> str:
    """docs/RESULTS.md's per-seed reading of ``pss_table``: each seed's mean over the targets
    every run kept and its max net (prioritized / uniform, %), and the mean difference."""
    common = common_targets(r["subnets"] for r in rows)
    acc = {(r["sampling"], r["seed"]): r["subnets"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    means = {k: 100 * kept_mean(subnets, common) for k, subnets in acc.items()}
    maxes = {k: 100 * subnets[-1]["test_accuracy"] for k, subnets in acc.items()}
    per_seed = ", ".join(f"seed {seed} {means[('prioritized', seed)]:.1f} / "
                         f"{means[('uniform', seed)]:.1f}" for seed in seeds)
    max_nets = ", ".join(f"{maxes[('prioritized', seed)]:.1f} / {maxes[('uniform', seed)]:.1f}"
                         for seed in seeds)
    diff = statistics.mean(means[("prioritized", s)] - means[("uniform", s)] for s in seeds)
    return (f"Per seed, mean over the {len(common)} targets every run kept (prioritized / "
            f"uniform): {per_seed}; max net {max_nets}; prioritized - uniform {diff:+.2f} "
            f"points on average")


def pss_spread_sentence(rows: list[dict]) -> str:
    """The seed-to-seed spread of each sampling's mean over the targets every run kept
    (sample std in points, as ``pss_table``'s last row)."""
    common = common_targets(r["subnets"] for r in rows)
    stds = [100 * statistics.stdev(kept_mean(r["subnets"], common) for r in rows
                                   if r["sampling"] == sampling) for sampling in SAMPLINGS]
    return f"std {stds[0]:.1f} vs {stds[1]:.1f} points"


def plots(results: dict, out: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if results.get("dcff"):
        rows = results["dcff"]
        variants = [v for v in DCFF_VARIANTS if any(r["variant"] == v for r in rows)]
        accs = [[100 * r["test_accuracy"] for r in rows if r["variant"] == v] for v in variants]
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
        ax.bar(variants, [statistics.mean(a) for a in accs],
               yerr=[statistics.stdev(a) if len(a) > 1 else 0 for a in accs], capsize=4,
               color=["grey"] + ["C0"] * (len(variants) - 1))
        for i, a in enumerate(accs):
            ax.plot([i] * len(a), a, "k.", ms=4)
        low = min(min(a) for a in accs)
        ax.set_ylim(low - 2, max(max(a) for a in accs) + 1)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("ResNet-20, Fashion-MNIST: full width vs -50% FLOPs")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "dcff.png"))
        plt.close(fig)
    if results.get("pss"):
        pss_plot(results["pss"], os.path.join(out, "pssnet.png"))


def pss_plot(rows: list[dict], path: str, title: str = "PSS-Net MobileNetV2 supernet, "
             "embedded data") -> None:
    """Mean test accuracy (error bars: sample std over seeds) of every target's kept subnet
    against its mean FLOPs, one curve per sampling rule."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for sampling in SAMPLINGS:
        per = by_target([r for r in rows if r["sampling"] == sampling])
        keys = sorted(per, key=target_order)
        xs = [statistics.mean(f for f, _ in per[k]) / 1e6 for k in keys]
        ys = [100 * statistics.mean(a for _, a in per[k]) for k in keys]
        es = [100 * statistics.stdev([a for _, a in per[k]]) if len(per[k]) > 1 else 0
              for k in keys]
        ax.errorbar(xs, ys, yerr=es, fmt="o-", capsize=3, label=f"{sampling} sampling")
    ax.set_xlabel("MFLOPs")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def with_options(scale: dict, args) -> dict:
    """The scale with the command line's seeds, DCFF epochs and DCFF schedule."""
    scale = {**scale, "dcff": dict(scale["dcff"])}
    if args.seeds:
        seeds = tuple(int(s) for s in args.seeds.split(","))
        scale.update(seeds=seeds, pss_seeds=seeds)
    if args.dcff_epochs:
        scale["dcff"]["num_epochs"] = args.dcff_epochs
    if args.dcff_schedule == "progress":
        scale["dcff_schedule"] = PROGRESS_SCHEDULE
    return scale


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="smoke-test form (embedded data)")
    parser.add_argument("--only", default="dcff,pss", help="comma list of dcff, pss")
    parser.add_argument("--data_dir", default=idx.DEFAULT_FASHION_MNIST_DIR,
                        help="the full Fashion-MNIST IDX files")
    parser.add_argument("--dcff_schedule", default="epoch", choices=("epoch", "progress"),
                        help="DCFF temperature schedule (progress: the paper's proportions)")
    parser.add_argument("--dcff_epochs", type=int, default=0, help="DCFF run length (0: 4)")
    parser.add_argument("--seeds", default="", help="comma list (default: the scale's)")
    parser.add_argument("--workdir", default="runs/evidence")
    parser.add_argument("--out", default="docs/evidence")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    if not parts or parts - {"dcff", "pss"}:
        raise SystemExit(f"--only={args.only!r}: expected a comma list of dcff, pss")
    scale = with_options(TINY if args.tiny else FULL, args)
    if "dcff" in parts and not args.tiny:
        idx.load_idx_split(args.data_dir, "t10k")  # a clear error before hours of work
    quiet_logging()
    os.makedirs(args.out, exist_ok=True)
    start = time.perf_counter()
    results = {"scale": "tiny" if args.tiny else "full",
               "command": shlex.join(["python", "-m", "evidence.study", *sys.argv[1:]]),
               "dcff_schedule": args.dcff_schedule, "dcff_epochs": scale["dcff"]["num_epochs"],
               "seeds": list(scale["seeds"])}
    results["provenance"] = provenance(results["command"])
    if "dcff" in parts:
        results["dcff"] = run_dcff(scale, args.data_dir, os.path.join(args.workdir, "dcff"))
    if "pss" in parts:
        results["pss"] = run_pss(scale, os.path.join(args.workdir, "pss"))
    results["wall_time_s"] = time.perf_counter() - start
    tables = []
    if "dcff" in results:
        tables += ["## DCFF", "", dcff_table(results["dcff"]), "",
                   paired_table(results["dcff"]), "",
                   curve_table(results["dcff"], scale["seeds"][0]), ""]
    if "pss" in results:
        tables += ["## PSS-Net", "", pss_table(results["pss"]), ""]
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(args.out, "tables.md"), "w") as f:
        f.write("\n".join(tables))
    plots(results, args.out)
    print("\n".join(tables))
    print(f"study: {results['wall_time_s'] / 60:.1f} minutes; wrote {args.out}")


if __name__ == "__main__":
    main()
