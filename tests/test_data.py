"""Input pipelines: IDX files, the embedded set, determinism, sharding, tfds on mock data."""

import gzip
import os
import subprocess
import sys

import numpy as np
import pytest

from common_jax import data
from common_jax.data import idx, memory
from conftest import require, tiny_config


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_roundtrip(tmp_path, suffix):
    array = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    path = str(tmp_path / f"x-idx3-ubyte{suffix}")
    idx.write_idx(path, array)
    np.testing.assert_array_equal(idx.read_idx(path), array)


def test_truncated_idx_names_the_file(tmp_path):
    path = str(tmp_path / "t10k-images-idx3-ubyte.gz")
    idx.write_idx(path, np.zeros((4, 28, 28), np.uint8))
    with gzip.open(path, "rb") as f:
        content = f.read()
    with gzip.open(path, "wb") as f:
        f.write(content[:-100])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz.*truncated"):
        idx.read_idx(path)


def test_missing_idx_directory_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        idx.load_idx_split(str(tmp_path), "train")


def test_embedded_set_is_balanced_fashion_mnist():
    images, labels = idx.load_idx_split(data.EMBEDDED_DIR, "train")
    assert images.shape == (10000, 28, 28, 1) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10
    test_images, test_labels = idx.load_idx_split(data.EMBEDDED_DIR, "t10k")
    assert test_images.shape == (2000, 28, 28, 1)
    assert np.bincount(test_labels).tolist() == [200] * 10
    assert 60 < images.mean() < 90  # Fashion-MNIST's mean intensity is ~73


def batches(start, count, **kw):
    images = np.arange(40 * 4 * 4, dtype=np.uint8).reshape(40, 4, 4, 1) % 251
    labels = np.arange(40, dtype=np.int32)
    args = dict(global_batch=8, seed=3, start_step=start, augment="crop_flip", crop_padding=1,
                process_index=0, process_count=1)
    args.update(kw)
    it = memory.train_batches(images, labels, **args)
    return [next(it) for _ in range(count)]


def test_memory_batches_resume_exactly():
    full = batches(0, 12)
    resumed = batches(7, 5)
    for a, b in zip(full[7:], resumed):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


def test_memory_epoch_covers_every_example_once():
    epoch = np.concatenate([b["label"] for b in batches(0, 5)])  # 40 // 8 = 5 steps an epoch
    assert sorted(epoch.tolist()) == list(range(40))
    next_epoch = np.concatenate([b["label"] for b in batches(5, 5)])
    assert sorted(next_epoch.tolist()) == list(range(40)) and not np.array_equal(epoch,
                                                                                  next_epoch)


def test_memory_process_shards_make_up_the_global_batch():
    single = batches(2, 3)
    shards = [batches(2, 3, process_index=p, process_count=2) for p in range(2)]
    for step in range(3):
        for key in ("image", "label"):
            np.testing.assert_array_equal(
                single[step][key], np.concatenate([shards[0][step][key], shards[1][step][key]]))


def test_eval_batches_cover_all_examples_with_mask():
    images = np.zeros((10, 2, 2, 1), np.uint8)
    labels = np.arange(10, dtype=np.int32)
    out = list(memory.eval_batches(images, labels, global_batch=4, process_index=0,
                                   process_count=1))
    assert len(out) == 3 and out[-1]["mask"].tolist() == [1, 1, 0, 0]
    assert np.concatenate([b["label"] for b in out])[:10].tolist() == list(range(10))


def test_embedded_input_pads_to_a_larger_image_size():
    config = tiny_config(**{"dataset.image_size": 32})
    inputs = data.make_input(config.dataset, global_batch=64, eval_batch=100, seed=0)
    batch = next(inputs.train_batches(0))
    assert batch["image"].shape == (64, 32, 32, 1) and inputs.num_train == 512
    first = next(inputs.eval_batches())
    assert first["image"].shape == (100, 32, 32, 1)
    assert not first["image"][:, :2].any() and not first["image"][:, :, -2:].any()


def test_smaller_image_size_is_rejected():
    config = tiny_config(**{"dataset.image_size": 20})
    with pytest.raises(ValueError, match="image_size=20"):
        data.make_input(config.dataset, global_batch=64, eval_batch=64, seed=0)


def test_synthetic_input_has_the_dataset_shape_without_tensorflow():
    """ImageNet-shaped synthetic batches, and TensorFlow is never imported for them."""
    code = (
        "import sys; from conftest import tiny_config; from common_jax import data\n"
        "c = tiny_config(**{'dataset.name': 'imagenet2012', 'dataset.image_size': 48,\n"
        "                   'dataset.synthetic': True, 'dataset.holdout_examples': 4,\n"
        "                   'dataset.num_train_examples': 0, 'dataset.num_eval_examples': 0})\n"
        "i = data.make_input(c.dataset, global_batch=8, eval_batch=6, seed=0)\n"
        "b = next(i.train_batches(0)); e = list(i.eval_batches()); h = list(i.holdout_batches())\n"
        "print(b['image'].shape, b['image'].dtype, int(b['label'].max()) < 1000, i.num_train,\n"
        "      len(e), e[0]['image'].shape, int(h[0]['mask'].sum()), 'tensorflow' in sys.modules)")
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tests_dir, os.path.dirname(tests_dir)]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert " ".join(out) == "(8, 48, 48, 3) uint8 True 32 1 (6, 48, 48, 3) 4 False"


tfds = require("tensorflow_datasets")


@pytest.mark.parametrize("pipeline", data.PIPELINES)
@pytest.mark.parametrize("name,size,channels", [("cifar10", 32, 3), ("fashion_mnist", 28, 1),
                                                ("imagenet2012", 64, 3)])
def test_tfds_pipelines_on_mock_data(tmp_path, name, size, channels, pipeline):
    config = tiny_config(**{"dataset.name": name, "dataset.image_size": size,
                            "dataset.data_dir": str(tmp_path), "dataset.color_jitter": 0.4})
    with tfds.testing.mock_data(num_examples=24):
        inputs = data.make_input(config.dataset, global_batch=8, eval_batch=16, seed=1,
                                 pipeline=pipeline)
        assert inputs.num_train == 24 and inputs.image_size == size
        stream = inputs.train_batches(0)
        first = [next(stream) for _ in range(5)]  # crosses the epoch boundary (3 steps/epoch)
        resumed = inputs.train_batches(4)
        np.testing.assert_array_equal(next(resumed)["image"], first[4]["image"])
        evals = list(inputs.eval_batches())
    batch = first[0]
    assert batch["image"].shape == (8, size, size, channels) and batch["image"].dtype == np.uint8
    assert batch["label"].dtype == np.int32
    assert len(evals) == 2 and evals[-1]["mask"].sum() == 8
    assert all(e["image"].shape == (16, size, size, channels) for e in evals)


def test_default_fashion_mnist_dir_is_the_debian_location():
    assert idx.DEFAULT_FASHION_MNIST_DIR == os.path.join("/usr/share/datasets", "fashion-mnist")
