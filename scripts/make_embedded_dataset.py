"""Regenerates the embedded Fashion-MNIST subset in common_jax/data/embedded/.

A class-balanced, seeded subset of the full Fashion-MNIST IDX files (MIT licence):
``--train_per_class`` images per class from the training set and ``--test_per_class`` from the
test set, written in the same gzipped IDX format. Usage::

    python scripts/make_embedded_dataset.py --source /usr/share/datasets/fashion-mnist
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common_jax.data import idx  # noqa: E402


def balanced_subset(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    chosen = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
              for c in range(10)]
    return np.sort(np.concatenate(chosen))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", default=idx.DEFAULT_FASHION_MNIST_DIR)
    parser.add_argument("--out", default=os.path.join("common_jax", "data", "embedded"))
    parser.add_argument("--train_per_class", type=int, default=1000)
    parser.add_argument("--test_per_class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    for prefix, per_class in (("train", args.train_per_class), ("t10k", args.test_per_class)):
        images, labels = idx.load_idx_split(args.source, prefix)
        keep = balanced_subset(labels, per_class, rng)
        idx.write_idx(os.path.join(args.out, f"{prefix}-images-idx3-ubyte.gz"),
                      images[keep, ..., 0])
        idx.write_idx(os.path.join(args.out, f"{prefix}-labels-idx1-ubyte.gz"),
                      labels[keep].astype(np.uint8))
        print(f"{prefix}: {len(keep)} images")


if __name__ == "__main__":
    main()
