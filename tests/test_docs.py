"""The quickstart notebook runs top to bottom; every launch command in the guides is accepted."""

import json
import os
import re
import shlex
import statistics
import sys

import pytest

from conftest import ROOT, launch, require

GUIDES = ["docs/tpu_pod.md", "docs/multi_gpu.md"]


def guide_commands():
    for guide in GUIDES:
        with open(os.path.join(ROOT, guide)) as f:
            text = f.read()
        for match in re.finditer(r"python launch\.py ([^\n\"]+)", text):
            yield guide, match.group(1)


def test_guides_contain_commands():
    assert len(list(guide_commands())) >= 7


@pytest.mark.parametrize("guide,args", list(guide_commands()))
def test_guide_commands_pass_dry_run(guide, args):
    result = launch(*shlex.split(args), "--dry_run")
    assert result.returncode == 0, f"{guide}: {args}\n{result.stderr}"
    assert '"dry_run": "ok"' in result.stdout


def test_readme_ladder_table_is_the_committed_ladder():
    """README's Deploy table is docs/deploy/ladder.json (the embedded run's ladder export)."""
    from pssnet_jax import ladder
    with open(os.path.join(ROOT, "docs", "deploy", "ladder.json")) as f:
        document = json.load(f)
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert ladder.markdown_table(document) in readme
    assert ladder.latency_sentence(document) in " ".join(readme.split())
    assert document["measured_on"] and all(r["onnxruntime_ms"] for r in document["rungs"])


def check_committed_run(name: str) -> tuple[dict, str]:
    """README's table and run sentence of a PSS-Net run committed in docs/results/<name>/
    (its subnets.json and summary.json): (summary, README with its lines joined)."""
    from pssnet_jax import report
    folder = os.path.join(ROOT, "docs", "results", name)
    with open(os.path.join(folder, "subnets.json")) as f:
        document = json.load(f)
    with open(os.path.join(folder, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert report.markdown_table(document) in readme
    assert (document["max"]["test_accuracy"], document["min"]["test_accuracy"]) == (
        summary["eval_accuracy"], summary["min_eval_accuracy"])
    assert report.run_sentence(summary) in " ".join(readme.split())
    return summary, " ".join(readme.split())


def test_readme_pssnet_table_is_the_committed_default_run():
    """README's table of kept subnets is docs/results/embedded_default/subnets.json (the
    raw output of python launch.py), with the summary's max and min net accuracies."""
    summary, readme = check_committed_run("embedded_default")
    # the README's opening and results lines round that training loop to minutes
    minutes = f"about {summary['wall_time_s'] / 60:.0f} minutes"
    assert f"offline, {minutes} on 2 CPU cores" in readme
    assert f"in {minutes} on a 2-core CPU machine (the training loop of seed 0" in readme


def test_readme_resnet_supernet_table_is_the_committed_run():
    """README's ResNet-20 supernet table and sentence are docs/results/embedded_resnet/
    (python launch.py --config=configs/pssnet/embedded_resnet.py)."""
    summary, _ = check_committed_run("embedded_resnet")
    assert summary["model"] == "resnet20"


def test_readme_dcff_soft_phase_and_study_duration_are_computed():
    """README's share of the DCFF soft phase is the temperature schedule's (dcff_jax.fusion):
    only epoch 0 has T below the bound, at 300 and at 4 epochs; the evidence study's minutes
    are its results.json ``wall_time_s``."""
    from dcff_jax import fusion
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = " ".join(f.read().split())
    bound = min(fusion.temperature(1, e) for e in (300, 4)) // 100 * 100
    assert all(fusion.temperature(0, e) < bound <= fusion.temperature(1, e) for e in (300, 4))
    assert (f"(T < {bound:,.0f} is epoch 0: {1 / 300:.1%} of the paper's 300 epochs, "
            f"{1 / 4:.0%} of a 4-epoch run)") in readme
    with open(os.path.join(ROOT, "docs", "evidence", "results.json")) as f:
        minutes = json.load(f)["wall_time_s"] / 60
    assert f"`python -m evidence.study`, about {minutes:.0f} minutes on 2 CPU cores" in readme


def test_readme_and_results_tables_are_the_committed_recipe_sweep():
    """README's main job over seeds and docs/RESULTS.md's sweep, robustness and sampling tables
    are evidence.recipe_sweep's tables of docs/evidence/recipe_sweep.json (its raw output)."""
    from evidence import recipe_sweep
    with open(os.path.join(ROOT, "docs", "evidence", "recipe_sweep.json")) as f:
        rows = json.load(f)["rows"]
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(ROOT, "docs", "RESULTS.md")) as f:
        results = f.read()
    assert recipe_sweep.main_job_table(rows) in readme
    assert recipe_sweep.main_job_sentence(rows) in " ".join(readme.split())  # across lines
    assert recipe_sweep.alone_sentence(rows) in " ".join(readme.split())
    assert f"Seed 0 of the sweep (the same config on one core) {recipe_sweep.seed_sentence(rows)}" \
        in " ".join(readme.split())
    with open(os.path.join(ROOT, "docs", "results", "embedded_default", "summary.json")) as f:
        summary = json.load(f)
    for sentence in (recipe_sweep.heldout_sentence(rows), recipe_sweep.sampling_sentence(rows),
                     recipe_sweep.scale_sentence(rows, summary),
                     recipe_sweep.paper_scale_sentence()):
        assert sentence in " ".join(results.split()), sentence[:60]
    spikes = recipe_sweep.old_default_sentence(rows)
    assert spikes in " ".join(readme.split()) and spikes in " ".join(results.split())
    for table in (recipe_sweep.sweep_table(rows), recipe_sweep.candidate_table(rows),
                  recipe_sweep.robustness_table(rows), recipe_sweep.heldout_table(rows),
                  recipe_sweep.sampling_table(rows, recipe_sweep.CHOSEN)):
        assert table in results, table[:80]


def test_results_tables_are_the_committed_evidence_studies():
    """docs/RESULTS.md's DCFF and PSS-Net tables of the 4-epoch study are study.py's tables of
    docs/evidence/results.json (its curves: of the seed-0 rerun in dcff_4epoch_seed0/); those
    of DCFF at the paper's proportions, of docs/evidence/dcff_progress/results.json (5 seeds,
    with the paired tests and curves)."""
    from evidence import study
    with open(os.path.join(ROOT, "docs", "RESULTS.md")) as f:
        results = f.read()
    with open(os.path.join(ROOT, "docs", "evidence", "results.json")) as f:
        first = json.load(f)
    with open(os.path.join(ROOT, "docs", "evidence", "dcff_progress", "results.json")) as f:
        progress = json.load(f)
    with open(os.path.join(ROOT, "docs", "evidence", "dcff_4epoch_seed0", "results.json")) as f:
        rerun = json.load(f)
    assert progress["dcff_schedule"] == "progress" and len(progress["seeds"]) >= 5
    for table in (study.dcff_table(first["dcff"]), study.pss_table(first["pss"]),
                  study.curve_table(rerun["dcff"], 0),
                  study.dcff_table(progress["dcff"]), study.paired_table(progress["dcff"]),
                  study.curve_table(progress["dcff"], 0)):
        assert table in results, table[:80]
    assert study.pss_seed_sentence(first["pss"]) in " ".join(results.split())
    assert study.pss_spread_sentence(first["pss"]) in " ".join(results.split())
    assert study.duration_sentence(first) in " ".join(results.split())
    from evidence import embedded_dcff
    with open(os.path.join(ROOT, "docs", "results", "embedded_dcff.json")) as f:
        embedded = json.load(f)
    for sentence in (study.rerun_sentence(rerun["dcff"], first["dcff"]),  # section 1a
                     study.first_epoch_sentence(rerun["dcff"]),
                     embedded_dcff.fused_vs_scratch(embedded)):
        assert sentence in " ".join(results.split()), sentence[:60]
    for sentence in (study.dcff_claim_sentence(progress["dcff"]),
                     study.wins_sentence(progress["dcff"]),
                     study.dcff_means_sentence(progress["dcff"])):  # section 1b's reading
        assert sentence in " ".join(results.split()), sentence[:60]


def test_results_and_readme_dcff_design_are_the_committed_study():
    """docs/RESULTS.md section 1c's tables and reading, and the README's claims of both
    papers, are rendered from the raw outputs: docs/evidence/dcff_design/results.json (every
    arm with 5 seeds) and docs/evidence/recipe_sweep.json."""
    from evidence import dcff_design, recipe_sweep
    with open(os.path.join(ROOT, "docs", "evidence", "dcff_design", "results.json")) as f:
        rows = json.load(f)["rows"]
    counts = {arm["arm"]: sum(r["arm"] == arm["arm"] for r in rows)
              for arm in dcff_design.arms()}
    assert set(counts.values()) == {5}, counts
    with open(os.path.join(ROOT, "docs", "RESULTS.md")) as f:
        results = f.read()
    for table in (dcff_design.arm_table(rows), dcff_design.paired_table(rows)):
        assert table in results, table[:80]
    acc = dcff_design.accuracies(rows)
    with open(os.path.join(ROOT, "docs", "evidence", "dcff_progress", "results.json")) as f:
        rerun = {"baseline": "baseline 8", "faithful": "faithful progress 8",  # section 1b
                 "stable": "stable progress 8", "scratch": "scratch 8", "l1": "l1 4+4"}
        for row in json.load(f)["dcff"]:  # "exactly the test accuracies of section 1b"
            assert acc[rerun[row["variant"]]][row["seed"]] == row["test_accuracy"], row

    def diff(a, b):  # mean paired difference, for the reading's words
        return statistics.mean(acc[a][s] - acc[b][s] for s in acc[a])
    dcff = [f"{m} {s}" for m in dcff_design.MODES for s in dcff_design.SCHEDULES]
    (short, long), tune = dcff_design.LENGTHS, dcff_design.FINETUNE_EPOCHS
    assert all(diff(f"{m} progress {e}", f"{m} epoch {e}") > 0  # "ahead at both lengths"
               for m in dcff_design.MODES for e in (short, long))
    assert all(diff(f"{a} {long}", f"{a} {short}") > 0 for a in [*dcff, "scratch"])
    assert all(diff(f"{a} {e}", f"scratch {e}") < 0 for a in dcff for e in (short, long))
    progress = [f"{m} progress {long}" for m in dcff_design.MODES]
    assert all(diff(a, f"l1 {long}+{tune}") < 0 for a in [*progress, f"scratch {long}"])
    assert 0 < max(diff(a, f"l1 {short}+{tune}") for a in progress) < diff(
        f"scratch {long}", f"l1 {short}+{tune}")
    for sentence in (dcff_design.schedule_sentence(rows), dcff_design.length_sentence(rows),
                     dcff_design.scratch_sentence(rows), dcff_design.control_sentence(rows),
                     dcff_design.bonferroni_sentence(rows)):
        assert sentence in " ".join(results.split()), sentence[:60]
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = " ".join(f.read().split())
    with open(os.path.join(ROOT, "docs", "evidence", "recipe_sweep.json")) as f:
        sweep = json.load(f)["rows"]
    with open(os.path.join(ROOT, "docs", "results", "embedded_default", "summary.json")) as f:
        summary = json.load(f)
    for sentence in (dcff_design.claim_sentence(rows), dcff_design.paper_scale_sentence(),
                     recipe_sweep.sampling_claim_sentence(sweep),
                     recipe_sweep.scale_sentence(sweep, summary),
                     recipe_sweep.paper_scale_sentence()):
        assert sentence in readme, sentence[:60]


def test_readme_dcff_config_profiles_are_the_tested_ones():
    """README's thop FLOPs / params of the CIFAR DCFF configs are test_dcff.PROFILES, which
    test_dcff checks against --mode=profile (and against dcff.md §5)."""
    from test_dcff import PROFILES
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = " ".join(f.read().split())
    cifar = [(name, flops, params) for name, flops, params in PROFILES if "cifar" in name]
    assert len(cifar) == 4
    listed = ", ".join(f"{flops:.2f}M / {params:.4f}M" for _, flops, params in cifar)
    assert f"({listed} thop FLOPs / params)" in readme


def test_readme_dcff_table_is_the_committed_embedded_runs():
    """README's DCFF table on the embedded data is docs/results/embedded_dcff.json (written by
    python -m evidence.embedded_dcff), rendered by evidence.embedded_dcff.markdown_table."""
    from evidence import embedded_dcff
    with open(os.path.join(ROOT, "docs", "results", "embedded_dcff.json")) as f:
        document = json.load(f)
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert [r["config"] for r in document["rows"]] == [
        path + (f":{arg}" if arg else "") for path, arg, _ in embedded_dcff.RUNS]
    assert embedded_dcff.markdown_table(document) in readme
    assert embedded_dcff.baseline_sentence(document) in " ".join(readme.split())


def test_benchmark_tables_are_the_committed_raw_outputs():
    """Every table of benchmarks/RESULTS.md and docs/latency.md's predictor table are
    benchmarks/result_tables.py's renderings of benchmarks/results/*.json (written by
    benchmarks/cpu_results.sh), and each document names the machine line of its outputs."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import result_tables
    with open(os.path.join(ROOT, "benchmarks", "RESULTS.md")) as f:
        results = f.read()
    with open(os.path.join(ROOT, "docs", "latency.md")) as f:
        latency = f.read()
    tables = result_tables.all_tables()
    for name, table in tables.items():
        assert table in (latency if name.startswith("latency_predictor") else results), name
    for raw in ("compile_time_embedded.json", "compile_probe_embedded.json",
                "compile_probe_imagenet.json", "throughput_cpu.json"):
        assert result_tables.machine_line(result_tables.load(raw)) in results, raw
    for raw in result_tables.POD_STAGES:
        line = result_tables.pod_machine_line(result_tables.load(raw))
        assert line in results.replace("\n", " "), raw
    line = result_tables.restart_machine_line(result_tables.load("pod_restart.json"))
    assert line in results.replace("\n", " ")
    for finding in result_tables.compile_probe_findings(
            result_tables.load("compile_probe_embedded.json"),
            result_tables.load("compile_probe_imagenet.json")):  # the probes' reading
        assert finding in " ".join(results.split()), finding[:60]
    assert result_tables.depthwise_sentence(
        result_tables.load("throughput_cpu.json"),
        result_tables.load("throughput_cpu_conv.json")) in " ".join(results.split())
    for raw in result_tables.INPUT_RUNS:
        line = result_tables.input_machine_line(result_tables.load(raw))
        assert line in results.replace("\n", " "), raw


def test_latency_run_table_is_the_committed_run():
    """docs/latency.md's embedded latency-pool run is docs/results/embedded_latency/."""
    from pssnet_jax import report
    folder = os.path.join(ROOT, "docs", "results", "embedded_latency")
    with open(os.path.join(folder, "subnets.json")) as f:
        document = json.load(f)
    with open(os.path.join(ROOT, "docs", "latency.md")) as f:
        latency = f.read()
    assert report.markdown_table(document) in latency
    with open(os.path.join(folder, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(ROOT, "docs", "results", "embedded_default", "summary.json")) as f:
        default = json.load(f)
    for sentence in (report.latency_run_sentence(summary, document),
                     report.accuracy_comparison(summary, default)):
        assert sentence in " ".join(latency.split()), sentence[:60]
    assert all(e["latency_ms"] for e in document["subnets"])


def test_readme_links_the_notebook_and_guides():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    for target in ["examples/quickstart.ipynb", *GUIDES]:
        assert f"({target})" in readme, target


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    nbformat = require("nbformat")
    nbclient = require("nbclient")
    notebook = nbformat.read(os.path.join(ROOT, "examples", "quickstart.ipynb"), as_version=4)
    notebook.cells = [c for c in notebook.cells if "install" not in c.metadata.get("tags", [])]
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "latency" in outputs and "budget" in outputs
    assert os.path.exists(tmp_path / "runs_quickstart" / "pssnet" / "flops_accuracy.png")
