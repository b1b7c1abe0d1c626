"""The embedded PSS-Net recipe sweep (issue #17 parts 3 and 5): candidate learning rates and
warm-ups of configs/pssnet/embedded.py over several seeds, each with its standalone control
(configs/pssnet/embedded_alone.py: the max net trained alone with the same recipe), the
same supernet with uniform sampling, and the recipe on data it was not tuned on.

    python -m evidence.recipe_sweep                       # every candidate, seeds 0-4
    python -m evidence.recipe_sweep --candidates=lr0.0375_w1 --seeds=0,1
    python -m evidence.recipe_sweep --candidates=lr0.0375_w1 --runs=uniform
    python -m evidence.recipe_sweep --candidates=lr0.0375_w1 --seeds=0 --runs=supernet \
        --data=fmnist_2000,fmnist_4000,fmnist_full

``--runs`` picks what is trained per candidate and seed: ``supernet`` (PSS-Net, prioritized
sampling), ``alone`` (the control) and ``uniform`` (``pssnet.sampling='uniform'``, the
US-Net sandwich control of part 5). ``--data`` picks the training data: ``embedded`` (the
default's 9,000 + 1,000 held-out images) or Fashion-MNIST IDX files from ``--data_dir``
(``fmnist_2000`` / ``fmnist_4000``: a fixed random subset of the full training set with
2,000 / 4,000 training and 1,000 held-out images; ``fmnist_full``: 59,000 + 1,000; all
10,000 test images).

Every run has its own workdir under ``--workdir`` and is skipped when its summary exists
(``evidence.study.train_or_reuse``), so the sweep can run in parts. Per run it records the
max net's test accuracy, every kept subnet, the first logged training loss and the largest
training loss after the warm-up (logged every step). Rows are merged into ``--out`` (JSON)
by candidate, seed and data, so the parts of a sweep add up in one file; the tables of
docs/RESULTS.md (``tables``) are written beside it as ``.md``, and the plot of the sampling
comparison as ``_sampling.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics

from common_jax.data import idx
from common_jax.provenance import provenance
from evidence.study import (by_target, common_targets, kept_mean, learning_curve, mean_std,
                            paired_cells, pss_plot, quiet_logging, target_order, train_or_reuse)
from pssnet_dcff import api

CANDIDATES = {
    "lr0.0375_w1": {"optimizer.learning_rate": 0.0375, "optimizer.warmup_epochs": 1},
    "lr0.075_w1": {"optimizer.learning_rate": 0.075, "optimizer.warmup_epochs": 1},
    "lr0.1": {"optimizer.learning_rate": 0.1, "optimizer.warmup_epochs": 0},
}
CHOSEN = "lr0.0375_w1"  # the recipe of configs/pssnet/embedded.py (docs/RESULTS.md)
SUPERNET, ALONE = "configs/pssnet/embedded.py", "configs/pssnet/embedded_alone.py"
RUNS = ("supernet", "alone", "uniform")
_IDX = {"dataset.name": "fashion_mnist_idx", "dataset.num_eval_examples": 0}
DATA = {
    "embedded": {},
    "fmnist_2000": {**_IDX, "dataset.num_train_examples": 3_000},
    "fmnist_4000": {**_IDX, "dataset.num_train_examples": 5_000},
    "fmnist_full": {**_IDX, "dataset.num_train_examples": 0},
}

log = logging.getLogger(__name__)


def loss_profile(workdir: str, warmup_steps: int) -> dict:
    """First logged training loss and the largest one after ``warmup_steps``."""
    losses = [(p["step"], p["train_loss"]) for p in learning_curve(workdir) if "train_loss" in p]
    after = [loss for step, loss in losses if step > warmup_steps]
    return {"first_train_loss": losses[0][1],
            "max_train_loss_after_warmup": max(after) if after else None}


def _supernet_row(config, workdir: str) -> dict:
    """The kept subnets and loss profile of a trained supernet."""
    summary = train_or_reuse(config, workdir)
    steps_per_epoch = summary["step"] // config.num_epochs
    warmup = int(config.optimizer.warmup_epochs * steps_per_epoch)
    subnets = api.kept_subnets(workdir)
    return {**loss_profile(workdir, warmup), "wall_time_s": summary["wall_time_s"],
            "subnets": subnets, "max_net_test_accuracy": subnets[-1]["test_accuracy"]}


def run_one(candidate: str, seed: int, runs: list[str], data: str, data_dir: str,
            root: str) -> dict:
    """One row: what ``runs`` asks for, for one candidate, seed and training set."""
    overrides = {**CANDIDATES[candidate], **DATA[data], "seed": seed, "log_every_steps": 1}
    if DATA[data]:
        overrides["dataset.data_dir"] = data_dir
    name = f"{candidate}_seed{seed}" if data == "embedded" else f"{data}_{candidate}_seed{seed}"
    row = {"candidate": candidate, "seed": seed, "data": data, **CANDIDATES[candidate]}
    if "supernet" in runs:
        row.update(_supernet_row(api.load_config(SUPERNET, **overrides),
                                 os.path.join(root, name)))
    if "alone" in runs:
        alone = train_or_reuse(api.load_config(ALONE, **overrides),
                               os.path.join(root, f"alone_{name}"))
        row["alone_test_accuracy"] = alone["eval_accuracy"]
        row["alone_wall_time_s"] = alone["wall_time_s"]
    if "uniform" in runs:
        config = api.load_config(SUPERNET, **overrides, **{"pssnet.sampling": "uniform"})
        row["uniform"] = _supernet_row(config, os.path.join(root, f"uniform_{name}"))
    return row


def _key(row: dict) -> tuple:
    return row["candidate"], row["seed"], row["data"]


def merge(old_rows: list[dict], new_rows: list[dict]) -> list[dict]:
    """``old_rows`` with each new row merged into the row of its candidate, seed and data."""
    merged = {_key(r): dict(r) for r in old_rows}
    for row in new_rows:
        merged.setdefault(_key(row), {}).update(row)
    order = {c: i for i, c in enumerate(CANDIDATES)}
    return sorted(merged.values(), key=lambda r: (list(DATA).index(r["data"]),
                                                  order[r["candidate"]], r["seed"]))


def _embedded_runs(rows: list[dict], candidate: str, uniform: bool = False) -> list[dict]:
    """The candidate's supernet rows on the embedded data (``uniform``: with a uniform run)."""
    return [r for r in rows if r["candidate"] == candidate and r["data"] == "embedded"
            and "subnets" in r and (not uniform or "uniform" in r)]


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _middle(subnets: list[dict]) -> list[dict]:
    return [e for e in subnets if e["target"] not in ("min", "max")]


def _spiked(run: dict) -> bool:
    """A training loss after the warm-up above the first logged one (the issue's target)."""
    return run["max_train_loss_after_warmup"] > run["first_train_loss"]


def sweep_table(rows: list[dict]) -> str:
    """Every candidate and seed on the embedded data: max net against its standalone control,
    the min net, the weakest kept middle subnet against the min net, and the loss profile."""
    lines = ["| candidate | seed | max net % | alone % | max - alone | min net % | "
             "weakest middle - min net | first loss | worst loss after warm-up | minutes |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["data"] != "embedded" or "subnets" not in r:
            continue
        by = {e["target"]: e["test_accuracy"] for e in r["subnets"]}
        alone = r.get("alone_test_accuracy")
        diff = "-" if alone is None else f"{100 * (r['max_net_test_accuracy'] - alone):+.2f}"
        weakest = min(e["test_accuracy"] for e in _middle(r["subnets"])) - by["min"]
        lines.append(f"| {r['candidate']} | {r['seed']} | {_pct(r['max_net_test_accuracy'])} | "
                     f"{_pct(alone)} | {diff} | {_pct(by['min'])} | {100 * weakest:+.2f} | "
                     f"{r['first_train_loss']:.2f} | {r['max_train_loss_after_warmup']:.2f} | "
                     f"{r['wall_time_s'] / 60:.1f} |")
    return "\n".join(lines)


def candidate_table(rows: list[dict]) -> str:
    """Per candidate over its seeds: max net and control (mean +- sample std), their paired
    difference, the min net, and how many runs spiked above the first loss after warm-up."""
    lines = ["| candidate | seeds | max net % | alone % | max - alone (paired) | min net % | "
             "runs with a loss above the first after warm-up |",
             "|---|---|---|---|---|---|---|"]
    for candidate in CANDIDATES:
        runs = _embedded_runs(rows, candidate)
        if not runs:
            continue
        paired = [r for r in runs if "alone_test_accuracy" in r]
        diffs = [r["max_net_test_accuracy"] - r["alone_test_accuracy"] for r in paired]
        lines.append(
            f"| {candidate} | {len(runs)} | {mean_std(r['max_net_test_accuracy'] for r in runs)}"
            f" | {mean_std(r['alone_test_accuracy'] for r in paired)} | "
            f"{mean_std(diffs)} | {mean_std(r['subnets'][0]['test_accuracy'] for r in runs)} | "
            f"{sum(map(_spiked, runs))} of {len(runs)} |")
    return "\n".join(lines)


def alone_sentence(rows: list[dict], candidate: str = CHOSEN) -> str:
    """README's standalone control of the chosen recipe: its accuracy over the seeds and the
    supernet's max net minus it, paired by seed (``candidate_table``'s columns)."""
    paired = [r for r in _embedded_runs(rows, candidate) if "alone_test_accuracy" in r]
    diffs = [r["max_net_test_accuracy"] - r["alone_test_accuracy"] for r in paired]
    gap = mean_std(diffs)
    trails = f"trails it by {gap.lstrip('-')}" if gap.startswith("-") else f"beats it by {gap}"
    return (f"reaches {mean_std(r['alone_test_accuracy'] for r in paired)}% over the same "
            f"seeds; the supernet's max net {trails} points (paired by seed)")


def _shared_runs(rows: list[dict]) -> tuple[list[int], list[dict], list]:
    """(seeds every candidate with embedded supernet runs has, those runs of every candidate
    at those seeds, the targets every one of them kept): what the recipe choice compares."""
    seeds = [{r["seed"] for r in _embedded_runs(rows, c)} for c in CANDIDATES]
    shared = sorted(set.intersection(*[s for s in seeds if s]))
    runs = [r for c in CANDIDATES for r in _embedded_runs(rows, c) if r["seed"] in shared]
    return shared, runs, common_targets(r["subnets"] for r in runs)


def _choice_key(rows: list[dict], candidate: str, metric: str) -> tuple:
    """Rank of a candidate (lowest first) by the sweep's criteria on ``metric``
    ('selection_accuracy': the held-out images; 'test_accuracy'): fewest runs with a training
    loss spike after warm-up, then the highest mean accuracy of the kept middle subnets over
    the seeds every candidate shares."""
    _, compared, targets = _shared_runs(rows)
    runs = [r for r in compared if r["candidate"] == candidate]
    kept = statistics.mean(kept_mean(r["subnets"], targets, metric) for r in runs)
    return sum(map(_spiked, runs)), -kept


def chosen_by(rows: list[dict], metric: str) -> str:
    return min((c for c in CANDIDATES if _embedded_runs(rows, c)),
               key=lambda c: _choice_key(rows, c, metric))


def heldout_table(rows: list[dict]) -> str:
    """Per candidate over the shared seeds: the max net, min net and mean of kept middle
    subnets on the held-out training images (the selection images) and on the test images,
    and how many runs spiked (training losses: no evaluation images)."""
    seeds, compared, targets = _shared_runs(rows)
    lines = [f"| candidate | seeds | runs with a spike | held-out: max net % | min net % | "
             f"mean of kept subnets % | test: max net % | min net % | mean of kept subnets % |",
             "|---|---|---|---|---|---|---|---|---|"]
    for candidate in CANDIDATES:
        runs = [r for r in compared if r["candidate"] == candidate]
        if not runs:
            continue
        cells = []
        for metric in ("selection_accuracy", "test_accuracy"):
            cells += [mean_std(r["subnets"][-1][metric] for r in runs),
                      mean_std(r["subnets"][0][metric] for r in runs),
                      mean_std(kept_mean(r["subnets"], targets, metric) for r in runs)]
        lines.append(f"| {candidate} | {', '.join(map(str, seeds))} | "
                     f"{sum(map(_spiked, runs))} of {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def heldout_sentence(rows: list[dict]) -> str:
    """docs/RESULTS.md's statement of the recipe chosen without the test images."""
    heldout, test = chosen_by(rows, "selection_accuracy"), chosen_by(rows, "test_accuracy")
    same = ("the candidate it picks on the test images: the choice did not change"
            if heldout == test else f"where the test images give {test}: the choice changed")
    return f"Chosen on the held-out images, the sweep's rule picks {heldout}, {same}"


def robustness_table(rows: list[dict]) -> str:
    """The recipe on Fashion-MNIST data it was not tuned on."""
    lines = ["| data | candidate | seed | first loss | worst loss after warm-up | max net % | "
             "min net % | weakest kept subnet % | minutes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["data"] == "embedded" or "subnets" not in r:
            continue
        weakest = min(e["test_accuracy"] for e in r["subnets"])
        lines.append(f"| {r['data']} | {r['candidate']} | {r['seed']} | "
                     f"{r['first_train_loss']:.2f} | {r['max_train_loss_after_warmup']:.2f} | "
                     f"{_pct(r['max_net_test_accuracy'])} | "
                     f"{_pct(r['subnets'][0]['test_accuracy'])} | {_pct(weakest)} | "
                     f"{r['wall_time_s'] / 60:.1f} |")
    return "\n".join(lines)


def _accuracies(subnets: list[dict], targets) -> dict:
    """target -> test accuracy, plus the mean over the kept subnets at ``targets``."""
    out = {str(e["target"]): e["test_accuracy"] for e in subnets}
    out["mean of kept subnets"] = kept_mean(subnets, targets)
    return out


def sampling_table(rows: list[dict], candidate: str) -> str:
    """PSS-Net's prioritized sampling against uniform sampling (part 5): per FLOPs target and
    over each run's kept subnets, mean +- std over seeds and the paired difference."""
    runs = _embedded_runs(rows, candidate, uniform=True)
    if not runs:
        return "(no runs with both samplings yet)"
    targets = common_targets([r["subnets"] for r in runs] + [r["uniform"]["subnets"]
                                                             for r in runs])
    pss = {r["seed"]: _accuracies(r["subnets"], targets) for r in runs}
    uni = {r["seed"]: _accuracies(r["uniform"]["subnets"], targets) for r in runs}
    keys = sorted({k for acc in [*pss.values(), *uni.values()] for k in acc
                   if k != "mean of kept subnets"}, key=target_order)
    lines = ["| target (MFLOPs) | prioritized % (mean ± std, n) | uniform % (mean ± std, n) | "
             "seeds with both | prioritized - uniform | paired t-test p | Wilcoxon p |",
             "|---|---|---|---|---|---|---|"]
    for key in [*keys, "mean of kept subnets"]:
        ours = [acc[key] for acc in pss.values() if key in acc]
        theirs = [acc[key] for acc in uni.values() if key in acc]
        both = [seed for seed in pss if key in pss[seed] and key in uni.get(seed, {})]
        label = key if key in keys else f"{key} ({len(targets)} targets every run kept)"
        lines.append(f"| {label} | {mean_std(ours) if ours else '-'} ({len(ours)}) | "
                     f"{mean_std(theirs) if theirs else '-'} ({len(theirs)}) | " + paired_cells(
                         [pss[s][key] for s in both], [uni[s][key] for s in both]) + " |")
    return "\n".join(lines)


def paper_scale_sentence() -> str:
    """README's and docs/RESULTS.md's scale of the paper's runs: the ImageNet MobileNetV2
    supernet config's epochs and pool size."""
    config = api.load_config("configs/pssnet/mobilenet_v2_imagenet.py")
    return (f"the paper's ImageNet runs (configs/pssnet/mobilenet_v2_imagenet.py) train "
            f"{config.num_epochs} epochs with pools of {config.pssnet.pool_size}")


def _sampling_cells(rows: list[dict], candidate: str) -> dict:
    """``sampling_table``'s rows by their first cell: label -> cells."""
    cells = {}
    for line in sampling_table(rows, candidate).splitlines()[2:]:
        parts = [p.strip() for p in line.strip("| ").split(" | ")]
        cells[parts[0]] = parts
    return cells


def sampling_mean_sentence(rows: list[dict], candidate: str = CHOSEN) -> str:
    """README's and docs/RESULTS.md's summary of ``sampling_table``: the paired difference
    of the mean over the targets every run kept (prioritized - uniform, points)."""
    cells = _sampling_cells(rows, candidate)
    mean = next(v for k, v in cells.items() if k.startswith("mean of kept subnets"))
    return (f"prioritized - uniform over the {mean[0][len('mean of kept subnets ('):-1]}: "
            f"{mean[4]} points (prioritized {mean[1].split(' (')[0]}%, uniform "
            f"{mean[2].split(' (')[0]}%; paired t-test p = {mean[5]}, Wilcoxon p = {mean[6]})")


def _per_target(cells: dict) -> dict:
    """The middle targets' rows of ``_sampling_cells`` that have a paired test."""
    return {k: v for k, v in cells.items() if k not in ("min", "max")
            and not k.startswith("mean of kept subnets") and v[5] != "-"}


def sampling_claim_sentence(rows: list[dict], candidate: str = CHOSEN) -> str:
    """README's PSS-Net claim: ``sampling_mean_sentence`` and how many of the min net, max
    net and per-target differences keep a t-test p under the Bonferroni bound."""
    cells = _sampling_cells(rows, candidate)
    tested = [*_per_target(cells).values(), cells["min"], cells["max"]]
    kept = sum(float(v[5]) < 0.05 / len(tested) for v in tested)
    seeds = len({r["seed"] for r in _embedded_runs(rows, candidate, uniform=True)})
    return (f"over {seeds} seeds, {sampling_mean_sentence(rows, candidate)}; "
            f"{kept or 'none'} of the {len(tested)} "
            f"per-target differences (with the min and max nets) "
            f"{'survives' if kept == 1 else 'survive'} a Bonferroni correction")


def sampling_sentence(rows: list[dict], candidate: str = CHOSEN) -> str:
    """docs/RESULTS.md's reading of ``sampling_table``: ``sampling_mean_sentence``, the range
    of the per-target differences with the smallest t-test p against a Bonferroni threshold,
    and the max net's difference (prioritized - uniform, points)."""
    cells = _sampling_cells(rows, candidate)
    per_target = _per_target(cells)
    low = min(per_target, key=lambda k: float(per_target[k][4]))
    high = max(per_target, key=lambda k: float(per_target[k][4]))
    best = min(per_target, key=lambda k: float(per_target[k][5]))
    count = len(per_target) + 2  # with the min and max nets
    return (f"{sampling_mean_sentence(rows, candidate)}; "
            f"per target between {per_target[low][4]} ({low} MFLOPs) and "
            f"{per_target[high][4]} ({high} MFLOPs), the smallest t-test p {per_target[best][5]}"
            f" ({best} MFLOPs) against a Bonferroni threshold of 0.05 / {count} = "
            f"{0.05 / count:.2g}; max net {cells['max'][4]} (p = {cells['max'][5]})")


def scale_sentence(rows: list[dict], summary: dict, candidate: str = CHOSEN) -> str:
    """docs/RESULTS.md's caveat of scale: the embedded default's training steps (its run's
    ``summary``), pool size (configs/pssnet/embedded.py) and the gap between the max and
    the min net's mean test accuracy over the candidate's seeds (points)."""
    per = by_target(_embedded_runs(rows, candidate))
    gap = 100 * (statistics.mean(a for _, a in per["max"]) -
                 statistics.mean(a for _, a in per["min"]))
    pools = api.load_config("configs/pssnet/embedded.py").pssnet.pool_size
    return (f"{summary['step']} steps, pools of {pools} that fill in the first epochs, a "
            f"10-class 28 px task on which the min net's mean is {gap:.2f} points under the "
            f"max net's")


def main_job_table(rows: list[dict], candidate: str = CHOSEN) -> str:
    """The default main job over seeds (README): every target's kept subnet, mean MFLOPs and
    test accuracy (mean +- sample std, lowest-highest) over the candidate's embedded runs."""
    runs = _embedded_runs(rows, candidate)
    per = by_target(runs)
    lines = [f"| target (MFLOPs) | seeds | MFLOPs (mean) | test accuracy % (mean ± std) | "
             f"lowest - highest |", "|---|---|---|---|---|"]
    for key in sorted(per, key=target_order):
        accs = [a for _, a in per[key]]
        lines.append(f"| {key} | {len(accs)} | {statistics.mean(f for f, _ in per[key]) / 1e6:.2f}"
                     f" | {mean_std(accs)} | {100 * min(accs):.2f} - {100 * max(accs):.2f} |")
    return "\n".join(lines)


def main_job_sentence(rows: list[dict], candidate: str = CHOSEN) -> str:
    """README's summary of the main job over seeds: max and min net, mean +- sample std, and
    the ratio of their mean FLOPs."""
    runs = _embedded_runs(rows, candidate)

    def summary(values):
        values = [100 * v for v in values]
        return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}%"
    per = by_target(runs)
    ratio = (statistics.mean(f for f, _ in per["max"]) /
             statistics.mean(f for f, _ in per["min"]))
    return (f"reaches {summary(r['max_net_test_accuracy'] for r in runs)} test accuracy with "
            f"the max net and {summary(r['subnets'][0]['test_accuracy'] for r in runs)} with the "
            f"min net ({ratio:.1f}x fewer FLOPs)")


def seed_sentence(rows: list[dict], seed: int = 0, candidate: str = CHOSEN) -> str:
    """README's comparison with its one run: the max and min net's test accuracy of one seed
    of the sweep."""
    run = next(r for r in _embedded_runs(rows, candidate) if r["seed"] == seed)
    return (f"reached {100 * run['max_net_test_accuracy']:.2f}% / "
            f"{100 * run['subnets'][0]['test_accuracy']:.2f}%")


def old_default_sentence(rows: list[dict], candidate: str = "lr0.1") -> str:
    """The README's and docs/RESULTS.md's words on the old default's loss spikes: the maximum
    training loss of each of its runs, with their seeds."""
    runs = sorted(_embedded_runs(rows, candidate), key=lambda r: -r["max_train_loss_after_warmup"])
    losses = " and ".join(f"{r['max_train_loss_after_warmup']:.1f}" for r in runs)
    seeds = " and ".join(str(r["seed"]) for r in runs)
    return f"reached training losses of {losses} (seeds {seeds}"


def tables(rows: list[dict], chosen: str = CHOSEN) -> str:
    """The sweep's tables as docs/RESULTS.md shows them."""
    return "\n\n".join([
        "Every candidate and seed:\n\n" + sweep_table(rows),
        "Per candidate:\n\n" + candidate_table(rows),
        "Chosen without the test images (seeds every candidate has):\n\n"
        + heldout_table(rows) + "\n\n" + heldout_sentence(rows) + ".",
        "On data the recipe was not tuned on:\n\n" + robustness_table(rows),
        f"Prioritized against uniform sampling ({chosen}):\n\n" + sampling_table(rows, chosen),
    ]) + "\n"


def _choices(text: str, allowed, flag: str) -> list[str]:
    chosen = text.split(",")
    unknown = [c for c in chosen if c not in allowed]
    if unknown:
        raise SystemExit(f"{flag}: unknown {unknown}; expected some of {list(allowed)}")
    return chosen


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--runs", default="supernet,alone", help="comma list of " + ", ".join(RUNS))
    parser.add_argument("--data", default="embedded", help="comma list of " + ", ".join(DATA))
    parser.add_argument("--data_dir", default=idx.DEFAULT_FASHION_MNIST_DIR,
                        help="Fashion-MNIST IDX directory (the fmnist_* data)")
    parser.add_argument("--workdir", default="runs/recipe_sweep")
    parser.add_argument("--out", default="docs/evidence/recipe_sweep.json")
    args = parser.parse_args()
    candidates = _choices(args.candidates, CANDIDATES, "--candidates")
    runs = _choices(args.runs, RUNS, "--runs")
    datas = _choices(args.data, DATA, "--data")
    seeds = [int(s) for s in args.seeds.split(",")]
    quiet_logging()
    old_rows = []
    if os.path.exists(args.out):
        with open(args.out) as f:
            old_rows = json.load(f)["rows"]
    rows = []
    for data in datas:
        for seed in seeds:
            for candidate in candidates:
                log.info("recipe sweep: %s seed %d on %s (%s)", candidate, seed, data,
                         ", ".join(runs))
                rows.append(run_one(candidate, seed, runs, data, args.data_dir, args.workdir))
                write(merge(old_rows, rows), args.out)
    print(f"wrote {args.out} and its tables ({len(rows)} rows updated)")


def write(rows: list[dict], out: str) -> None:
    """``out`` (JSON rows) and its tables beside it (``.md``)."""
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump({"command": "python -m evidence.recipe_sweep",
                   "provenance": provenance("python -m evidence.recipe_sweep"), "rows": rows},
                  f, indent=2)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write(tables(rows))
    paired = _embedded_runs(rows, CHOSEN, uniform=True)
    if paired:
        pss_plot([{"sampling": "prioritized", "subnets": r["subnets"]} for r in paired]
                 + [{"sampling": "uniform", "subnets": r["uniform"]["subnets"]} for r in paired],
                 os.path.splitext(out)[0] + "_sampling.png",
                 title=f"PSS-Net sampling rules, {CHOSEN}, {len(paired)} seeds")


if __name__ == "__main__":
    main()
