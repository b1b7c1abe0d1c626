"""Input pipelines behind one interface: ``make_input(config.dataset, ...) -> Input``.

Datasets:
* ``embedded``: a class-balanced Fashion-MNIST subset shipped in ``common_jax/data/embedded``
  (10,000 train / 2,000 test images, 28x28 grey; MIT licence). Works offline, no tfds.
* ``fashion_mnist_idx``: the full Fashion-MNIST from IDX files in ``dataset.data_dir``
  (default ``/usr/share/datasets/fashion-mnist``), gzipped or not.
* ``cifar10``, ``fashion_mnist``, ``imagenet2012``: tensorflow-datasets (prepared in
  ``dataset.data_dir`` or the tfds default), read by Grain when prepared as array_record
  (``grain_input``: random access, a resume reads nothing it skips) and by tf.data when
  prepared as TFRecord (``tfds_input``); TensorFlow Datasets is imported only for these.
* ``dataset.synthetic=True`` with any name: seeded random images and labels of that dataset's
  shape, held in memory (benchmarks and compile checks on machines without the data or TF).

Every pipeline yields host-local numpy batches ``{"image": uint8 NHWC, "label": int32}``
(eval batches add ``mask``); images are normalised on the device (``normalize``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Iterator

import numpy as np

from common_jax.data import idx, memory

EMBEDDED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "embedded")
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    channels: int
    image_size: int  # native size
    mean: tuple
    std: tuple
    source: str  # 'memory' or 'tfds'
    train_split: str = "train"
    eval_split: str = "test"


DATASETS = {
    "embedded": DatasetInfo(10, 1, 28, *FASHION_MNIST_STATS, "memory"),
    "fashion_mnist_idx": DatasetInfo(10, 1, 28, *FASHION_MNIST_STATS, "memory"),
    "fashion_mnist": DatasetInfo(10, 1, 28, *FASHION_MNIST_STATS, "tfds"),
    "cifar10": DatasetInfo(10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010),
                           "tfds"),
    "imagenet2012": DatasetInfo(1000, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                                "tfds", eval_split="validation"),
}
MEMORY_SPLITS = {"train": "train", "test": "t10k"}
PIPELINES = ("grain", "tf_data")  # for tfds datasets


@dataclasses.dataclass(frozen=True)
class Input:
    """What the training loop needs from a dataset."""

    info: DatasetInfo
    image_size: int
    num_train: int
    num_eval: int
    train_batches: Callable[[int], Iterator[dict]]  # start step -> endless batches
    eval_batches: Callable[[], Iterator[dict]]  # one pass over the eval split
    holdout_batches: Callable[[], Iterator[dict]] | None = None  # held-out training examples
    pipeline: str = "memory"  # 'memory', 'grain' or 'tf_data'


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"dataset.name={name!r}: expected one of {sorted(DATASETS)}")
    return DATASETS[name]


def image_size(dataset_cfg) -> int:
    """The configured input size, or the dataset's native size when 0."""
    return dataset_cfg.image_size or dataset_info(dataset_cfg.name).image_size


def normalize(images, mean, std, dtype):
    """uint8 NHWC -> (x / 255 - mean) / std in ``dtype`` (runs inside the jitted step),
    computed in float32 (float64 for a float64 ``dtype``)."""
    import jax.numpy as jnp
    work = jnp.promote_types(dtype, jnp.float32)
    mean = jnp.asarray(mean, work)
    std = jnp.asarray(std, work)
    return ((images.astype(work) / 255.0 - mean) / std).astype(dtype)


def load_memory_split(dataset_cfg, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of an in-memory dataset split, centre-padded to ``size`` pixels."""
    if split not in MEMORY_SPLITS:
        raise ValueError(f"split {split!r} of dataset {dataset_cfg.name!r}: expected one of "
                         f"{sorted(MEMORY_SPLITS)}")
    directory = EMBEDDED_DIR if dataset_cfg.name == "embedded" else (
        dataset_cfg.data_dir or idx.DEFAULT_FASHION_MNIST_DIR)
    images, labels = idx.load_idx_split(directory, MEMORY_SPLITS[split])
    native = images.shape[1]
    if size < native:
        raise ValueError(f"dataset.image_size={size} is smaller than the {native}x{native} "
                         f"images of {dataset_cfg.name!r}; use {native} or more (zero-padded)")
    pad = size - native
    if pad:
        images = np.pad(images, ((0, 0), (pad // 2, pad - pad // 2), (pad // 2, pad - pad // 2),
                                 (0, 0)))
    return images, labels


SYNTHETIC_TRAIN_BATCHES = 4  # default synthetic training set: this many global batches


def synthetic_split(info: DatasetInfo, size: int, count: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` seeded uniform-random uint8 images (size x size x channels) and labels."""
    rng = np.random.default_rng([seed, 0x5E7])
    images = rng.integers(0, 256, (count, size, size, info.channels), dtype=np.uint8)
    return images, rng.integers(0, info.num_classes, count).astype(np.int32)


def _subset(arrays: tuple[np.ndarray, np.ndarray], count: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed (seed 0) random subset of ``count`` examples, in original order; all if 0."""
    if not count or count >= len(arrays[1]):
        return arrays
    keep = np.sort(np.random.default_rng(0).permutation(len(arrays[1]))[:count])
    return arrays[0][keep], arrays[1][keep]


def _split_holdout(arrays, count: int):
    """(training part, held-out part): ``count`` fixed (seed 1) examples leave training."""
    if count >= len(arrays[1]):
        raise ValueError(f"dataset.holdout_examples={count} leaves no training examples of "
                         f"{len(arrays[1])}")
    held = np.zeros(len(arrays[1]), bool)
    held[np.random.default_rng(1).permutation(len(arrays[1]))[:count]] = True
    return (arrays[0][~held], arrays[1][~held]), (arrays[0][held], arrays[1][held])


def make_input(dataset_cfg, *, global_batch: int, eval_batch: int, seed: int,
               process_index: int = 0, process_count: int = 1,
               pipeline: str | None = None) -> Input:
    """Builds the train/eval pipelines of ``config.dataset`` for this process. tfds datasets
    use ``pipeline`` ('grain' or 'tf_data'), by default Grain when the data was prepared as
    array_record and tf.data when it was prepared as TFRecord."""
    info = dataset_info(dataset_cfg.name)
    batches = {"global_batch": global_batch, "eval_batch": eval_batch, "seed": seed,
               "shard": {"process_index": process_index, "process_count": process_count}}
    if dataset_cfg.synthetic or info.source == "memory":
        return _memory_input(dataset_cfg, info, **batches)
    return _tfds_input(dataset_cfg, info, pipeline, **batches)


def _memory_input(dataset_cfg, info, *, global_batch, eval_batch, seed, shard) -> Input:
    """The in-memory pipelines: synthetic data, the embedded set, IDX files."""
    size = image_size(dataset_cfg)
    holdout = dataset_cfg.holdout_examples
    if dataset_cfg.synthetic:
        train = synthetic_split(info, size, dataset_cfg.num_train_examples or (
            SYNTHETIC_TRAIN_BATCHES * global_batch + holdout), seed=0)
        evals = synthetic_split(info, size, dataset_cfg.num_eval_examples or eval_batch,
                                seed=1)
    else:
        train = _subset(load_memory_split(dataset_cfg, dataset_cfg.train_split or
                                          info.train_split, size),
                        dataset_cfg.num_train_examples)
        evals = _subset(load_memory_split(dataset_cfg, dataset_cfg.eval_split or
                                          info.eval_split, size),
                        dataset_cfg.num_eval_examples)
    held = None
    if holdout:
        train, held = _split_holdout(train, holdout)
    return Input(
        info, size, len(train[1]), len(evals[1]),
        train_batches=lambda start: memory.train_batches(
            *train, global_batch=global_batch, seed=seed, start_step=start,
            augment="none" if dataset_cfg.synthetic else dataset_cfg.augment,
            crop_padding=dataset_cfg.crop_padding, **shard),
        eval_batches=lambda: memory.eval_batches(*evals, global_batch=eval_batch, **shard),
        holdout_batches=(lambda: memory.eval_batches(
            *held, global_batch=eval_batch, **shard)) if held else None)


def _tfds_input(dataset_cfg, info, pipeline, *, global_batch, eval_batch, seed,
                shard) -> Input:
    """The tfds pipelines: Grain or tf.data (``make_input``)."""
    from common_jax.data import tfds_input
    size = image_size(dataset_cfg)
    train_split = dataset_cfg.train_split or info.train_split
    eval_split = dataset_cfg.eval_split or info.eval_split
    holdout = dataset_cfg.holdout_examples
    data_dir = dataset_cfg.data_dir or None
    holdout_split = None
    if holdout:
        end = dataset_cfg.num_train_examples or ""
        cut = f"{dataset_cfg.num_train_examples - holdout}" if end else f"-{holdout}"
        train_split, holdout_split = f"{train_split}[:{cut}]", f"{train_split}[{cut}:{end}]"
    elif dataset_cfg.num_train_examples:
        train_split = f"{train_split}[:{dataset_cfg.num_train_examples}]"
    if dataset_cfg.num_eval_examples:
        eval_split = f"{eval_split}[:{dataset_cfg.num_eval_examples}]"
    pipeline = pipeline or tfds_pipeline(dataset_cfg.name, data_dir)
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline={pipeline!r}: expected one of {PIPELINES}")
    if pipeline == "grain":
        from common_jax.data import grain_input as module
        options = {}
    else:
        module = tfds_input
        options = {"shuffle_buffer": dataset_cfg.shuffle_buffer}
    common = {"style": "imagenet" if dataset_cfg.name == "imagenet2012" else "small",
              "channels": info.channels, "native_size": info.image_size, "image_size": size}
    return Input(
        info, size,
        tfds_input.split_size(dataset_cfg.name, data_dir, train_split),
        tfds_input.split_size(dataset_cfg.name, data_dir, eval_split),
        train_batches=lambda start: module.train_batches(
            dataset_cfg.name, data_dir, train_split, global_batch=global_batch, seed=seed,
            start_step=start, augment=dataset_cfg.augment, crop_padding=dataset_cfg.crop_padding,
            min_scale=dataset_cfg.rrc_min_scale, color_jitter=dataset_cfg.color_jitter,
            **options, **common, **shard),
        eval_batches=lambda: module.eval_batches(
            dataset_cfg.name, data_dir, eval_split, global_batch=eval_batch, **common, **shard),
        holdout_batches=(lambda: module.eval_batches(
            dataset_cfg.name, data_dir, holdout_split, global_batch=eval_batch, **common,
            **shard)) if holdout_split else None,
        pipeline=pipeline)


def tfds_pipeline(name: str, data_dir: str | None) -> str:
    """'grain' when the tfds data is prepared as array_record (random access), else 'tf_data'."""
    from common_jax.data import tfds_input
    formats = tfds_input.file_formats(name, data_dir)
    return "grain" if "array_record" in formats else "tf_data"
