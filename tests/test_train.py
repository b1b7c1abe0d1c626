"""The shared training loop on the embedded data: outputs, exact resume, eval, export."""

import glob
import json
import os
import subprocess

import jax
import numpy as np
import pytest

from common_jax import (checkpoint, data, export, provenance, run as run_lib,
                        train as plain_train)
from pssnet_dcff import api
from conftest import tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny 16-step run shared by the tests that only read its outputs."""
    workdir = str(tmp_path_factory.mktemp("run"))
    config = tiny_config()
    return config, workdir, api.train(config, workdir).summary


def test_run_writes_summary_metrics_and_checkpoints(trained):
    config, workdir, summary = trained
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f) == summary
    assert summary["step"] == 16
    for key in ("flops", "params", "flops_thop"):
        assert isinstance(summary[key], int) and summary[key] > 0
    for key in ("train_loss", "eval_loss", "eval_accuracy"):
        assert isinstance(summary[key], float) and np.isfinite(summary[key])
    assert summary["eval_accuracy"] >= 0.2  # at least twice chance (10 classes)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    assert [line["step"] for line in lines if "train_loss" in line] == [3, 6, 9, 12, 15, 16]
    assert [line["step"] for line in lines if "eval_loss" in line] == [8, 16]
    assert glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
    mngr = checkpoint.manager(workdir, read_only=True)
    assert list(mngr.all_steps()) == [8, 16]
    with open(os.path.join(workdir, "provenance.jsonl")) as f:
        (record,) = [json.loads(line) for line in f]  # one invocation
    with open(os.path.join(workdir, "config.json")) as f:
        assert record["config_sha256"] == provenance.config_digest(json.load(f))
    head = subprocess.run(["git", "-C", os.path.dirname(os.path.dirname(__file__)), "rev-parse",
                           "HEAD"], capture_output=True, text=True).stdout.strip()
    assert record["commit"] == head and record["date"] and record["command"]


def test_resume_is_exact(tmp_path, trained):
    _, _, uninterrupted = trained
    config, workdir = tiny_config(), str(tmp_path)
    partial = api.train(config, workdir, stop_after=5).summary
    assert partial == {"step": 5, "finished": False, "preempted": False}
    resumed = api.train(config, workdir).summary
    for key in ("step", "train_loss", "train_accuracy", "eval_loss", "eval_accuracy"):
        assert resumed[key] == uninterrupted[key], key


def test_eval_mode_reproduces_the_training_eval(trained):
    config, workdir, summary = trained
    evaluated = api.evaluate(config, workdir)
    assert evaluated["eval_loss"] == summary["eval_loss"]
    assert evaluated["eval_accuracy"] == summary["eval_accuracy"]
    assert evaluated["train_loss"] == summary["train_loss"] and evaluated["mode"] == "eval"


def test_export_loads_without_training_code_and_predicts_the_same(trained, tmp_path):
    config, workdir, summary = trained
    path = api.export(config, workdir, str(tmp_path / "export"))
    model, variables, meta = export.load_exported(path)
    assert meta["arch"]["family"] == "resnet_cifar" and meta["params"] == summary["params"]
    inputs = data.make_input(config.dataset, global_batch=64, eval_batch=200, seed=0)
    batch = next(inputs.eval_batches())
    logits = export.predict(model, variables, meta, batch["image"])
    accuracy = float(np.mean(np.argmax(np.asarray(logits), -1) == batch["label"]))
    assert accuracy == pytest.approx(summary["eval_accuracy"], abs=1e-9)


def test_export_format_writes_the_artifact_with_the_test_accuracy(trained, tmp_path):
    """``export_format='stablehlo'`` (config.export.format) on a trained run: the artifact
    beside model.json reproduces the run's test accuracy (in-process here; without the
    project in tests/test_deploy.py)."""
    config, workdir, summary = trained
    path = api.export(config, workdir, str(tmp_path / "export"), export_format="stablehlo")
    with open(os.path.join(path, "model.json")) as f:
        meta = json.load(f)
    assert meta["artifact"]["file"] == "model.stablehlo"
    with open(os.path.join(path, "model.stablehlo"), "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    inputs = data.make_input(config.dataset, global_batch=64, eval_batch=200, seed=0)
    batch = next(inputs.eval_batches())
    logits = np.asarray(exported.call(batch["image"]))
    accuracy = float(np.mean(np.argmax(logits, -1) == batch["label"]))
    assert accuracy == pytest.approx(summary["eval_accuracy"], abs=1e-9)


def test_unfinished_checkpoint_is_never_restored(trained, tmp_path):
    config, workdir, summary = trained
    junk = os.path.join(workdir, "checkpoints", "99.orbax-checkpoint-tmp-1700000000")
    os.makedirs(os.path.join(junk, "state"))
    with open(os.path.join(junk, "state", "garbage"), "w") as f:
        f.write("half-written")
    assert checkpoint.manager(workdir, read_only=True).latest_step() == 16
    assert api.evaluate(config, workdir)["step"] == 16


def test_eval_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="holds no checkpoints"):
        api.evaluate(tiny_config(), str(tmp_path))


def test_bfloat16_compute_keeps_float32_params(tmp_path):
    config = tiny_config(compute_dtype="bfloat16", num_train_steps=4)
    result = api.train(config, str(tmp_path))
    summary, state = result.summary, result.state
    assert np.isfinite(summary["train_loss"]) and summary["step"] == 4
    dtypes = {x.dtype for x in jax.tree_util.tree_leaves(state["params"])}
    assert dtypes == {np.dtype("float32")}


def test_batch_larger_than_dataset_is_rejected():
    with pytest.raises(ValueError, match="batch_size=1024 is larger than the 512"):
        config = tiny_config(batch_size=1024)
        run_lib.setup(config, plain_train.arch_of(config))


def test_progress_lines_tensorboard_config_and_profiler_trace(tmp_path, capsys, monkeypatch):
    """api.train prints step/total, images/s and an ETA (as in a notebook, where logging is
    not configured); TensorBoard gets the resolved config; profile_steps writes a trace."""
    import logging
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # a notebook's bare logging
    config = tiny_config(num_train_steps=6, profile_steps=(2, 4))
    api.train(config, str(tmp_path))
    out = capsys.readouterr().out
    assert "step 3/6 | epoch 0 | loss" in out and "img/s | ETA " in out
    assert "step 6/6" in out and "eval at step 6" in out
    assert glob.glob(str(tmp_path / "profile" / "**" / "*.xplane.pb"), recursive=True)
    events = b"".join(open(path, "rb").read() for path in glob.glob(
        str(tmp_path / "tensorboard" / "events.out.tfevents.*")))
    assert b"config/text_summary" in events and b'"batch_size": 64' in events
    api.train(tiny_config(num_train_steps=2), str(tmp_path / "quiet"), verbose=False)
    assert "step 2/2" not in capsys.readouterr().out


def test_bad_profile_steps_is_a_one_line_error():
    from pssnet_dcff import registry
    with pytest.raises(ValueError, match=r"config.profile_steps=\(5, 2\): expected"):
        registry.validate(tiny_config(profile_steps=(5, 2)))


def test_one_manager_keeps_the_latest_and_the_best_checkpoint(tmp_path):
    config = tiny_config(keep_best_checkpoint=True, keep_checkpoints=1, eval_every_steps=2,
                         export_from="best", **{"optimizer.learning_rate": 2.0})  # best: early
    summary = api.train(config, str(tmp_path)).summary
    steps = checkpoint.manager(str(tmp_path), read_only=True).all_steps()
    assert summary["best_step"] < 16  # the best eval was not the last one in this run
    assert set(steps) == {16, summary["best_step"]}  # nothing else is kept
    assert not os.path.exists(tmp_path / "best_checkpoint")  # one checkpoint directory
    _, host = checkpoint.read_checkpoint(str(tmp_path), None, "best")
    assert host["step"] == summary["best_step"]
    assert host["best"]["eval_accuracy"] == summary["best_eval_accuracy"]
    meta = export.load_exported(api.export(config, str(tmp_path)))[2]
    assert meta["step"] == summary["best_step"]
