"""PSS-Net end to end on the embedded data: pools, resume, selection, switching, export."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common_jax import checkpoint, data, export, train_state
from common_jax.loop import NonFiniteLoss
from pssnet_dcff import api
from conftest import override
from common_jax import mesh as mesh_lib
from pssnet_jax import draw as draw_lib, report, sampler, supernet, supernet_run, switch
from pssnet_jax.host_state import HostState
from pssnet_jax.space import Subnet, space_from_config


def pss_tiny(**overrides):
    """The embedded PSS-Net config shrunk: 2 resolutions, 8 steps an epoch, 2 epochs."""
    from configs.pssnet.embedded import get_config
    c = get_config()
    c.dataset.num_train_examples = 640
    c.dataset.holdout_examples = 128
    c.dataset.num_eval_examples = 256
    c.batch_size = 64
    c.num_epochs = 2
    c.log_every_steps = 4
    c.async_checkpoints = False
    c.pssnet.resolutions = (24, 28, 4)
    c.pssnet.targets = (3.5, 6.0, 0.5)
    c.pssnet.map_samples = 4000
    c.pssnet.pool_size = 2
    c.pssnet.topk = 2
    c.pssnet.recal_batches = 2
    return override(c, **overrides)


def fake_step(state, batch, subnet):
    """Stands in for the compiled step: a deterministic score per subnet."""
    score = jnp.float32(-float(sum(subnet.channels)) / 1e3 - subnet.resolution)
    return state, {"score": score, "loss": score, "kl_mid": score, "kl_min": score}


def sampling(config, table=None):
    """(sampling plan, fresh host state) of a config, as the trainer builds them."""
    space = space_from_config(config, data.DATASETS[config.dataset.name])
    plan = draw_lib.plan_for(config, space, table)
    cfg = config.pssnet
    return plan, HostState.fresh(plan.targets(), cfg.pool_size, cfg.ema, config.seed)


def run_pools(config, steps):
    plan, host = sampling(config)
    drawn = []
    for t in range(steps):
        draw_lib.sampled_step(plan, host, fake_step, None, None, t, t // 10, 4, 0)
        if host.pending:  # the lagged mode: this step's target, not yet in its pool
            drawn.append(host.pending.target)
    host.flush()
    return host.pools["flops"].entries, drawn


def test_lagged_pools_equal_synchronous_pools_without_consecutive_repeats():
    from configs.pssnet.mobilenet_v2_imagenet import get_config
    compared = 0
    for seed in range(12):
        config = override(get_config(), seed=seed, **{"pssnet.pool_size": 2,
                                                      "pssnet.map_samples": 20_000})
        lagged, drawn = run_pools(config, 40)
        if any(a == b for a, b in zip(drawn, drawn[1:])):
            continue
        synced, _ = run_pools(override(config, **{"pssnet.sync_pools": True}), 40)
        assert synced == lagged
        assert sum(len(p) for p in lagged.values()) > 20
        compared += 1
    assert compared >= 1


def test_non_finite_pss_losses_name_the_step_and_the_subnets():
    from configs.pssnet.mobilenet_v2_imagenet import get_config
    config = override(get_config(), **{"pssnet.map_samples": 20_000})
    plan, host = sampling(config)
    calls = []

    def nan_at_step_3(state, batch, subnet):
        state, metrics = fake_step(state, batch, subnet)
        calls.append(subnet)
        return state, dict(metrics, kl_mid=jnp.float32(np.nan if len(calls) == 3 else 0))

    def step(t):
        draw_lib.sampled_step(plan, host, nan_at_step_3, None, None, t, 0, 1,
                              plan.space.min_subnet().resolution)

    step(0)
    step(1)
    step(2)  # NaN in step 3's metrics; checked after step 4 is dispatched
    with pytest.raises(NonFiniteLoss, match=r"non-finite \{'kl_mid': nan\} at step 3: "
                                            r"middle subnet \d+ px, channels \[.*\] "
                                            r"\(target \d+ MFLOPs\), min net 128 px"):
        step(3)


@pytest.fixture(scope="module")
def pss_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("pss"))
    config = pss_tiny()
    return config, workdir, api.train(config, workdir).summary


def final_host_state(config, workdir):
    mngr = checkpoint.manager(workdir, read_only=True)
    pss = supernet_run.setup(config)
    abstract = train_state.abstract_state(pss.run, pss.init())
    return checkpoint.restore(mngr, mngr.latest_step(), abstract)[1]


def test_run_leaves_subnets_plot_and_max_net_summary(pss_run):
    config, workdir, summary = pss_run
    document = switch.load_subnets(workdir)
    assert len(document["subnets"]) >= 3
    assert os.path.getsize(os.path.join(workdir, "flops_accuracy.png")) > 1000
    assert summary["flops"] == document["max"]["flops"] and summary["min_flops"] == (
        document["min"]["flops"])
    for entry in document["subnets"]:
        assert abs(entry["flops"] / 1e6 - entry["target"]) <= 0.25 + 1e-9
        assert entry["selection_accuracy"] is not None and 0 <= entry["test_accuracy"] <= 1
        assert entry["rank"] in (1, 2)
    assert summary["eval_accuracy"] == document["max"]["test_accuracy"]
    # Every program was compiled before the first step (pssnet_jax/precompile.py): none is
    # compiled or loaded later, in training, evaluation or selection.
    assert summary["xla_programs_after_startup"] == 0
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        logged = [json.loads(line) for line in f if "loss_kl_mid" in line]
    assert [line["step"] for line in logged] == [4, 8, 12, 16]
    for line in logged:  # TensorBoard diagnostics of every log step
        assert np.isfinite([line["loss_max_ce"], line["loss_kl_mid"], line["loss_kl_min"]]).all()
        assert line["middle_resolution"] in (24, 28) and 3.0 < line["middle_mflops"] < 6.0
        assert 0 < line["pool_fill_flops"] <= 1
    # p_e and t_e follow their schedules: 1 in epoch 0, 0.01 ** (1 / 2) in epoch 1 of 2.
    assert (logged[0]["p_e"], logged[0]["t_e"]) == (1.0, 1.0)
    assert logged[-1]["p_e"] == pytest.approx(0.1) and logged[-1]["t_e"] == pytest.approx(0.1)


def test_pools_are_restored_exactly_on_resume(pss_run, tmp_path):
    config, workdir, summary = pss_run
    assert api.train(config, str(tmp_path), stop_after=5).summary["step"] == 5
    resumed = api.train(config, str(tmp_path)).summary
    assert (resumed["train_loss"], resumed["eval_loss"]) == (summary["train_loss"],
                                                             summary["eval_loss"])
    straight = final_host_state(config, workdir)["method"]
    again = final_host_state(config, str(tmp_path))["method"]
    assert straight == again and straight["pools"]["flops"]["pools"]
    with open(os.path.join(workdir, "subnets.json")) as a, open(tmp_path / "subnets.json") as b:
        assert json.load(a) == json.load(b)


def test_budget_switching_and_export(pss_run, tmp_path):
    config, workdir, summary = pss_run
    document = switch.load_subnets(workdir)
    budget = document["subnets"][0]["flops"] / 1e6 + 0.01
    entry = switch.best_for_budget(document, budget)
    assert entry["flops"] <= budget * 1e6
    with pytest.raises(ValueError, match="below the smallest kept subnet"):
        switch.best_for_budget(document, document["min"]["flops"] / 1e6 - 0.1)
    cfg = override(pss_tiny(), **{"export.flops": budget})
    path = api.export(cfg, workdir, os.path.join(workdir, "export"))
    model, variables, meta = export.load_exported(path)
    assert meta["subnet"] == Subnet.from_json(entry).to_json() and meta["flops"] == entry["flops"]
    # The exported plain subnet equals the masked supernet with the same recalibrated stats.
    pss = supernet_run.setup(cfg)
    state, _ = checkpoint.read_checkpoint(
        workdir, train_state.abstract_state(pss.run, pss.init()))
    subnet = Subnet.from_json(entry)
    stats = pss.recalibrated_stats(state, subnet)
    batch = next(pss.run.input.eval_batches())
    images = pss.run.normalize(batch["image"], jnp.float32)
    masked = pss.model.apply({"params": state["params"], "batch_stats": stats}, images,
                             supernet.widths_of(pss.space.arch(subnet)), subnet.resolution,
                             train=False)
    np.testing.assert_allclose(export.predict(model, variables, meta, batch["image"]), masked,
                               rtol=1e-4, atol=1e-4)


def test_export_budget_below_the_smallest_subnet_is_one_line_before_any_compile(pss_run):
    from test_compile_cache import PSS_TINY_FLAGS
    from conftest import launch
    _, workdir, _ = pss_run
    result = launch(*PSS_TINY_FLAGS, f"--workdir={workdir}", "--mode=export",
                    "--config.export.flops=0.5")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "FLOPs budget 0.5 MFLOPs is below the smallest kept subnet" in lines[0]
    assert "compiled" not in result.stdout


def test_profile_reports_max_and_min_flops():
    from configs.pssnet.mobilenet_v2_imagenet import get_config as v2
    from configs.pssnet.mobilenet_v1_imagenet import get_config as v1
    for get_config, (flops, min_flops) in ((v2, (300.84, 69.15)), (v1, (568.79, 106.78))):
        totals = json.loads(api.profile_report(get_config()).splitlines()[-1])
        assert (round(totals["flops"] / 1e6, 2), round(totals["min_flops"] / 1e6, 2)) == (
            flops, min_flops)


@pytest.mark.parametrize("key,value,message", [
    ("pssnet.selection", "best", "config.pssnet.selection='best'"),
    ("pssnet.resolutions", (16, 32, 4), "must equal the crop size 28"),
    ("dataset.holdout_examples", 0, "needs config.dataset.holdout_examples > 0"),
    ("model.name", "vgg16", "PSS-Net supernets are"),
    ("export.flops", -1.0, "config.export.flops=-1.0"),
    ("export.latency_runs", 0, "config.export.latency_runs=0 and latency_batches=(1, 32)"),
    ("export.latency_batches", (1, 0), "latency_batches=(1, 0): expected a positive int"),
    ("export.subnet", "{resolution: 24}", "is not JSON"),
    ("export.subnet", '{"resolution": 24}', 'expected exactly {"resolution": R, "channels"'),
    ("export.subnet", '{"resolution": 20, "channels": [32, 16, 24, 32, 64, 96, 160, 320]}',
     "resolution 20 is outside the structure space; allowed: "),
    ("export.subnet", '{"resolution": 24, "channels": [32, 16, 24, 32, 64, 96, 160, 300]}',
     "stage 7 width 300 is outside the structure space"),
    ("init_from", "common_jax", "a PSS-Net run starts from a PSS-Net workdir"),
    ("pssnet.bn_group_size", 5, "bn_group_size=5 must divide config.batch_size=")])
def test_bad_pssnet_config_is_a_one_line_error(key, value, message):
    from pssnet_dcff import registry
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        registry.validate(override(pss_tiny(), **{key: value}))


@pytest.mark.slow
def test_split_and_single_step_agree(pss_run):
    config, workdir, _ = pss_run
    outs = []
    for mode in ("split", "single"):
        pss = supernet_run.setup(override(pss_tiny(), **{"pssnet.step_mode": mode}))
        state, _ = checkpoint.read_checkpoint(
            workdir, train_state.abstract_state(pss.run, pss.init()))
        batch = mesh_lib.global_batch(next(pss.run.input.train_batches(3)), pss.run.mesh)
        mid = pss.space.subnet(24, [0.8] * 9)
        new_state, metrics = pss.fns.step(
            state, batch, pss.widths(pss.max_subnet), (pss.widths(mid), 24),
            (pss.widths(pss.min_subnet), pss.min_subnet.resolution), mode)
        outs.append(jax.device_get((new_state["params"], metrics)))
    (p1, m1), (p2, m2) = outs
    for key in m1:
        np.testing.assert_allclose(m1[key], m2[key], rtol=1e-5, atol=1e-6, err_msg=key)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_uniform_sampling_control_draws_from_the_whole_space_and_records_scores():
    """sampling='uniform' (the US-Net-style control): middle subnets uniform over the space
    at every epoch, their scores recorded in the pool of their FLOPs target when there is
    one, so that the final selection works as with prioritized sampling."""
    config = pss_tiny(**{"pssnet.sampling": "uniform", "pssnet.pool_size": 50})
    plan, host = sampling(config)
    drawn = []
    for t in range(60):
        draw_lib.sampled_step(plan, host, fake_step, None, None, t, 1, 2, 0)
        drawn.append((host.pending.target, host.pending.subnet))
    host.flush()
    fmap = plan.maps["flops"]
    inside = [(t, s) for t, s in drawn if t is not None]
    assert 0 < len(inside) < 60  # some uniform subnets fall outside every target
    for target, subnet in inside:
        flops = report.costs(plan.space, subnet)["flops"]
        assert float(sampler.target_of(flops / 1e6, fmap.start, fmap.step)) == target
    assert len(host.pools["flops"]) == len({s for _, s in inside})
    assert len({s.resolution for _, s in drawn}) == 2  # both resolutions of the tiny space


def test_budget_ladder_through_the_cli_with_measured_latency_and_the_shipped_picker(
        pss_run, tmp_path):
    """--config.export.all=True --config.export.format=onnx: every kept subnet exported,
    ladder.json with the run's numbers and onnxruntime latencies, each artifact equal to its
    flax export, and pick_subnet.py (run without site-packages) choosing as the run does."""
    import subprocess
    import sys
    import onnxruntime
    from test_compile_cache import PSS_TINY_FLAGS
    from conftest import launch
    _, workdir, _ = pss_run
    out = tmp_path / "ladder"
    result = launch(*PSS_TINY_FLAGS, "--config.pssnet.pool_size=2", "--config.pssnet.topk=2",
                    f"--workdir={workdir}", "--mode=export", "--config.export.all=True",
                    "--config.export.format=onnx", "--config.export.latency_runs=5",
                    f"--export_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "ladder.json") as f:
        ladder = json.load(f)
    document = switch.load_subnets(workdir)
    entries = sorted(switch.candidates(document), key=lambda e: e["flops"])
    assert len(ladder["rungs"]) == len(entries) >= 4
    assert "onnxruntime" in ladder["measured_on"] and ladder["export_format"] == "onnx"
    assert (out / "ladder.png").stat().st_size > 1000
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    for rung, entry in zip(ladder["rungs"], entries):
        for key in ("flops", "params", "test_accuracy", "selection_accuracy", "resolution",
                    "channels", "target"):
            assert rung[key] == entry[key], key
        assert set(rung["onnxruntime_ms"]) == {"1", "32"}
        assert 0 < rung["onnxruntime_ms"]["1"] < rung["onnxruntime_ms"]["32"]
        model, variables, meta = export.load_exported(str(out / rung["directory"]))
        reference = np.asarray(export.predict(model, variables, meta, images))
        session = onnxruntime.InferenceSession(str(out / rung["directory"] / "model.onnx"))
        logits = session.run(None, {"images": images})[0]
        np.testing.assert_allclose(logits, reference, rtol=1e-4,
                                   atol=1e-4 * np.abs(reference).max())

    def pick(*args):
        return subprocess.run([sys.executable, "-I", "-S", "pick_subnet.py", "ladder.json",
                               *args], cwd=out, capture_output=True, text=True, timeout=60)

    smallest = entries[0]["flops"] / 1e6
    for budget in (smallest, entries[2]["flops"] / 1e6 + 0.01, 100.0):
        chosen = json.loads(pick(f"--flops={budget}").stdout)
        expected = switch.best_for_budget(document, budget)
        assert (chosen["channels"], chosen["resolution"]) == (expected["channels"],
                                                              expected["resolution"])
        assert os.path.exists(chosen["path"])
    below = pick(f"--flops={smallest - 0.1}")
    assert below.returncode == 2 and "below the smallest rung" in below.stderr
    fastest = min(ladder["rungs"], key=lambda r: r["onnxruntime_ms"]["1"])
    chosen = json.loads(pick(f"--latency_ms={fastest['onnxruntime_ms']['1']}").stdout)
    assert chosen["directory"] == fastest["directory"] or (
        chosen["onnxruntime_ms"]["1"] <= fastest["onnxruntime_ms"]["1"])
