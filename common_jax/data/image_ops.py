"""Per-example decoding and augmentation in NumPy and Pillow (the Grain pipeline's transforms).

The same recipes as the tf.data pipeline (``tfds_input``), drawn from a ``np.random.Generator``
the caller seeds per example:
* ``small`` (cifar10, fashion_mnist): decode, resize when ``image_size`` differs from the
  native size, then zero-pad ``crop_padding``, random crop back and random flip.
* ``imagenet`` train: random-resized crop (area ``min_scale``..1 of the image, aspect
  3/4..4/3 log-uniform, 10 attempts, else the whole image) resized to ``image_size``
  (bilinear, antialiased), random flip, optional colour jitter. JPEGs are decoded at full
  resolution, as tf.data does (Pillow's DCT-domain ``draft`` scaling would be faster for
  large images, but changes the pixels by several grey levels where it reduces).
* ``imagenet`` eval: shorter side to ``image_size * 256 / 224``, centre crop ``image_size``.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from common_jax.data import memory

def _open(encoded: bytes) -> Image.Image:
    return Image.open(io.BytesIO(encoded))


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def _uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def random_resized_box(width: int, height: int, rng: np.random.Generator, min_scale: float,
                       attempts: int = 10) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height) of a random-resized crop; the whole image when
    no attempt fits."""
    area = width * height
    for _ in range(attempts):
        target = area * rng.uniform(min_scale, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    return 0, 0, width, height


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """torchvision-style brightness, contrast and saturation jitter (factors in 1 +- strength,
    in that order) on a 0..255 float image, clipped after each (as ``tfds_input``)."""
    factors = rng.uniform(1 - strength, 1 + strength, 3).astype(np.float32)
    luma = np.asarray([0.2989, 0.5870, 0.1140], np.float32)
    image = np.clip(image * factors[0], 0, 255)
    mean = np.float32((image @ luma).mean())
    image = np.clip((image - mean) * factors[1] + mean, 0, 255)
    gray = (image @ luma)[..., None]
    return np.clip((image - gray) * factors[2] + gray, 0, 255)


def imagenet_train(encoded: bytes, rng: np.random.Generator, *, image_size: int,
                   min_scale: float, jitter: float) -> np.ndarray:
    """Random-resized crop + flip (+ jitter) of a JPEG -> uint8 (image_size, image_size, 3)."""
    image = _open(encoded)
    width, height = image.size
    left, top, w, h = random_resized_box(width, height, rng, min_scale)
    out = _rgb(image).resize((image_size, image_size), Image.BILINEAR,
                             box=(left, top, left + w, top + h))
    if rng.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    array = np.asarray(out)
    if jitter:
        array = _uint8(color_jitter(array.astype(np.float32), jitter, rng))
    return array


def imagenet_eval(encoded: bytes, *, image_size: int) -> np.ndarray:
    """Shorter side to ``image_size * 256 / 224``, centre crop -> uint8 (size, size, 3)."""
    image = _open(encoded)
    width, height = image.size
    resize_to = int(round(image_size * 256 / 224))
    scale = resize_to / min(width, height)
    new_w, new_h = int(round(width * scale)), int(round(height * scale))
    image = _rgb(image).resize((new_w, new_h), Image.BILINEAR)
    top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
    return np.asarray(image)[top:top + image_size, left:left + image_size]


def small(encoded: bytes, rng: np.random.Generator | None, *, channels: int, native_size: int,
          image_size: int, augment: str, crop_padding: int) -> np.ndarray:
    """Decode (and resize) a CIFAR / Fashion-MNIST image; pad-crop-flip when ``rng`` is given
    and ``augment`` is 'crop_flip'. -> uint8 (image_size, image_size, channels)."""
    image = _open(encoded).convert("L" if channels == 1 else "RGB")
    if image_size != native_size:
        image = image.resize((image_size, image_size), Image.BILINEAR)
    array = np.asarray(image).reshape(image_size, image_size, channels)
    if rng is not None and augment == "crop_flip":  # the in-memory pipeline's, on one image
        return memory.crop_flip(array[None], crop_padding, rng)[0]
    return np.ascontiguousarray(array)
