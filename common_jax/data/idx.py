"""Reading and writing IDX files (the MNIST / Fashion-MNIST format), gzipped or not.

Fashion-MNIST ships as ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``; Debian's
``dataset-fashion-mnist`` package installs them under ``/usr/share/datasets/fashion-mnist/``.
"""

from __future__ import annotations

import gzip
import struct

import numpy as np

from common_jax import paths

DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}


def read_idx(path: str) -> np.ndarray:
    """The array stored in an IDX file; ``.gz`` files are decompressed."""
    data = paths.read_bytes(path)
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {data[:4]!r})")
    dtype, ndim = np.dtype(_DTYPES[data[2]]), data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = data[4 + 4 * ndim:]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(body) != expected:
        raise ValueError(f"{path}: IDX header says shape {shape} ({expected} bytes) but the file "
                         f"holds {len(body)} bytes; the file is truncated or damaged")
    return np.frombuffer(body, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str, array: np.ndarray) -> None:
    """Writes a uint8/int8 array as an IDX file (gzipped when ``path`` ends in .gz)."""
    array = np.ascontiguousarray(array)
    if array.dtype not in _CODES:
        raise ValueError(f"write_idx supports uint8 and int8 arrays, got {array.dtype}")
    header = bytes([0, 0, _CODES[array.dtype], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    paths.write_bytes(path, gzip.compress(data, mtime=0) if path.endswith(".gz") else data)


def find_idx_file(directory: str, stem: str) -> str:
    """``directory/stem`` or ``directory/stem.gz``, whichever exists."""
    for name in (stem, stem + ".gz"):
        path = paths.join(directory, name)
        if paths.exists(path):
            return path
    raise FileNotFoundError(f"no {stem}[.gz] in {directory!r}; expected the Fashion-MNIST IDX "
                            f"files there (e.g. Debian's dataset-fashion-mnist package installs "
                            f"them in {DEFAULT_FASHION_MNIST_DIR})")


def load_idx_split(directory: str, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, 1) uint8 and labels (N,) int32 of ``prefix`` ('train' or 't10k')."""
    images = read_idx(find_idx_file(directory, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find_idx_file(directory, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{directory}/{prefix}: expected images (N, H, W) and labels (N,), got "
                         f"{images.shape} and {labels.shape}")
    return images[..., None], labels.astype(np.int32)
