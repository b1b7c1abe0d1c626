"""Two processes (jax.distributed on 127.0.0.1, CPU collectives) train like one process.

The single-process reference uses two CPU devices, so both runs split the global batch into
the same two shards and reduce over them the same way: what is compared is the multi-process
machinery (data shards, collectives, checkpoints, host state), not the float rounding of a
different reduction tree, which early training amplifies step after step."""

import json
import os
import re
import signal

import numpy as np
import pytest

from common_jax import export
from conftest import TINY_FLAGS, flat_leaves, launch, launch_processes, start_processes
from test_compile_cache import PSS_TINY_FLAGS, compiles

# 4 steps of a 300-epoch schedule (2 steps an epoch): the selection is recomputed at step 2
# with T(1) = 4622, where the proxies are exactly one-hot. (With a 2-epoch schedule T(1) is
# moderate, and softmax(-T D) multiplies the float rounding of D by T.)
DCFF_FLAGS = ["--config=configs/dcff/embedded.py", "--config.dataset.num_train_examples=128",
              "--config.dataset.num_eval_examples=64", "--config.batch_size=64",
              "--config.num_epochs=300", "--stop_after=4", "--config.optimizer.learning_rate=0.01",
              "--config.log_every_steps=1"]


def logged_losses(stdout: str) -> list:
    return [float(x) for x in re.findall(r"step \d+/\d+ \| epoch \d+ \| loss ([\d.]+)", stdout)]


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_processes_train_dcff_like_one(tmp_path):
    single = launch(*DCFF_FLAGS, f"--workdir={tmp_path / 'one'}", devices=2)
    assert single.returncode == 0, single.stderr
    results = launch_processes(2, *DCFF_FLAGS, f"--workdir={tmp_path / 'two'}")
    for code, out, err in results:
        assert code == 0, err[-3000:]
    assert logged_losses(single.stdout) == logged_losses(results[0][1])  # 4 decimals
    assert len(logged_losses(single.stdout)) == 4
    for workdir in ("one", "two"):
        exported = launch(*DCFF_FLAGS, f"--workdir={tmp_path / workdir}", "--mode=export",
                          devices=2)
        assert exported.returncode == 0, exported.stderr
    a = flat_leaves(export.load_exported(str(tmp_path / "one" / "export"))[1])
    b = flat_leaves(export.load_exported(str(tmp_path / "two" / "export"))[1])
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-5, err_msg=key)
    assert "wrote" in results[0][1] and "wrote" not in results[1][1]


@pytest.mark.slow
def test_two_processes_keep_identical_pssnet_pools(tmp_path):
    """Pools, checkpoints and losses of two processes equal one process's, no step waits on a
    cross-host check, and by default both processes (each with its own HOME, as hosts have)
    use one compilation cache under the workdir, from which the pair stopped at step 4 and
    restarted loads every program of process 0. (Process 1 compiles again on CPU only: JAX
    writes entries from process 0, and its CPU cache key includes the topology fingerprint,
    which differs between CPU processes; accelerator topologies are one per pod slice.)"""
    flags = [f for f in PSS_TINY_FLAGS if not f.startswith("--config.pssnet.targets")]
    flags += ["--config.num_epochs=1", "--config.checkpoint_every_steps=2",
              "--config.optimizer.learning_rate=0.01", "--config.pssnet.topk=1",
              "--config.pssnet.targets=(4.5,6.0,0.5)"]
    workdir = f"--workdir={tmp_path / 'two'}"
    hosts = [{"HOME": str(tmp_path / f"home{i}"), "JAX_COMPILATION_CACHE_DIR": ""}
             for i in range(2)]
    first = launch_processes(2, *flags, workdir, "--stop_after=4",
                             program="tests/count_host_syncs.py", envs=hosts)
    results = launch_processes(2, *flags, workdir, program="tests/count_host_syncs.py", envs=hosts)
    for code, out, err in first + results:
        assert code == 0, err[-3000:]
        # no step waits for a cross-host check: the subnets' widths enter without one
        assert "host syncs in steps: 0" in out, out[-2000:]
    cache = f"persistent compilation cache: {tmp_path / 'two' / 'xla_cache'}"
    for _, out, _ in first + results:
        assert cache in out, out[:2000]
    assert "resumed from checkpoint at step 4" in results[0][1]
    assert compiles(results[0][1]) == 0, results[0][1][-3000:]
    digests = [re.findall(r"checkpoint at step (\d+) \(method host state (\w+)\)",
                          first[p][1] + results[p][1]) for p in range(2)]
    assert len(digests[0]) >= 4 and digests[0] == digests[1]
    single = launch(*flags, f"--workdir={tmp_path / 'one'}", devices=2)
    assert single.returncode == 0, single.stderr
    one, two = last_json(single.stdout), last_json(results[0][1].split("host syncs")[0])
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-5)
    process0, process1 = results[0][1], results[1][1]
    assert "summary.json" in process0 and "flops_accuracy.png" in process0
    assert "wrote" not in process1
    assert os.path.exists(tmp_path / "two" / "subnets.json")


@pytest.mark.slow
def test_sigterm_to_one_of_two_processes_stops_both_at_the_same_step(tmp_path):
    """Both processes agree on the step (JAX's coordination service), checkpoint it, exit 75;
    the resumed pair ends exactly where an uninterrupted pair does."""
    flags = [*TINY_FLAGS, "--config.num_epochs=4", "--config.log_every_steps=1"]
    reference = launch_processes(2, *flags, f"--workdir={tmp_path / 'reference'}")
    assert all(code == 0 for code, _, _ in reference), reference[1][2][-3000:]
    procs = start_processes(2, *flags, f"--workdir={tmp_path / 'run'}")
    seen = []
    for line in procs[0].stdout:
        seen.append(line)
        if "step 2/32" in line:
            procs[1].send_signal(signal.SIGTERM)
            break
    outputs = ["".join(seen) + procs[0].stdout.read(), ""]
    results = []
    for proc, out in zip(procs, outputs):
        more, err = proc.communicate(timeout=300)
        results.append((proc.returncode, out + more, err))
    stopped = [re.search(r"stopped at step (\d+) of 32 \(preempted\)", out + err)
               for _, out, err in results]
    assert [code for code, _, _ in results] == [75, 75], [r[2][-2000:] for r in results]
    assert all(stopped) and stopped[0].group(1) == stopped[1].group(1)
    assert "[process 0/2] step 1/32" in results[0][1]  # every line names its process
    assert "[process 1/2] step 1/32" in results[1][1]
    step = int(stopped[0].group(1))
    assert step < 32 and os.path.isdir(tmp_path / "run" / "checkpoints" / str(step))
    resumed = launch_processes(2, *flags, f"--workdir={tmp_path / 'run'}")
    assert all(code == 0 for code, _, _ in resumed), resumed[0][2][-3000:]
    assert f"resumed from checkpoint at step {step}" in resumed[0][1]
    assert last_json(resumed[0][1])["eval_loss"] == last_json(reference[0][1])["eval_loss"]
    assert last_json(resumed[0][1])["train_loss"] == last_json(reference[0][1])["train_loss"]
