"""Shared helpers: a tiny embedded-data config and a launcher for subprocess runs."""

import os
import socket
import subprocess
import sys
import tempfile


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# One persistent compilation cache for the whole test session (in-process and subprocess
# runs), so the same compiled functions are not compiled again by every test.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"pssnet-dcff-tests-{os.getuid()}"))


def require(module: str):
    """``pytest.importorskip(module)``, except under CI (``CI=true``), where a missing
    dependency fails the test instead of skipping it silently."""
    import importlib
    import pytest
    if os.environ.get("CI") == "true":
        return importlib.import_module(module)
    return pytest.importorskip(module)


def flat_leaves(tree) -> dict:
    """{"a/b/c": numpy array} of a nested dict of arrays (params, exported variables)."""
    from flax import traverse_util
    import numpy as np
    return {key: np.asarray(value)
            for key, value in traverse_util.flatten_dict(tree, sep="/").items()}


def tiny_config(**overrides):
    """ResNet-20 at width 4 on 512 embedded images: compiles in ~2 s, 8 steps an epoch."""
    from configs.baselines.embedded import get_config
    c = get_config()
    c.model.width_mult = 0.25
    c.batch_size = 64
    c.dataset.num_train_examples = 512
    c.dataset.num_eval_examples = 200
    c.num_epochs = 2
    c.log_every_steps = 3
    c.async_checkpoints = False
    return override(c, **overrides)


def override(c, **overrides):
    """Sets dotted keys ('optimizer.learning_rate') of a config."""
    for key, value in overrides.items():
        section = c
        *parents, leaf = key.split(".")
        for parent in parents:
            section = section[parent]
        section[leaf] = value
    return c


TINY_FLAGS = ["--config=configs/baselines/embedded.py", "--config.model.width_mult=0.25",
              "--config.batch_size=64", "--config.dataset.num_train_examples=512",
              "--config.dataset.num_eval_examples=200", "--config.num_epochs=2",
              "--config.log_every_steps=3"]


def cpu_env(devices: int, env: dict | None = None) -> dict:
    """The environment of a subprocess that sees ``devices`` CPU devices."""
    return dict(os.environ, JAX_PLATFORMS="cpu",
                XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **(env or {}))


def launch(*args, devices: int = 1, timeout: int = 600,
           env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs ``python launch.py *args`` from the repository root on ``devices`` CPU devices."""
    return subprocess.run([sys.executable, os.path.join(ROOT, "launch.py"), *args], cwd=ROOT,
                          env=cpu_env(devices, env), capture_output=True, text=True,
                          timeout=timeout)


def python_on_devices(code: str, devices: int, timeout: int = 600) -> str:
    """Runs ``python -c code`` from the repository root on ``devices`` CPU devices (tests/ and
    benchmarks/ importable); returns its stdout, failing the test with its stderr."""
    env = cpu_env(devices, {"PYTHONPATH": os.pathsep.join(
        (ROOT, os.path.join(ROOT, "tests"), os.path.join(ROOT, "benchmarks")))})
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_processes(count: int, *args, env: dict | None = None,
                    program: str = "launch.py", envs: list | None = None) -> list:
    """Starts ``count`` cooperating ``launch.py`` (or ``program``, a script taking its flags)
    processes (jax.distributed on 127.0.0.1, one CPU device each; ``envs``: each process's
    own extra variables, e.g. a HOME per simulated host); returns the Popen objects in
    process order (text stdout/stderr)."""
    address = f"127.0.0.1:{free_port()}"
    return [subprocess.Popen(
        [sys.executable, os.path.join(ROOT, program), *args,
         f"--coordinator_address={address}", f"--num_processes={count}",
         f"--process_id={index}"], cwd=ROOT,
        env=cpu_env(1, {**(env or {}), **(envs[index] if envs else {})}),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for index in range(count)]


def launch_processes(count: int, *args, timeout: int = 600, env: dict | None = None,
                     program: str = "launch.py", envs: list | None = None):
    """Runs ``count`` cooperating ``launch.py`` (or ``program``) processes to the end;
    returns their (returncode, stdout, stderr) in process order."""
    results = []
    for proc in start_processes(count, *args, env=env, program=program, envs=envs):
        out, err = proc.communicate(timeout=timeout)
        results.append((proc.returncode, out, err))
    return results
