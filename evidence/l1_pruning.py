"""The classic-criterion control of the evidence study: L1-norm filter pruning (Li et al.,
"Pruning Filters for Efficient ConvNets", 2017) of a CIFAR-style ResNet trained at full width.

As Li et al. do for ResNets, only the first conv of every basic block is pruned: its
``m`` filters with the largest L1 norms are kept (in their original order), with their BN
entries and the matching input channels of the block's second conv. The residual widths
stay, so the shortcuts need no change. The result is the compact ResNet of rates
``[r]*3N + [0.0]*3`` (DCFF's rate format), to be fine-tuned.
"""

from __future__ import annotations

import numpy as np
from flax import traverse_util


def l1_keep(kernel: np.ndarray, count: int) -> np.ndarray:
    """Indices (ascending) of the ``count`` output filters of a (k, k, in, out) kernel with
    the largest L1 norms."""
    norms = np.abs(np.asarray(kernel)).sum(axis=(0, 1, 2))
    return np.sort(np.argsort(-norms, kind="stable")[:count])


def prune_first_convs(variables: dict, compact_arch: dict) -> dict:
    """The compact model's variables from a full-width CIFAR ResNet's: every block's conv1
    cut to the compact arch's width by L1 norm. ValueError if residual widths differ."""
    params = traverse_util.flatten_dict(variables["params"], sep="/")
    stats = traverse_util.flatten_dict(variables["batch_stats"], sep="/")
    params = {k: np.asarray(v) for k, v in params.items()}
    stats = {k: np.asarray(v) for k, v in stats.items()}
    if params["stem_conv/kernel"].shape[-1] != compact_arch["stem"]:
        raise ValueError("L1 pruning here keeps the residual widths; the compact arch's stem "
                         f"has {compact_arch['stem']} channels, the trained model "
                         f"{params['stem_conv/kernel'].shape[-1]}")
    for s, blocks in enumerate(compact_arch["stages"]):
        for b, (mid, out) in enumerate(blocks):
            block = f"stage{s + 1}_block{b}"
            if params[f"{block}/conv2/kernel"].shape[-1] != out:
                raise ValueError(f"{block}: residual width {out} differs from the trained "
                                 f"{params[f'{block}/conv2/kernel'].shape[-1]}")
            keep = l1_keep(params[f"{block}/conv1/kernel"], mid)
            params[f"{block}/conv1/kernel"] = params[f"{block}/conv1/kernel"][..., keep]
            for leaf in ("scale", "bias"):
                params[f"{block}/bn1/{leaf}"] = params[f"{block}/bn1/{leaf}"][keep]
            for leaf in ("mean", "var"):
                stats[f"{block}/bn1/{leaf}"] = stats[f"{block}/bn1/{leaf}"][keep]
            params[f"{block}/conv2/kernel"] = params[f"{block}/conv2/kernel"][:, :, keep, :]
    return {"params": traverse_util.unflatten_dict(params, sep="/"),
            "batch_stats": traverse_util.unflatten_dict(stats, sep="/")}
