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


def test_cache_directory_of_a_setting(monkeypatch):
    """'' resolves to $JAX_COMPILATION_CACHE_DIR, else (several processes) the workdir's
    xla_cache shared by every host, else the per-user default; 'off' to None; a directory
    is kept."""
    import jax
    from common_jax import compilation_cache
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    assert compilation_cache.directory("", "gs://bucket/run") == "gs://bucket/run/xla_cache"
    assert compilation_cache.directory("", None) == compilation_cache.default_dir()
    assert compilation_cache.directory("/cache", "gs://bucket/run") == "/cache"
    assert compilation_cache.directory("off", "gs://bucket/run") is None
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/env")
    assert compilation_cache.directory("", "gs://bucket/run") == "/env"
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setattr(jax, "process_count", lambda: 1)
    assert compilation_cache.directory("", "gs://bucket/run") == compilation_cache.default_dir()
