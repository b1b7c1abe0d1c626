"""The core runs without TensorFlow: the embedded main job, --mode=profile, export and loading
the export, and a synthetic benchmark config, in processes where importing tensorflow or
tensorflow_datasets fails (as in an install from requirements.txt alone)."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT, TINY_FLAGS

BLOCKER = """
import importlib.machinery, runpy, sys
class PathFinderWithoutTensorFlow(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "tensorflow_datasets"):
            return None  # as if not installed
        return importlib.machinery.PathFinder.find_spec(name, path, target)
sys.meta_path = [PathFinderWithoutTensorFlow if finder is importlib.machinery.PathFinder
                 else finder for finder in sys.meta_path]
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_without_tensorflow(*args, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-c", BLOCKER, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_blocker_really_blocks_tensorflow(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text("import importlib.util\n"
                      "assert importlib.util.find_spec('tensorflow') is None\n"
                      "import tensorflow_datasets\n")
    probe = run_without_tensorflow(str(script))
    assert probe.returncode != 0
    assert "No module named 'tensorflow_datasets'" in probe.stderr, probe.stderr


def test_core_paths_run_without_tensorflow(tmp_path):
    launch = os.path.join(ROOT, "launch.py")
    workdir = str(tmp_path / "run")
    train = run_without_tensorflow(launch, *TINY_FLAGS, "--config.num_train_steps=4",
                                   f"--workdir={workdir}")
    assert train.returncode == 0, train.stderr[-2000:]
    profile = run_without_tensorflow(launch, "--config=configs/pssnet/mobilenet_v2_imagenet.py",
                                     "--mode=profile")
    assert profile.returncode == 0 and '"min_flops"' in profile.stdout, profile.stderr[-2000:]
    export = run_without_tensorflow(launch, *TINY_FLAGS, "--config.num_train_steps=4",
                                    f"--workdir={workdir}", "--mode=export")
    assert export.returncode == 0, export.stderr[-2000:]
    script = tmp_path / "load.py"
    script.write_text("import sys\nimport numpy as np\nfrom pssnet_dcff import api\n"
                      "model, variables, meta = api.load_model(sys.argv[1])\n"
                      "print(api.predict(model, variables, meta, np.zeros((2, 28, 28, 1), "
                      "np.uint8)).shape)\n")
    load = run_without_tensorflow(str(script), export.stdout.strip().splitlines()[-1])
    assert load.returncode == 0 and "(2, 10)" in load.stdout, load.stderr[-2000:]


@pytest.mark.slow
def test_synthetic_imagenet_config_runs_without_tensorflow(tmp_path):
    """What the GPU benchmarks do: an ImageNet config on synthetic data, no TF, no data."""
    result = run_without_tensorflow(
        os.path.join(ROOT, "launch.py"), "--config=configs/baselines/resnet50_imagenet.py",
        "--config.dataset.synthetic=True", "--config.batch_size=2",
        "--config.dataset.image_size=64", "--config.dataset.num_train_examples=4",
        "--config.dataset.num_eval_examples=2", "--config.num_train_steps=1",
        f"--workdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
