"""The persistent compilation cache: a warm restart of a PSS-Net run compiles nothing."""

import re

import pytest

from conftest import launch

PSS_TINY_FLAGS = [
    "--config=configs/pssnet/embedded.py", "--config.dataset.num_train_examples=640",
    "--config.dataset.holdout_examples=128", "--config.batch_size=64",
    "--config.pssnet.resolutions=(24,28,4)", "--config.pssnet.targets=(3.5,6.0,0.5)",
    "--config.pssnet.map_samples=4000", "--config.pssnet.recal_batches=2",
    "--config.num_epochs=2"]


def compiles(stdout: str) -> int:
    return int(re.search(r"compilation: (\d+) XLA compiles", stdout).group(1))


@pytest.mark.slow
def test_warm_cache_restart_compiles_nothing(tmp_path):
    env = {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache")}
    cold = launch(*PSS_TINY_FLAGS, f"--workdir={tmp_path / 'a'}", "--stop_after=3", env=env)
    assert cold.returncode == 0, cold.stderr
    assert compiles(cold.stdout) > 0 and "first step done" in cold.stdout
    warm = launch(*PSS_TINY_FLAGS, f"--workdir={tmp_path / 'b'}", "--stop_after=3", env=env)
    assert warm.returncode == 0, warm.stderr
    assert compiles(warm.stdout) == 0, warm.stdout
    resumed = launch(*PSS_TINY_FLAGS, f"--workdir={tmp_path / 'a'}", "--stop_after=6", env=env)
    assert "resumed from checkpoint at step 3" in resumed.stdout
    assert compiles(resumed.stdout) == 0, resumed.stdout
