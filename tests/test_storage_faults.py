"""Storage faults injected per object and request into the fake Cloud Storage
(tests/fake_gcs.py), tried through the command line: no fault loses or hides a checkpoint,
and every failure is one line.

Shown to fail during development against a mutant that restores the old catch-all in
``checkpoint.restore_newest_good`` (any restore failure renames the checkpoint): the 503s on
step 8's host state moved step 8 aside and trained from scratch; the shape-changing config
moved the newest checkpoint aside (the up-front key check off as well). Without
``pssnet_dcff/locations.py`` the 403 workdir failed only after compiling, with a traceback,
and the run without a server printed gcsfs tracebacks for about 50 s.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TINY_FLAGS, free_port, launch
from fake_gcs import FakeGCS, environment

LAUNCH = os.path.join(ROOT, "launch.py")
FLAGS = [*TINY_FLAGS, "--config.async_checkpoints=False"]  # a save is complete when logged
WORKDIR = "gs://my-bucket/runs/faults"
PREFIX = "runs/faults/checkpoints"


def run(env, cwd, *args):
    return subprocess.run([sys.executable, LAUNCH, *FLAGS, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def error_lines(result) -> list:
    """stderr without TensorStore's own log lines (``I1203 10:00:00.0 file.cc:1] ...``)."""
    return [line for line in result.stderr.strip().splitlines()
            if not re.match(r"[IWEF]\d{4} ", line)]


def last_json(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def committed(gcs) -> list:
    return sorted(int(m.group(1)) for n in gcs.names("my-bucket")
                  if (m := re.fullmatch(rf"{PREFIX}/(\d+)/commit_success.txt", n)))


def snapshot(gcs) -> dict:
    return {name: gcs.generations[("my-bucket", name)] for name in gcs.names("my-bucket")}


def same_losses(result, reference) -> bool:
    final, expected = last_json(result), last_json(reference)
    return all(final[k] == expected[k] for k in ("train_loss", "eval_loss", "eval_accuracy"))


@pytest.mark.slow
def test_storage_faults_never_lose_a_checkpoint_and_fail_in_one_line(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    reference = launch(*FLAGS, f"--workdir={tmp_path / 'local'}")
    assert reference.returncode == 0, reference.stderr
    with FakeGCS() as gcs:
        env = dict(os.environ, **environment(gcs.url), JAX_PLATFORMS="cpu",
                   XLA_FLAGS="--xla_force_host_platform_device_count=1")
        assert run(env, cwd, f"--workdir={WORKDIR}", "--stop_after=8").returncode == 0

        # A write that always fails (403 on step 16's objects): the run stops in one line;
        # step 8 stays committed and is resumed from below.
        gcs.inject(rf"my-bucket/{PREFIX}/16/", 403, "write")
        failed = run(env, cwd, f"--workdir={WORKDIR}")
        assert failed.returncode == 2 and error_lines(failed) == [
            f"error: cannot write {WORKDIR}/checkpoints/16: permission denied; the checkpoints "
            f"written before it are kept"], failed.stderr[-2000:]
        assert committed(gcs) == [8]
        gcs.clear_faults()

        # A config whose arrays have other shapes: one line, exit 2, every object in place.
        before = snapshot(gcs)
        wider = run(env, cwd, f"--workdir={WORKDIR}", "--config.model.width_mult=0.5")
        assert wider.returncode == 2 and error_lines(wider) == [
            f"error: --workdir={WORKDIR} was trained with another config (model.width_mult: "
            f"0.25 -> 0.5; params/fc/kernel (16,10) on disk, (32,10) now); use a new --workdir "
            f"or the original config"], wider.stderr[-2000:]
        assert snapshot(gcs) == before

        # 503 on the first 6 reads of step 8's host state (gcsfs gives up after its own 6
        # tries; common_jax.storage retries) and on the first 2 writes of step 16 (the
        # clients retry): the resume finishes exactly as the uninterrupted run did.
        gcs.inject(rf"my-bucket/{PREFIX}/8/host/metadata$", 503, "read", 6)
        gcs.inject(rf"my-bucket/{PREFIX}/16/", 503, "write", 2)
        resumed = run(env, cwd, f"--workdir={WORKDIR}")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert gcs.hits == {rf"my-bucket/{PREFIX}/8/host/metadata$": 6,
                            rf"my-bucket/{PREFIX}/16/": 2}
        assert "retrying in 1 s" in resumed.stdout
        assert "resumed from checkpoint at step 8" in resumed.stdout
        assert same_losses(resumed, reference)
        assert not [n for n in gcs.names("my-bucket") if "damaged" in n]
        assert committed(gcs) == [8, 16]

        # A truncated array chunk in the newest checkpoint: proven damage, moved aside with
        # a warning naming it; the previous checkpoint is used and the run ends the same.
        chunks = [n for n in gcs.names("my-bucket")
                  if n.startswith(f"{PREFIX}/16/state/ocdbt.process_0/d/")]
        largest = max(chunks, key=lambda n: len(gcs.objects[("my-bucket", n)]))
        data = gcs.objects[("my-bucket", largest)]
        gcs.put("my-bucket", largest, data[:len(data) // 3])
        healed = run(env, cwd, f"--workdir={WORKDIR}")
        assert healed.returncode == 0, healed.stderr[-3000:]
        assert re.search(rf"checkpoint {WORKDIR}/checkpoints/16 is damaged and is skipped: "
                         rf"{WORKDIR}/checkpoints/16/state \(array chunk", healed.stdout)
        assert "resumed from checkpoint at step 8" in healed.stdout
        assert same_losses(healed, reference)
        assert [n for n in gcs.names("my-bucket") if re.match(
            rf"{PREFIX}/damaged-16-\d+/state/", n)]

        # Permission denied on the workdir: one line before any compile; nothing created.
        gcs.inject(r"my-bucket/runs/denied", 403)
        denied = run(env, cwd, "--workdir=gs://my-bucket/runs/denied")
        assert denied.returncode == 2 and error_lines(denied) == [
            "error: cannot write gs://my-bucket/runs/denied: permission denied"]
        assert "compil" not in denied.stdout
        assert not [n for n in gcs.names("my-bucket") if n.startswith("runs/denied")]

    # The same refusal for a local workdir, through the command line: nothing moves.
    local = tmp_path / "local"
    before = sorted(os.listdir(local / "checkpoints"))
    wider = launch(*FLAGS, f"--workdir={local}", "--config.model.width_mult=0.5")
    assert wider.returncode == 2 and error_lines(wider) == [
        f"error: --workdir={local} was trained with another config (model.width_mult: 0.25 -> "
        f"0.5; params/fc/kernel (16,10) on disk, (32,10) now); use a new --workdir or the "
        f"original config"], wider.stderr[-2000:]
    assert sorted(os.listdir(local / "checkpoints")) == before == ["16", "8"]

    # No server at all: one line within 30 s (gcsfs alone would retry for about a minute).
    nowhere = dict(env, **environment(f"http://127.0.0.1:{free_port()}"))
    start = time.monotonic()
    unreachable = run(nowhere, cwd, f"--workdir={WORKDIR}")
    assert time.monotonic() - start < 30
    assert unreachable.returncode == 2 and error_lines(unreachable) == [
        f"error: cannot write {WORKDIR}: network unreachable (no connection to the storage "
        f"server)"], unreachable.stderr[-2000:]
    assert os.listdir(cwd) == []
