"""Grain input pipelines over tfds ``array_record`` data (random access, no TensorFlow graph).

The training stream is one lazily indexed dataset built once per run: the global element at
position ``g = epoch * n + step_in_epoch * global_batch + j`` is element ``g mod n`` of epoch
``g // n``'s permutation (Grain's ``shuffle().repeat()`` reseeds every epoch), decoded and
augmented with a generator seeded by ``(seed, g)``. Each process reads only its own slice of
every global batch, so N processes together see the batches of one, and a run resumed at step
``t`` starts its index range at ``t``: nothing before it is read or decoded. The last
``n mod global_batch`` elements of each epoch's permutation are dropped, as with tf.data.

Reads and transforms run in ``ReadOptions.num_threads`` threads (Pillow and array_record
release the GIL) with a prefetch buffer; ``IterDataset.mp_prefetch`` would add processes.
"""

from __future__ import annotations

import functools
import math
from typing import Iterator

import numpy as np

from common_jax.data.host import usable_cores
from common_jax.data import image_ops

_ENDLESS = 2 ** 62  # the training index range has no end


def data_source(name: str, data_dir: str | None, split: str):
    """The random-access tfds source of ``split`` (images left encoded)."""
    import tensorflow_datasets as tfds
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                            decoders={"image": tfds.decode.SkipDecoding()})


def read_options(threads: int = 0):
    """Grain's reading threads (default: one per core this process may run on, at most 16)
    and a prefetch buffer of 4 batches per thread."""
    import grain
    threads = threads or min(16, usable_cores())
    return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=4 * threads)


def _transform(record: dict, rng, *, style: str, train: bool, **kwargs) -> dict:
    encoded = record["image"]
    if style == "imagenet":
        image = (image_ops.imagenet_train(encoded, rng, image_size=kwargs["image_size"],
                                          min_scale=kwargs["min_scale"],
                                          jitter=kwargs["color_jitter"])
                 if train else image_ops.imagenet_eval(encoded, image_size=kwargs["image_size"]))
    else:
        image = image_ops.small(encoded, rng if train else None, channels=kwargs["channels"],
                                native_size=kwargs["native_size"],
                                image_size=kwargs["image_size"], augment=kwargs["augment"],
                                crop_padding=kwargs["crop_padding"])
    return {"image": image, "label": np.int32(record["label"])}


def global_position(i: int, *, local: int, global_batch: int, steps_per_epoch: int,
                    num_examples: int, process_index: int) -> int:
    """Position in the endless (epoch-major) element stream of this host's ``i``-th element."""
    step, j = divmod(i, local)
    epoch, index = divmod(step, steps_per_epoch)
    return epoch * num_examples + index * global_batch + process_index * local + j


def train_batches(name: str, data_dir: str | None, split: str, *, style: str, channels: int,
                  native_size: int, global_batch: int, seed: int, start_step: int, augment: str,
                  crop_padding: int, image_size: int, min_scale: float, color_jitter: float,
                  process_index: int, process_count: int, threads: int = 0) -> Iterator[dict]:
    """Endless host-local training batches starting at global step ``start_step``."""
    import grain
    source = data_source(name, data_dir, split)
    num_examples = len(source)
    local = global_batch // process_count
    steps_per_epoch = num_examples // global_batch
    if steps_per_epoch == 0:
        raise ValueError(f"{name} {split}: {num_examples} examples, fewer than one global "
                         f"batch of {global_batch}")
    order = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
    position = functools.partial(global_position, local=local, global_batch=global_batch,
                                 steps_per_epoch=steps_per_epoch, num_examples=num_examples,
                                 process_index=process_index)
    transform = functools.partial(_transform, style=style, train=True, channels=channels,
                                  native_size=native_size, image_size=image_size,
                                  augment=augment, crop_padding=crop_padding,
                                  min_scale=min_scale, color_jitter=color_jitter)

    def element(i):
        g = position(i)
        return transform(order[g], np.random.default_rng([seed, g]))

    ds = grain.MapDataset.range(start_step * local, _ENDLESS).map(element)
    yield from ds.batch(local, drop_remainder=True).to_iter_dataset(read_options(threads))


def eval_batches(name: str, data_dir: str | None, split: str, *, style: str, channels: int,
                 native_size: int, global_batch: int, image_size: int, process_index: int,
                 process_count: int, threads: int = 0) -> Iterator[dict]:
    """Host-local eval batches: global batch ``b`` covers examples ``b * global_batch ...``
    in order and each process keeps its slice; padding examples have ``mask`` 0."""
    import grain
    source = data_source(name, data_dir, split)
    total, local = len(source), global_batch // process_count
    transform = functools.partial(_transform, style=style, train=False, channels=channels,
                                  native_size=native_size, image_size=image_size,
                                  augment="none", crop_padding=0)
    blank = {"image": np.zeros((image_size, image_size, channels), np.uint8),
             "label": np.int32(0)}

    def element(g):
        if g >= total:
            return {**blank, "mask": np.float32(0)}
        return {**transform(source[g], None), "mask": np.float32(1)}

    steps = math.ceil(total / global_batch)
    indices = [b * global_batch + process_index * local + j
               for b in range(steps) for j in range(local)]
    ds = grain.MapDataset.source(indices).map(element).batch(local)
    yield from ds.to_iter_dataset(read_options(threads))
