"""Deterministic input pipeline for datasets held in host memory (embedded set, IDX files).

The batch at global step ``t`` depends only on (seed, t): epoch ``e = t // steps_per_epoch``
draws a seeded permutation and each batch draws its augmentation from a generator seeded by
(seed, e, batch index) for the whole *global* batch, of which every process keeps its own
slice. Hence a resumed run sees exactly the batches an uninterrupted one would, and N
processes together see exactly the batches of one process.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

AUGMENTATIONS = ("none", "crop_flip")


def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(num_examples)


def crop_flip(images: np.ndarray, padding: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-pad by ``padding``, take a random crop of the original size, flip half (CIFAR)."""
    n, h, w, _ = images.shape
    offsets = rng.integers(0, 2 * padding + 1, size=(n, 2))
    flips = rng.random(n) < 0.5
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    out = np.empty_like(images)
    for i, ((dy, dx), flip) in enumerate(zip(offsets, flips)):
        crop = padded[i, dy:dy + h, dx:dx + w]
        out[i] = crop[:, ::-1] if flip else crop
    return out


def train_batches(images: np.ndarray, labels: np.ndarray, *, global_batch: int, seed: int,
                  start_step: int, augment: str, crop_padding: int, process_index: int,
                  process_count: int) -> Iterator[dict]:
    """Endless host-local training batches starting at global step ``start_step``."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment={augment!r}: expected one of {AUGMENTATIONS}")
    num_examples = len(images)
    steps_per_epoch = num_examples // global_batch
    local = global_batch // process_count
    lo, hi = process_index * local, (process_index + 1) * local
    step, cached_epoch, perm = start_step, None, None
    while True:
        epoch, index = divmod(step, steps_per_epoch)
        if epoch != cached_epoch:
            perm, cached_epoch = epoch_permutation(seed, epoch, num_examples), epoch
        chosen = perm[index * global_batch:(index + 1) * global_batch]
        rng = np.random.default_rng([seed, epoch, index + 1])
        batch = images[chosen]
        if augment == "crop_flip":
            batch = crop_flip(batch, crop_padding, rng)
        yield {"image": batch[lo:hi], "label": labels[chosen][lo:hi]}
        step += 1


def pad_batch(image: np.ndarray, label: np.ndarray, size: int) -> dict:
    """Pads a batch with zeros to ``size`` examples; ``mask`` is 1 for real examples."""
    pad = size - len(label)
    mask = np.concatenate([np.ones(len(label), np.float32), np.zeros(pad, np.float32)])
    if pad:
        image = np.concatenate([image, np.zeros((pad,) + image.shape[1:], image.dtype)])
        label = np.concatenate([label, np.zeros(pad, label.dtype)])
    return {"image": image, "label": label, "mask": mask}


def eval_batches(images: np.ndarray, labels: np.ndarray, *, global_batch: int,
                 process_index: int, process_count: int) -> Iterator[dict]:
    """Host-local batches covering every example once, in order; padding has ``mask`` 0."""
    local = global_batch // process_count
    lo, hi = process_index * local, (process_index + 1) * local
    for start in range(0, len(images), global_batch):
        batch = pad_batch(images[start:start + global_batch], labels[start:start + global_batch],
                          global_batch)
        yield {key: value[lo:hi] for key, value in batch.items()}
