"""The evidence study: the L1-norm control prunes what it says, and the study runs end to end
in its tiny form, writing tables and plots."""

import json
import os
import re
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from flax import traverse_util

from common_jax import models
from conftest import ROOT
from dcff_jax import architectures
from evidence.l1_pruning import l1_keep, prune_first_convs


def test_l1_pruned_resnet_equals_the_full_one_with_the_dropped_filters_silenced():
    full_arch = models.arch_for("resnet20", num_classes=10, in_channels=1)
    compact, _ = architectures.compact_arch("resnet20", "[0.5]*9+[0.0]*3", num_classes=10,
                                            in_channels=1)
    full_model, compact_model = models.build_model(full_arch), models.build_model(compact)
    x = jax.random.normal(jax.random.key(0), (4, 28, 28, 1))
    variables = full_model.init(jax.random.key(1), x, train=False)
    variables = jax.tree.map(np.asarray, variables)
    # Non-trivial BN statistics, so that slicing them wrongly would show.
    stats = traverse_util.flatten_dict(variables["batch_stats"])
    rng = np.random.default_rng(0)
    stats = {k: (rng.uniform(0.5, 2.0, v.shape) if k[-1] == "var" else rng.normal(0, 0.1, v.shape)
                 ).astype(np.float32) for k, v in stats.items()}
    variables["batch_stats"] = traverse_util.unflatten_dict(stats)
    pruned = prune_first_convs(variables, compact)
    silenced = jax.tree.map(np.copy, variables)
    for s, blocks in enumerate(compact["stages"]):
        for b, (mid, _) in enumerate(blocks):
            block = silenced["params"][f"stage{s + 1}_block{b}"]
            keep = l1_keep(block["conv1"]["kernel"], mid)
            assert len(keep) == mid and block["conv1"]["kernel"].shape[-1] == 2 * mid
            norms = np.abs(block["conv1"]["kernel"]).sum(axis=(0, 1, 2))
            assert norms[keep].min() >= np.delete(norms, keep).max()
            dropped = np.setdiff1d(np.arange(2 * mid), keep)
            block["bn1"]["bias"][dropped] = -1e9  # ReLU(BN) of a dropped filter is 0
    ours = compact_model.apply(pruned, x, train=False)
    reference = full_model.apply(silenced, x, train=False)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


def test_l1_pruning_refuses_pruned_residual_widths():
    full_arch = models.arch_for("resnet20", num_classes=10, in_channels=1)
    compact, _ = architectures.compact_arch("resnet20", "[0.5]*9+[0.25]*3", num_classes=10,
                                            in_channels=1)
    variables = models.build_model(full_arch).init(jax.random.key(1), np.zeros((1, 28, 28, 1)),
                                                   train=False)
    with pytest.raises(ValueError, match="keeps the residual widths"):
        prune_first_convs(variables, compact)


@pytest.mark.slow
def test_tiny_study_writes_tables_and_plots(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    command = [sys.executable, "-m", "evidence.study", "--tiny", f"--workdir={work}",
               f"--out={out}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{40}", results["provenance"]["commit"])
    assert results["provenance"]["command"].startswith("python -m evidence.study --tiny")
    variants = [(r["variant"], r["seed"]) for r in results["dcff"]]
    assert sorted(variants) == sorted((v, s) for v in ("baseline", "faithful", "stable",
                                                       "scratch", "l1") for s in (0, 1))
    by_variant = {r["variant"]: r for r in results["dcff"] if r["seed"] == 0}
    assert by_variant["l1"]["params"] == by_variant["scratch"]["params"] < (
        by_variant["baseline"]["params"])
    for row in results["dcff"]:  # each curve ends with the evaluation the table reports
        evals = [point for point in row["curve"] if "eval_accuracy" in point]
        assert evals[-1]["eval_accuracy"] == row["test_accuracy"], row["variant"]
        assert any("train_loss" in point for point in row["curve"])
    assert sorted(r["sampling"] for r in results["pss"]) == ["prioritized", "uniform"]
    assert all(len(r["subnets"]) >= 3 for r in results["pss"])
    tables = (out / "tables.md").read_text()
    for word in ("| baseline |", "| l1 |", "| faithful |", "mean over kept subnets"):
        assert word in tables
    assert os.path.getsize(out / "dcff.png") > 1000 and os.path.getsize(out / "pssnet.png") > 1000
    # A second run reuses every finished run and reproduces the tables.
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and (out / "tables.md").read_text() == tables


def test_paired_table_compares_each_dcff_mode_with_its_controls_seed_by_seed():
    """Faithful beats scratch on every one of 5 seeds (by 1, 2, 1, 2, 1.5 points): mean +1.50
    and the exact two-sided Wilcoxon p of 5 positive differences, 2 / 2^5; pairs only where
    both runs exist (stable has no scratch partner for seed 4)."""
    from evidence.study import paired_table
    rows = []
    for seed, gain in enumerate((0.01, 0.02, 0.01, 0.02, 0.015)):
        rows += [{"variant": "scratch", "seed": seed, "test_accuracy": 0.80},
                 {"variant": "faithful", "seed": seed, "test_accuracy": 0.80 + gain},
                 {"variant": "l1", "seed": seed, "test_accuracy": 0.81}]
        if seed < 4:
            rows.append({"variant": "stable", "seed": seed,
                         "test_accuracy": 0.79 + 0.001 * seed})
    table = paired_table(rows).splitlines()
    faithful = next(line for line in table if line.startswith("| faithful - scratch"))
    # t = 1.5 / (0.5 / sqrt(5)) = 6.708 with 4 degrees of freedom: p = 0.00257
    assert faithful.split(" | ")[1:4] == ["5", "+1.50", "0.00257"]
    assert faithful.endswith("| 0.0625 |")
    assert next(line for line in table if line.startswith("| stable - scratch")).split(
        " | ")[1:3] == ["4", "-0.85"]
    # the strength of the L1 control: scratch 1 point under it on every seed
    assert table[-1].split(" | ")[:3] == ["| scratch - l1", "5", "-1.00"]


def test_recipe_sweep_loss_profile_reads_the_first_and_the_worst_loss_after_warmup(tmp_path):
    from evidence.recipe_sweep import loss_profile
    lines = [{"step": 1, "train_loss": 2.3}, {"step": 2, "train_loss": 9.0},
             {"step": 3, "eval_loss": 50.0}, {"step": 4, "train_loss": 1.9},
             {"step": 5, "train_loss": 2.1}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert loss_profile(str(tmp_path), 2) == {"first_train_loss": 2.3,
                                              "max_train_loss_after_warmup": 2.1}
    assert loss_profile(str(tmp_path), 0)["max_train_loss_after_warmup"] == 9.0


def _sweep_row(seed: int, pss: tuple, uniform: tuple | None = None, **extra) -> dict:
    """A recipe-sweep row whose kept subnets (min, 2.0, 3.0, max) have accuracies ``pss``."""
    def subnets(accs):
        return [{"target": t, "test_accuracy": a, "flops": 1e6}
                for t, a in zip(("min", 2.0, 3.0, "max"), accs)]
    row = {"candidate": "lr0.0375_w1", "seed": seed, "data": "embedded",
           "subnets": subnets(pss), "max_net_test_accuracy": pss[-1], "first_train_loss": 2.3,
           "max_train_loss_after_warmup": 1.5, "wall_time_s": 60.0, **extra}
    if uniform:
        row["uniform"] = {"subnets": subnets(uniform)}
    return row


def test_recipe_sweep_merges_the_parts_of_a_sweep_by_candidate_seed_and_data():
    from evidence.recipe_sweep import merge
    first = [_sweep_row(1, (0.7, 0.72, 0.75, 0.8), alone_test_accuracy=0.81)]
    second = [{"candidate": "lr0.0375_w1", "seed": 1, "data": "embedded",
               "uniform": {"subnets": []}}, _sweep_row(0, (0.7, 0.7, 0.7, 0.7))]
    merged = merge(first, second)
    assert [r["seed"] for r in merged] == [0, 1]
    assert merged[1]["alone_test_accuracy"] == 0.81 and merged[1]["uniform"] == {"subnets": []}
    assert first[0].get("uniform") is None  # the inputs are not changed


def test_recipe_sweep_tables_pair_prioritized_and_uniform_runs_by_seed():
    """Prioritized is 2, 4, 6 points ahead of uniform at 3.0 MFLOPs on seeds 0-2: mean +4.00,
    paired t = 4 / (2 / sqrt(3)) with 2 degrees of freedom (p 0.0742), exact Wilcoxon p of 3
    positive differences 2 / 2^3. The candidate table pairs the max net with its control; a
    loss above the first one after warm-up counts as a spike."""
    from evidence.recipe_sweep import candidate_table, sampling_table
    rows = [_sweep_row(s, (0.70, 0.71, 0.72 + 0.02 * s, 0.80), (0.69, 0.70, 0.70, 0.78),
                       alone_test_accuracy=0.80 + 0.01 * s) for s in range(3)]
    rows[2]["max_train_loss_after_warmup"] = 2.5
    table = sampling_table(rows, "lr0.0375_w1").splitlines()
    at_3 = next(line for line in table if line.startswith("| 3.0 |"))
    assert at_3.split(" | ")[1:7] == ["74.00 ± 2.00 (3)", "70.00 ± 0.00 (3)", "3", "+4.00",
                                      "0.0742", "0.25 |"]
    mean = next(line for line in table if line.startswith("| mean of kept subnets (2 targets"))
    assert mean.split(" | ")[4] == "+2.50"  # per seed (2.0, 3.0) means: +1.5, +2.5, +3.5
    candidate = candidate_table(rows).splitlines()[2].split(" | ")
    assert candidate[1:6] == ["3", "80.00 ± 0.00", "81.00 ± 1.00", "-1.00 ± 1.00",
                              "70.00 ± 0.00"]
    assert candidate[6] == "1 of 3 |"


def test_recipe_choice_on_the_held_out_images_can_differ_from_the_test_images():
    """Issue #28 part 3: lr0.1 is 2 points better on the test images, lr0.0375_w1 1 point
    better on the held-out images (seeds 0-1; its seed 2, which lr0.1 lacks, is left out):
    the held-out choice is lr0.0375_w1 and the sentence says the choice changed. A spike on
    both lr0.1 runs makes it lose on either images. (Choosing on ``test_accuracy`` for both,
    or averaging over all seeds, failed this test.)"""
    from evidence.recipe_sweep import chosen_by, heldout_sentence, heldout_table

    def row(candidate, seed, test, heldout):
        row = _sweep_row(seed, (test,) * 4)
        for entry in row["subnets"]:
            entry["selection_accuracy"] = heldout
        return {**row, "candidate": candidate}
    rows = [row("lr0.0375_w1", 0, 0.70, 0.75), row("lr0.0375_w1", 1, 0.70, 0.75),
            row("lr0.0375_w1", 2, 0.10, 0.10), row("lr0.1", 0, 0.72, 0.74),
            row("lr0.1", 1, 0.72, 0.74)]
    assert (chosen_by(rows, "selection_accuracy"), chosen_by(rows, "test_accuracy")) == (
        "lr0.0375_w1", "lr0.1")
    assert heldout_sentence(rows).endswith("picks lr0.0375_w1, where the test images give "
                                           "lr0.1: the choice changed")
    assert heldout_table(rows).splitlines()[2].split(" | ")[1:4] == ["0, 1", "0 of 2",
                                                                       "75.00 ± 0.00"]
    for spiked in rows[3:]:
        spiked["max_train_loss_after_warmup"] = 9.0
    assert chosen_by(rows, "test_accuracy") == "lr0.0375_w1"


def test_means_over_kept_subnets_use_the_targets_every_compared_run_kept():
    """Issue #28 part 7: when one uniform run kept no subnet for 3.0 MFLOPs, the mean over
    kept subnets of every run (both samplings) is over 2.0 MFLOPs alone: prioritized 0.70 vs
    uniform 0.69 on each seed (+1.00), not 0.72 vs 0.69 from averaging other targets. (The
    per-run mean of whatever each run kept failed this test.)"""
    from evidence.recipe_sweep import sampling_table
    from evidence.study import pss_table
    rows = [_sweep_row(s, (0.70, 0.70, 0.74, 0.80), (0.69, 0.69, 0.69, 0.78)) for s in range(2)]
    rows[1]["uniform"]["subnets"] = [e for e in rows[1]["uniform"]["subnets"]
                                     if e["target"] != 3.0]
    mean = sampling_table(rows, "lr0.0375_w1").splitlines()[-1].split(" | ")
    assert mean[0] == "| mean of kept subnets (1 targets every run kept)"
    assert mean[1:5] == ["70.00 ± 0.00 (2)", "69.00 ± 0.00 (2)", "2", "+1.00"]
    study_rows = [{"sampling": "prioritized", "seed": s, "subnets": r["subnets"]}
                  for s, r in enumerate(rows)]
    study_rows += [{"sampling": "uniform", "seed": s, "subnets": r["uniform"]["subnets"]}
                   for s, r in enumerate(rows)]
    assert pss_table(study_rows).splitlines()[-1] == (
        "| mean over kept subnets (1 targets every run kept) | 70.00 ± 0.00 (2) | "
        "69.00 ± 0.00 (2) |")


def test_a_study_run_stopped_by_sigterm_ends_the_study_with_a_message(tmp_path, monkeypatch):
    """train_or_reuse: a preempted run is neither reused nor returned as if finished."""
    from evidence import study

    class Stopped:
        summary = {"step": 12, "finished": False, "preempted": True}
    monkeypatch.setattr(study.api, "train", lambda config, workdir: Stopped())
    (tmp_path / "summary.json").write_text(json.dumps(Stopped.summary))
    with pytest.raises(SystemExit, match="stopped at step 12 .*rerun the same command"):
        study.train_or_reuse(None, str(tmp_path))


def test_a_finished_run_of_another_config_is_never_reused(tmp_path, monkeypatch):
    """A planted finished run trained at another learning rate stops the study naming the
    key (reusing it failed this test before config.json was compared); the same run with the
    requested config is reused without training."""
    from evidence import study
    from conftest import tiny_config
    monkeypatch.setattr(study.api, "train", lambda config, workdir: pytest.fail("trained"))
    planted = {"step": 16, "eval_accuracy": 0.5}
    (tmp_path / "summary.json").write_text(json.dumps(planted))
    (tmp_path / "config.json").write_text(
        tiny_config(**{"optimizer.learning_rate": 0.2}).to_json())
    with pytest.raises(SystemExit, match=r"holds a run of another config \(optimizer."
                                         r"learning_rate: 0.2 -> 0.1\); use another"):
        study.train_or_reuse(tiny_config(), str(tmp_path))
    (tmp_path / "config.json").write_text(tiny_config().to_json())
    assert study.train_or_reuse(tiny_config(), str(tmp_path)) == planted


def test_a_committed_record_is_reused_only_for_its_own_config(tmp_path, monkeypatch):
    """A study continues on a machine whose runs/ is gone (issue #28 part 4): a run trained
    now leaves config.json and summary.json in its record folder; the same config is then
    reused from the record without its workdir, and a record of another learning rate stops
    the study naming the key. (Reading the record before comparing configs failed this.)"""
    from evidence import study
    from conftest import tiny_config
    summary = {"step": 16, "eval_accuracy": 0.5}

    def train(config, workdir):
        os.makedirs(workdir)
        (tmp_path / "run" / "config.json").write_text(config.to_json())
        (tmp_path / "run" / "summary.json").write_text(json.dumps(summary))
        (tmp_path / "run" / "provenance.jsonl").write_text('{"commit": "c0ffee"}\n')
        return types.SimpleNamespace(summary=summary)
    monkeypatch.setattr(study.api, "train", train)
    record = str(tmp_path / "record")
    assert study.train_or_reuse(tiny_config(), str(tmp_path / "run"), record) == summary
    assert json.loads((tmp_path / "record" / "config.json").read_text()) == json.loads(
        tiny_config().to_json())
    monkeypatch.setattr(study.api, "train", lambda config, workdir: pytest.fail("trained"))
    assert study.train_or_reuse(tiny_config(), str(tmp_path / "gone"), record) == summary
    with pytest.raises(SystemExit, match=r"record: holds a run of another config \(optimizer."
                                         r"learning_rate: 0.1 -> 0.2\)"):
        study.train_or_reuse(tiny_config(**{"optimizer.learning_rate": 0.2}),
                             str(tmp_path / "gone"), record)


def test_provenance_names_this_checkouts_scripts_relative_to_it(monkeypatch):
    """Raw outputs are committed: their command names a script of this checkout relative to
    it, never by this machine's absolute path (a script elsewhere keeps its path), and quotes
    an argument with spaces so the command reruns as written."""
    from common_jax import provenance
    monkeypatch.setattr(sys, "argv", [os.path.join(ROOT, "evidence", "dcff_design.py"),
                                      "--seeds=0"])
    assert provenance.provenance()["command"] == "python evidence/dcff_design.py --seeds=0"
    monkeypatch.setattr(sys, "argv", ["/elsewhere/tool.py", "-x"])
    assert provenance.provenance()["command"] == "python /elsewhere/tool.py -x"
    monkeypatch.setattr(sys, "argv", ["tool.py", "--arms=scratch 8,scratch 4"])  # reruns as is
    assert provenance.provenance()["command"] == "python tool.py '--arms=scratch 8,scratch 4'"


def test_recipe_sweep_flags_name_the_unknown_value_and_the_choices():
    from evidence.recipe_sweep import DATA, _choices
    with pytest.raises(SystemExit, match=r"--data: unknown \['mnist'\]; expected some of "
                                         r"\['embedded', 'fmnist_2000'"):
        _choices("embedded,mnist", DATA, "--data")


def test_curve_table_shows_one_seeds_first_loss_and_every_evaluation():
    """The table reads each variant's own curve of the requested seed: the first logged loss
    and every evaluation in step order, as percentages."""
    from evidence.study import curve_table

    def row(variant, seed, loss, accuracies):
        curve = [{"step": 50, "train_loss": loss}, {"step": 100, "train_loss": loss / 2}]
        curve += [{"step": 117 * (i + 1), "eval_accuracy": a} for i, a in enumerate(accuracies)]
        return {"variant": variant, "seed": seed, "curve": curve}

    rows = [row("faithful", 0, 1.5, [0.6, 0.8]), row("scratch", 0, 1.25, [0.75, 0.85]),
            row("scratch", 1, 9.0, [0.1, 0.1]), row("baseline", 0, 0.5, [0.9, 0.95])]
    assert curve_table(rows, 0, ("faithful", "scratch")) == "\n".join([
        "| variant (seed 0) | training loss at step 50 | test % after epoch 1 | 2 |",
        "|---|---|---|---|",
        "| faithful | 1.50 | 60.0 | 80.0 |",
        "| scratch | 1.25 | 75.0 | 85.0 |"])


def test_dcff_design_arms_and_their_configs(tmp_path):
    """The 2 x 2 study (issue #28 parts 1-2): every DCFF mode under both schedules at both
    lengths, scratch and the baseline at both lengths, and L1 from each baseline with 4
    fine-tuning epochs; the configs differ only where the arm says (schedule, epochs, the
    pruned baseline and fine-tuning learning rate of L1)."""
    from evidence import dcff_design, study
    arms = {a["arm"]: a for a in dcff_design.arms()}
    assert len(arms) == 2 + 8 + 2 + 2
    assert (arms["l1 4+4"]["total_epochs"], arms["l1 8+4"]["total_epochs"]) == (8, 12)
    root = str(tmp_path)
    for e in (4, 8):  # the pruned baselines the L1 configs start from
        pruned = tmp_path / f"baseline_{e}_seed3" / "pruned"
        pruned.mkdir(parents=True)
        (pruned / "model.json").write_text("{}")
    configs = {name: dcff_design.arm_config(arm, 3, study.FULL, "/data", root)
               for name, arm in arms.items()}
    base = configs["faithful epoch 8"]
    assert (base.dcff.schedule, base.num_epochs, base.seed) == ("epoch", 8, 3)
    progress = configs["faithful progress 8"]
    assert (progress.dcff.schedule, progress.dcff.update_every_steps) == ("progress", 3)
    assert configs["stable epoch 4"].dcff.mode == "stable"
    assert configs["stable epoch 4"].num_epochs == 4
    assert configs["scratch 8"].dcff.mode == "scratch"
    assert configs["baseline 8"].method != "dcff" and configs["baseline 8"].num_epochs == 8
    l1 = configs["l1 8+4"]
    assert l1.init_from == os.path.join(root, "baseline_8_seed3", "pruned")
    assert (l1.num_epochs, l1.optimizer.learning_rate, l1.dcff.mode) == (4, 0.02, "scratch")
    assert len({dcff_design.workdir_name(a, 3) for a in arms.values()}) == len(arms)


def test_dcff_design_pairs_schedule_length_and_controls_by_seed():
    """Progress beats epoch by 1 point on each of 3 seeds at 8 epochs (mean +1.00); 8 epochs
    beat 4 by 2 points for scratch; the L1 rows pair with the 8-epoch arms. (Pairing the
    schedule comparison across lengths, or L1 4+4 with 4-epoch arms, failed this test.)"""
    from evidence import dcff_design
    rows = []
    for seed in range(3):
        for arm in dcff_design.arms():
            acc = 0.80 + 0.01 * seed + 0.005 * (arm["total_epochs"] > 4) * 4
            acc += 0.01 * (arm["schedule"] == "progress") * (arm["epochs"] == 8)
            rows.append({**arm, "seed": seed, "test_accuracy": acc, "flops": 15.5e6})
    table = dcff_design.paired_table(rows).splitlines()

    def cells(comparison):
        return next(line for line in table if f"| {comparison} |" in line).split(" | ")[2:4]
    assert cells("faithful progress 8 - faithful epoch 8") == ["3", "+1.00"]
    assert cells("faithful progress 4 - faithful epoch 4") == ["3", "+0.00"]
    assert cells("scratch 8 - scratch 4") == ["3", "+2.00"]
    assert cells("stable progress 8 - l1 4+4") == ["3", "+1.00"]
    assert cells("scratch 8 - l1 8+4") == ["3", "+0.00"]
    arm_table = dcff_design.arm_table(rows)
    assert "| l1 | - | 8 + 4 fine-tuning (12) | 15.50 | 83.00 ± 1.00 (n=3) |" in arm_table


def test_dcff_design_sentences_read_the_paired_comparisons():
    """The reading's sentences name each difference with its own arms: progress adds
    1.0-1.3 points over seeds 0-3 (mean +1.15), and stable's per-epoch arms lose 0.5 more
    (its schedule difference +1.65); a noise by variant, length and seed makes every other
    p defined. Mutants that failed it: the schedule sentence pairing stable's progress arm with
    faithful's per-epoch arm; the Bonferroni bound divided by the comparisons that have a
    p below 0.05 instead of all that were tested."""
    from scipy import stats
    from evidence import dcff_design
    rows, acc = [], {}
    for seed in range(4):
        for arm in dcff_design.arms():
            key = sum(map(ord, arm["variant"])) + 3 * arm["total_epochs"]  # not the schedule
            noise = 1e-4 * (key * (seed + 1) ** 2 % 11)
            value = 0.85 + 0.01 * (arm["total_epochs"] > 4) + noise
            value += (0.01 + 0.001 * seed) * (arm["schedule"] == "progress")
            value -= 0.005 * (arm["variant"] == "stable" and arm["schedule"] == "epoch")
            rows.append({**arm, "seed": seed, "test_accuracy": value, "flops": 15.5e6})
            acc.setdefault(arm["arm"], []).append(value)
    p_faithful = stats.ttest_rel(acc["faithful progress 8"], acc["faithful epoch 8"]).pvalue
    p_stable = stats.ttest_rel(acc["stable progress 8"], acc["stable epoch 8"]).pvalue
    assert dcff_design.schedule_sentence(rows).endswith(
        f"at 8 epochs: faithful +1.15 points (p {p_faithful:.3g}), "
        f"stable +1.65 points (p {p_stable:.3g})")
    p_scratch = stats.ttest_rel(acc["faithful progress 8"], acc["scratch 8"]).pvalue
    assert "faithful progress 8 +1.1" in dcff_design.scratch_sentence(rows)
    assert f"(p {p_scratch:.3g}), stable progress 8" in dcff_design.scratch_sentence(rows)
    control = dcff_design.control_sentence(rows)
    assert control.startswith("L1 pruned from the full-width network trained as long as DCFF "
                              "(8 epochs; 12 in all) and fine-tuned for 4 reaches 86.0")
    pairs = dcff_design.comparisons()
    kept = sum(stats.ttest_rel(acc[a], acc[b]).pvalue < 0.05 / len(pairs) for _, a, b in pairs)
    bonferroni = dcff_design.bonferroni_sentence(rows)
    assert 0 < kept < len(pairs) == 27
    assert bonferroni.startswith(f"{kept} of the 27 paired comparisons keep a t-test p under "
                                 "the Bonferroni bound 0.05 / 27 = 0.0019: ")
    assert "stable progress 4 - stable epoch 4 (+1.65)" in bonferroni


def test_dcff_design_arms_flag_names_the_unknown_arm_and_the_choices(monkeypatch, tmp_path):
    """--arms picks arms by name, in the study's order, and refuses an unknown one before any
    data is read."""
    from evidence import dcff_design
    ran = []
    monkeypatch.setattr(dcff_design, "run_arm", lambda arm, seed, *_: ran.append(
        (arm["arm"], seed)))
    monkeypatch.setattr(sys, "argv", ["dcff_design.py", "--tiny", "--report", "--seeds=0,1",
                                      "--arms=scratch 2, baseline 1", f"--workdir={tmp_path}"])
    dcff_design.main()
    assert ran == [("baseline 1", 0), ("scratch 2", 0), ("baseline 1", 1), ("scratch 2", 1)]
    monkeypatch.setattr(sys, "argv", ["dcff_design.py", "--arms=scratch 8,scratch 16",
                                      "--data_dir=/nonexistent"])
    with pytest.raises(SystemExit, match=r"--arms: unknown arm\(s\) 'scratch 16'; allowed: "
                                         r"baseline 4, l1 4\+4, .*scratch 8$"):
        dcff_design.main()
