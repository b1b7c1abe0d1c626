"""tf.data input pipelines over tensorflow-datasets (the path for data prepared as TFRecord;
``grain_input`` serves array_record data).

Each process reads its own shard (``tfds.split_for_jax_process``). Training is one pipeline
per run ordered by (seed, epoch): pieces of the shard and examples are shuffled with seeds
derived from the epoch and every example's augmentation comes from a stateless seed (seed,
epoch, example position), so a run resumed at step ``t`` skips to the same position of the
same epoch and continues with the same batches. TensorFlow is imported only here and in the
tfds helpers, so the rest of the project runs without it.

Augmentation (as the papers' recipes):
* cifar10 / fashion_mnist: zero-pad ``crop_padding``, random crop back, random flip.
* imagenet2012 train: random-resized crop (area ``rrc_min_scale``..1, aspect 3/4..4/3) to
  ``image_size``, random flip, optional colour jitter. Eval: resize the shorter side to
  ``image_size * 256 / 224``, center crop ``image_size``.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from common_jax.data.host import usable_cores
from common_jax.data.memory import pad_batch

MIN_PIECE = 1024  # examples per piece of the per-epoch file shuffle


def _tf():
    import tensorflow as tf
    import tensorflow_datasets as tfds
    tf.config.set_visible_devices([], "GPU")  # TF only feeds data; JAX owns the accelerator
    return tf, tfds


def split_size(name: str, data_dir: str | None, split: str) -> int:
    """Number of examples in ``split`` (all processes together)."""
    tf, tfds = _tf()
    builder = tfds.builder(name, data_dir=data_dir)
    try:
        return builder.info.splits[split].num_examples
    except KeyError:  # no stored metadata (e.g. mock data): count the records
        ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
        count = int(ds.cardinality())
        return count if count >= 0 else int(ds.reduce(0, lambda n, _: n + 1))


def file_formats(name: str, data_dir: str | None) -> set[str]:
    """The file formats the tfds dataset is prepared in ('tfrecord', 'array_record', ...;
    ``tfds convert_format`` adds one beside the first)."""
    _, tfds = _tf()
    info = tfds.builder(name, data_dir=data_dir).info
    return {f.value for f in info.available_file_formats()} | {info.file_format.value}


def _decode(tf, example, channels):
    return tf.io.decode_image(example["image"], channels=channels, expand_animations=False)


def _preprocess_small(tf, image, seed, *, train, augment, crop_padding, image_size,
                      native_size):
    """CIFAR-style: resize when ``image_size`` differs from the native size, then
    pad-crop-flip when training."""
    if image_size != native_size:
        image = tf.image.resize(image, (image_size, image_size), antialias=True)
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    shape = tf.shape(image)
    if train and augment == "crop_flip":
        p = crop_padding
        padded = tf.pad(image, [[p, p], [p, p], [0, 0]])
        image = tf.image.stateless_random_crop(padded, shape, seed=seed)
        image = tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
    return image


def _color_jitter(tf, image, strength, seed):
    """torchvision-style brightness, contrast and saturation jitter (factors in 1 +- strength),
    applied in that fixed order on a 0..255 float image, clipped after each."""
    factors = tf.random.stateless_uniform([3], seed=seed, minval=1 - strength,
                                          maxval=1 + strength)
    image = tf.clip_by_value(image * factors[0], 0, 255)
    mean = tf.reduce_mean(tf.image.rgb_to_grayscale(image))
    image = tf.clip_by_value((image - mean) * factors[1] + mean, 0, 255)
    gray = tf.image.rgb_to_grayscale(image)
    return tf.clip_by_value((image - gray) * factors[2] + gray, 0, 255)


def _preprocess_imagenet(tf, encoded, seed, *, train, image_size, min_scale, color_jitter):
    if train:
        shape = tf.image.extract_jpeg_shape(encoded)
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape, tf.zeros([0, 0, 4], tf.float32), seed=seed, min_object_covered=0.0,
            aspect_ratio_range=(3 / 4, 4 / 3), area_range=(min_scale, 1.0), max_attempts=10,
            use_image_if_no_bounding_boxes=True)
        window = tf.stack([begin[0], begin[1], size[0], size[1]])
        image = tf.image.decode_and_crop_jpeg(encoded, window, channels=3)
        image = tf.image.resize(image, (image_size, image_size), antialias=True)
        image = tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
        if color_jitter:
            image = _color_jitter(tf, image, color_jitter, seed + 2)
    else:
        image = tf.cast(tf.io.decode_jpeg(encoded, channels=3), tf.float32)
        resize_to = int(round(image_size * 256 / 224))
        h, w = tf.shape(image)[0], tf.shape(image)[1]
        scale = resize_to / tf.cast(tf.minimum(h, w), tf.float32)
        new_hw = (tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32),
                  tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32))
        image = tf.image.resize(image, new_hw, antialias=True)
        top, left = (new_hw[0] - image_size) // 2, (new_hw[1] - image_size) // 2
        image = image[top:top + image_size, left:left + image_size]
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _preprocess_fn(tf, style, channels, native_size, *, train, augment, crop_padding,
                   image_size, min_scale=1.0, color_jitter=0.0):
    def fn(seed, example):
        if style == "imagenet":
            image = _preprocess_imagenet(tf, example["image"], seed, train=train,
                                         image_size=image_size, min_scale=min_scale,
                                         color_jitter=color_jitter)
        else:
            image = _preprocess_small(tf, _decode(tf, example, channels), seed, train=train,
                                      augment=augment, crop_padding=crop_padding,
                                      image_size=image_size, native_size=native_size)
        return {"image": image, "label": tf.cast(example["label"], tf.int32)}
    return fn


def pipeline_options(tf):
    """tf.data options as the flax ImageNet example sets them: one private thread pool of a
    thread per core this process may run on, single-threaded ops inside it, deterministic order."""
    options = tf.data.Options()
    options.deterministic = True
    options.threading.private_threadpool_size = usable_cores()
    options.threading.max_intra_op_parallelism = 1
    options.experimental_optimization.map_parallelization = True
    return options


def _pieces(tfds, name, data_dir, host_split, count: int):
    """``host_split`` cut into up to ``count`` contiguous pieces of at least
    ``MIN_PIECE`` examples, read in order (the unit of per-epoch file shuffling)."""
    total = split_size(name, data_dir, host_split)
    splits = tfds.even_splits(host_split, n=max(1, min(count, total // MIN_PIECE)))
    datasets = tfds.builder(name, data_dir=data_dir).as_dataset(
        split=splits, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()})
    return datasets, [split_size(name, data_dir, s) for s in splits]


def train_batches(name: str, data_dir: str | None, split: str, *, style: str, channels: int,
                  native_size: int, global_batch: int, seed: int, start_step: int, augment: str,
                  crop_padding: int, image_size: int, min_scale: float, color_jitter: float,
                  shuffle_buffer: int, process_index: int, process_count: int,
                  pieces: int = 64) -> Iterator[dict]:
    """Endless host-local training batches starting at global step ``start_step``.

    One ``tf.data`` pipeline for the whole run: epoch ``e`` reads the host's pieces in a
    permutation seeded by (seed, e), shuffles them in a buffer seeded by (seed, e) and
    augments example ``i`` of the epoch with the stateless seed (seed, process, e, i). A
    resumed run skips the epoch's first ``index * local`` records by reading them (TFRecord
    files have no random access; the Grain pipeline over array_record reads none).
    """
    tf, tfds = _tf()
    steps_per_epoch = split_size(name, data_dir, split) // global_batch
    local = global_batch // process_count
    host_split = tfds.split_for_jax_process(split, process_index=process_index,
                                            process_count=process_count, drop_remainder=True)
    datasets, lengths = _pieces(tfds, name, data_dir, host_split, pieces)
    lengths = tf.constant(lengths, tf.int64)
    preprocess = _preprocess_fn(tf, style, channels, native_size, train=True, augment=augment,
                                crop_padding=crop_padding, image_size=image_size,
                                min_scale=min_scale, color_jitter=color_jitter)
    first_epoch, index = divmod(start_step, steps_per_epoch)

    def epoch_examples(epoch):
        epoch_seed = tf.constant(seed * 1000003, tf.int64) + epoch
        order = tf.random.experimental.stateless_shuffle(
            tf.range(len(datasets), dtype=tf.int64), seed=tf.stack([epoch_seed, epoch]))
        choice = tf.data.Dataset.from_tensor_slices(tf.repeat(order, tf.gather(lengths, order)))
        ds = tf.data.Dataset.choose_from_datasets(datasets, choice)
        ds = ds.shuffle(shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=False)
        ds = ds.enumerate().take(steps_per_epoch * local)
        ds = ds.skip(tf.where(epoch == first_epoch, tf.constant(index * local, tf.int64), 0))
        # Stateless augmentation seed per example: (seed, process, epoch, position).
        base = tf.stack([tf.constant(seed * 7919 + process_index, tf.int64),
                         tf.bitwise.left_shift(epoch, 32)])
        return ds.map(lambda i, ex: preprocess(base + tf.stack([tf.constant(0, tf.int64), i]),
                                               ex),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    ds = tf.data.Dataset.range(first_epoch, 2 ** 62).flat_map(epoch_examples)
    ds = ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    yield from ds.with_options(pipeline_options(tf)).as_numpy_iterator()


def eval_batches(name: str, data_dir: str | None, split: str, *, style: str, channels: int,
                 native_size: int, global_batch: int, image_size: int, process_index: int,
                 process_count: int) -> Iterator[dict]:
    """Host-local eval batches over the whole split; padding examples have ``mask`` 0."""
    tf, tfds = _tf()
    builder = tfds.builder(name, data_dir=data_dir)
    local = global_batch // process_count
    total = split_size(name, data_dir, split)
    steps = math.ceil(math.ceil(total / process_count) / local)
    host_split = tfds.split_for_jax_process(split, process_index=process_index,
                                            process_count=process_count)
    preprocess = _preprocess_fn(tf, style, channels, native_size, train=False, augment="none",
                                crop_padding=0, image_size=image_size)
    ds = builder.as_dataset(split=host_split, shuffle_files=False,
                            decoders={"image": tfds.decode.SkipDecoding()})
    ds = ds.map(lambda ex: preprocess(tf.zeros([2], tf.int64), ex),
                num_parallel_calls=tf.data.AUTOTUNE).batch(local)
    produced = 0
    ds = ds.prefetch(tf.data.AUTOTUNE).with_options(pipeline_options(tf))
    for batch in ds.as_numpy_iterator():
        yield pad_batch(batch["image"], batch["label"], local)
        produced += 1
    empty = pad_batch(np.zeros((0, image_size, image_size, channels), np.uint8),
                      np.zeros(0, np.int32), local)
    for _ in range(produced, steps):  # this host ran out before the others
        yield empty
