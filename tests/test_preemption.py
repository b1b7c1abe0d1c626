"""Preemption: SIGTERM checkpoints and exits 75; SIGKILL at random points loses nothing.

The kill harness runs a config once uninterrupted, then again while killing it with SIGKILL
at random moments (during start-up, mid-step, mid-checkpoint-write: checkpoints are written
every step) and restarting the same command, and requires the same final params, PSS-Net pools,
subnets.json and summary.json, and that no restart resumes from before the newest checkpoint
that was complete when the process was killed.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from common_jax import checkpoint
from conftest import ROOT, TINY_FLAGS, launch
from test_compile_cache import PSS_TINY_FLAGS

RUN_KEYS_THAT_VARY = {"wall_time_s", "xla_compiles", "compile_time_s"}


def start(flags, workdir, env):
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "launch.py"), *flags,
                             f"--workdir={workdir}"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def subprocess_env():
    return dict(os.environ, JAX_PLATFORMS="cpu",
                XLA_FLAGS="--xla_force_host_platform_device_count=1")


def complete_checkpoints(workdir) -> list[int]:
    directory = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit()) if os.path.isdir(
        directory) else []


def summary_of(workdir) -> dict:
    with open(os.path.join(workdir, "summary.json")) as f:
        return {k: v for k, v in json.load(f).items() if k not in RUN_KEYS_THAT_VARY}


@pytest.mark.slow
def test_sigterm_finishes_the_step_checkpoints_and_resumes(tmp_path):
    flags = [*TINY_FLAGS, "--config.num_epochs=4"]
    env = subprocess_env()
    reference = launch(*flags, f"--workdir={tmp_path / 'reference'}")
    assert reference.returncode == 0, reference.stderr
    proc = start(flags, tmp_path / "run", env)
    for line in proc.stdout:
        if "first step done" in line:
            proc.send_signal(signal.SIGTERM)
            break
    output = proc.stdout.read()
    assert proc.wait(timeout=120) == 75, output
    stopped = int(re.search(r"stopped at step (\d+) of 32 \(preempted\)", output).group(1))
    assert complete_checkpoints(tmp_path / "run")[-1] == stopped
    again = launch(*flags, f"--workdir={tmp_path / 'run'}")
    assert again.returncode == 0, again.stderr
    assert f"resumed from checkpoint at step {stopped}" in again.stdout
    assert summary_of(tmp_path / "run") == summary_of(tmp_path / "reference")


def run_once(flags, workdir, env, rng, after_first_step: float):
    """One attempt, SIGKILLed at a random moment: in a quarter of the attempts during
    start-up, otherwise up to ``after_first_step`` seconds after the first step (checkpoints
    are written every step, so most kills land mid-step or mid-checkpoint-write)."""
    proc = start(flags, workdir, env)
    timer = None
    if rng.random() < 0.25:
        timer = threading.Timer(rng.uniform(0.5, 3.0), proc.kill)
        timer.start()
    delay = rng.uniform(0.0, after_first_step)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if timer is None and "first step done" in line:
            timer = threading.Timer(delay, proc.kill)
            timer.start()
    proc.wait()
    if timer is not None:
        timer.cancel()
    return proc.returncode, "".join(lines)


def kill_and_resume(flags, workdir, env, rng, kills: int, after_first_step: float) -> int:
    """Runs the command until it completes, SIGKILLing the first ``kills`` attempts; checks
    that every restart resumes from the newest checkpoint complete at the kill. Returns how
    many attempts were killed."""
    landed = 0
    while True:
        before = complete_checkpoints(workdir)
        if landed < kills:
            code, output = run_once(flags, workdir, env, rng, after_first_step)
        else:
            proc = start(flags, workdir, env)
            output, _ = proc.communicate(timeout=900)
            code = proc.returncode
        resumed = re.search(r"resumed from checkpoint at step (\d+)", output)
        killed_before_restore = code == -signal.SIGKILL and not resumed
        if before and not killed_before_restore:  # every restore must find the newest one
            assert resumed and int(resumed.group(1)) >= before[-1], output[-2000:]
        if code == -signal.SIGKILL:
            landed += 1
            continue
        assert code == 0, output[-3000:]
        return landed


def final_state(config, workdir):
    """(state as NumPy, host state) of the newest checkpoint, read without a model (orbax
    restores the saved structure)."""
    mngr = checkpoint.manager(str(workdir), read_only=True)
    state, host = checkpoint.restore(mngr, mngr.latest_step(), None)
    return jax_to_numpy(state), host


def jax_to_numpy(tree):
    import jax
    return jax.tree.map(np.asarray, jax.device_get(tree))


def assert_same_run(config, reference, interrupted):
    assert summary_of(interrupted) == summary_of(reference)
    (state_a, host_a), (state_b, host_b) = (final_state(config, reference),
                                            final_state(config, interrupted))
    import jax
    for a, b in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b)):
        assert np.array_equal(a, b)
    assert host_a["method"] == host_b["method"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dcff", "pssnet"])
def test_sigkill_at_random_points_then_resume_gives_the_same_run(tmp_path, name):
    import configs.dcff.embedded as dcff_embedded
    import configs.pssnet.embedded as pss_embedded
    from conftest import override
    if name == "dcff":
        # keep_checkpoints=1: a kill between writing a checkpoint and deleting the previous
        # one must never leave the run without a complete checkpoint.
        flags = ["--config=configs/dcff/embedded.py", *TINY_FLAGS[1:],
                 "--config.model.width_mult=1.0", "--config.checkpoint_every_steps=1",
                 "--config.num_epochs=4", "--config.keep_checkpoints=1"]
        config = override(dcff_embedded.get_config(), **{
            "dataset.num_train_examples": 512, "dataset.num_eval_examples": 200,
            "batch_size": 64, "num_epochs": 4, "checkpoint_every_steps": 1})
    else:
        flags = [*PSS_TINY_FLAGS, "--config.checkpoint_every_steps=1"]
        config = override(pss_embedded.get_config(), **{
            "dataset.num_train_examples": 640, "dataset.holdout_examples": 128,
            "batch_size": 64, "pssnet.resolutions": (24, 28, 4),
            "pssnet.targets": (3.5, 6.0, 0.5), "pssnet.map_samples": 4000,
            "pssnet.recal_batches": 2, "num_epochs": 2, "checkpoint_every_steps": 1})
    env = subprocess_env()
    reference = launch(*flags, f"--workdir={tmp_path / 'reference'}")
    assert reference.returncode == 0, reference.stderr
    rng = np.random.default_rng(7)
    landed = kill_and_resume(flags, tmp_path / "run", env, rng, kills=4,
                             after_first_step=1.0 if name == "dcff" else 2.0)
    assert landed >= 3
    assert_same_run(config, tmp_path / "reference", tmp_path / "run")
    if name == "pssnet":
        with open(tmp_path / "reference" / "subnets.json") as a, open(
                tmp_path / "run" / "subnets.json") as b:
            assert json.load(a) == json.load(b)
