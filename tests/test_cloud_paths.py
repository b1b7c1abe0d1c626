"""Workdirs on a bucket: train, SIGKILL, resume, eval, export and load the export with
``--workdir=gs://...``, served by an in-process fake of Cloud Storage (tests/fake_gcs.py,
127.0.0.1 only); the guide's pod commands run against it too. Nothing may be written under
the current directory, and the resumed run must equal an uninterrupted local one."""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT, TINY_FLAGS, launch
from fake_gcs import FakeGCS, environment

LAUNCH = os.path.join(ROOT, "launch.py")


@pytest.fixture()
def bucket(tmp_path):
    """(fake server, environment for subprocesses, an empty current directory)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    with FakeGCS() as gcs:
        env = dict(os.environ, **environment(gcs.url), JAX_PLATFORMS="cpu",
                   XLA_FLAGS="--xla_force_host_platform_device_count=1")
        yield gcs, env, cwd


def run(env, cwd, *args, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_train_kill_resume_eval_export_and_load_on_a_bucket(bucket, tmp_path):
    gcs, env, cwd = bucket
    reference = launch(*TINY_FLAGS, f"--workdir={tmp_path / 'local'}")
    assert reference.returncode == 0, reference.stderr
    workdir = "gs://my-bucket/runs/tiny"
    flags = [*TINY_FLAGS, "--config.async_checkpoints=False"]  # step 8 complete when logged
    proc = subprocess.Popen([sys.executable, LAUNCH, *flags, f"--workdir={workdir}"],
                            cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "checkpoint at step 8" in line:
            proc.kill()  # SIGKILL: no chance to clean up
            break
    proc.wait()
    assert "runs/tiny/checkpoints/8/commit_success.txt" in gcs.names("my-bucket")
    resumed = run(env, cwd, LAUNCH, *flags, f"--workdir={workdir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert re.search(r"resumed from checkpoint at step (8|9|1\d)", resumed.stdout)
    final, expected = last_json(resumed.stdout), last_json(reference.stdout)
    for key in ("train_loss", "eval_loss", "eval_accuracy"):
        assert final[key] == expected[key], key
    evaluated = run(env, cwd, LAUNCH, *TINY_FLAGS, f"--workdir={workdir}", "--mode=eval")
    assert last_json(evaluated.stdout)["eval_loss"] == expected["eval_loss"]
    exported = run(env, cwd, LAUNCH, *TINY_FLAGS, f"--workdir={workdir}", "--mode=export")
    assert exported.stdout.strip().splitlines()[-1] == f"{workdir}/export", exported.stderr
    loaded = run(dict(env, PYTHONPATH=ROOT), cwd, "-c", "import numpy as np\nfrom pssnet_dcff import api\n"
                 f"model, variables, meta = api.load_model('{workdir}/export')\n"
                 "print(meta['step'], api.predict(model, variables, meta, "
                 "np.zeros((3, 28, 28, 1), np.uint8)).shape)", )
    assert loaded.stdout.split() == ["16", "(3,", "10)"], loaded.stderr[-3000:]
    names = gcs.names("my-bucket")
    for name in ("summary.json", "metrics.jsonl", "config.json", "export/model.json"):
        assert f"runs/tiny/{name}" in names
    assert any(n.startswith("runs/tiny/tensorboard/events.out.tfevents") for n in names)
    assert os.listdir(cwd) == []  # nothing landed in a local "gs:" folder
    assert not os.path.exists(os.path.join(ROOT, "gs:"))


def pod_commands():
    """The train and export commands of docs/tpu_pod.md with a gs:// workdir."""
    with open(os.path.join(ROOT, "docs", "tpu_pod.md")) as f:
        text = f.read()
    return [m.group(1) for m in re.finditer(r"python launch\.py ([^\n\"]+)", text)
            if "gs://" in m.group(1) and "--dry_run" not in m.group(1)]


# Shrinks a guide command to synthetic data and a few steps on this CPU (no TPU metadata
# for --distributed, no ImageNet): same config, same workdir URL, same code paths.
SHRINK = ["--config.dataset.synthetic=True", "--config.dataset.num_train_examples=8",
          "--config.dataset.num_eval_examples=4", "--config.batch_size=2",
          "--config.num_train_steps=2", "--config.dataset.image_size=64"]
SHRINK_BY_CONFIG = {
    "pssnet": ["--config.pssnet.resolutions=(32,64,32)", "--config.pssnet.targets=(5,25,5)",
               "--config.pssnet.map_samples=2000", "--config.pssnet.bn_group_size=0",
               "--config.pssnet.recal_batches=1", "--config.pssnet.topk=1",
               "--config.dataset.holdout_examples=2"],
    "dcff": [],
}


@pytest.mark.slow
def test_tpu_pod_guide_commands_run_against_the_fake_bucket(bucket):
    gcs, env, cwd = bucket
    commands = pod_commands()
    assert len(commands) >= 3
    for command in commands:
        args = [a for a in shlex.split(command) if a != "--distributed"]
        kind = "pssnet" if "pssnet" in command else "dcff"
        extra = SHRINK + SHRINK_BY_CONFIG[kind]
        if "--mode=export" in command:
            extra += ["--config.export.flops=20"]
        result = run(env, cwd, LAUNCH, *args, *extra)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
        workdir = re.search(r"--workdir=gs://my-bucket/(\S+)", command).group(1)
        wrote = "export/model.json" if "--mode=export" in command else "summary.json"
        assert f"{workdir}/{wrote}" in gcs.names("my-bucket"), command
    assert os.listdir(cwd) == []
