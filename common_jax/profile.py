"""Analytic FLOPs and parameter counting from an architecture's layer list.

Every model family lists its layers (`Layer` records) from its plain-width architecture
description; nothing is traced. Three totals are computed from the same list:

* ``flops``: multiply-accumulates of conv and linear layers plus one add per input element
  of average pooling (the PSS-Net counter, ../shared/papers/pssnet.md §3.1).
* ``flops_thop``: the thop 0.0.31 rules the DCFF tables use (../shared/papers/dcff.md §5):
  conv MACs plus one per output element if the conv has a bias, 2 per BN element, linear
  MACs, and average pooling counted by how the PyTorch model wrote it (``pool_rule``).
* ``params``: conv and linear weights and biases, BN scale and bias (running statistics are
  buffers, not parameters).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Iterable, Sequence

import numpy as np

# How thop counted an average pool, by the PyTorch construct the original model used.
POOL_RULES = ("module", "adaptive", "functional")


@dataclasses.dataclass(frozen=True)
class Layer:
    """One counted layer. Spatial sizes are square (``hw`` x ``hw``), channels last. Sizes
    and channel counts are integers, or NumPy arrays to count many networks at once.

    kind: 'conv', 'bn', 'linear' or 'avgpool'.
    name: the flax parameter path ('stage1/block0/conv1'); for 'avgpool' a label only.
    group: the row of the per-group table ('stem', 'stage1', 'head', ...).
    """

    kind: str
    name: str
    group: str
    in_hw: int
    in_ch: int
    out_hw: int
    out_ch: int
    kernel: int = 1
    stride: int = 1
    groups: int = 1
    bias: bool = False
    pool_rule: str = "module"


def conv_out_hw(in_hw: int, kernel: int, stride: int, padding: int) -> int:
    """PyTorch/SAME-compatible output size: floor((in + 2p - k) / s) + 1."""
    return (in_hw + 2 * padding - kernel) // stride + 1


def conv_layer(name: str, group: str, in_hw: int, in_ch: int, out_ch: int, kernel: int,
               stride: int = 1, groups: int = 1, bias: bool = False) -> Layer:
    """A conv layer padded by ``kernel // 2`` (the PyTorch models' convention)."""
    out_hw = conv_out_hw(in_hw, kernel, stride, kernel // 2)
    if min(np.ravel(out_hw)) < 1:  # sizes may be arrays (many subnets counted at once)
        raise ValueError(f"layer {name}: input {in_hw}x{in_hw} is too small for this network")
    return Layer("conv", name, group, in_hw, in_ch, out_hw, out_ch, kernel, stride, groups, bias)


def bn_layer(name: str, group: str, hw: int, channels: int) -> Layer:
    return Layer("bn", name, group, hw, channels, hw, channels)


def layer_flops(layer: Layer) -> int:
    """Multiply-accumulates of a conv/linear layer, one add per input element of a pool."""
    if layer.kind == "conv":
        return layer.out_hw**2 * layer.out_ch * (layer.in_ch // layer.groups) * layer.kernel**2
    if layer.kind == "linear":
        return layer.in_ch * layer.out_ch
    if layer.kind == "avgpool":
        return layer.in_hw**2 * layer.in_ch
    return 0


def layer_flops_thop(layer: Layer) -> int:
    """What thop 0.0.31 counted for this layer (dcff.md §5)."""
    out_numel = layer.out_hw**2 * layer.out_ch
    if layer.kind == "conv":
        per_output = (layer.in_ch // layer.groups) * layer.kernel**2 + int(layer.bias)
        return out_numel * per_output
    if layer.kind == "bn":
        return 2 * out_numel
    if layer.kind == "linear":
        return layer.in_ch * layer.out_ch
    if layer.kind == "avgpool":
        if layer.pool_rule == "module":
            return out_numel
        if layer.pool_rule == "adaptive":
            window = (layer.in_hw // layer.out_hw) ** 2
            return (window + 1) * out_numel
        return 0
    raise ValueError(f"unknown layer kind {layer.kind!r}")


def layer_params(layer: Layer) -> int:
    """Trainable parameters of the layer."""
    if layer.kind == "conv":
        weights = layer.out_ch * (layer.in_ch // layer.groups) * layer.kernel**2
        return weights + (layer.out_ch if layer.bias else 0)
    if layer.kind == "linear":
        return layer.in_ch * layer.out_ch + (layer.out_ch if layer.bias else 0)
    if layer.kind == "bn":
        return 2 * layer.out_ch
    return 0


def totals(layers: Iterable[Layer]) -> dict[str, int]:
    """The three integer totals of a layer list."""
    layers = list(layers)
    return {
        "flops": sum(map(layer_flops, layers)),
        "flops_thop": sum(map(layer_flops_thop, layers)),
        "params": sum(map(layer_params, layers)),
    }


def group_table(layers: Sequence[Layer]) -> str:
    """A readable per-group table (groups in first-seen order) with a total row."""
    rows: dict[str, dict[str, int]] = {}
    for layer in layers:
        row = rows.setdefault(layer.group,
                              {"layers": 0, "flops": 0, "flops_thop": 0, "params": 0, "out": ""})
        row["layers"] += layer.kind in ("conv", "linear")
        row["flops"] += layer_flops(layer)
        row["flops_thop"] += layer_flops_thop(layer)
        row["params"] += layer_params(layer)
        row["out"] = f"{layer.out_hw}x{layer.out_hw}x{layer.out_ch}"
    total = totals(layers)
    header = (f"{'group':<14}{'conv/fc':>8}{'output':>16}{'MFLOPs':>12}{'MFLOPs(thop)':>14}"
              f"{'params':>12}")
    lines = [header, "-" * len(header)]
    for name, row in rows.items():
        lines.append(f"{name:<14}{row['layers']:>8}{row['out']:>16}{row['flops'] / 1e6:>12.2f}"
                     f"{row['flops_thop'] / 1e6:>14.2f}{row['params']:>12,}")
    lines.append("-" * len(header))
    lines.append(f"{'total':<14}{'':>8}{'':>16}{total['flops'] / 1e6:>12.2f}"
                 f"{total['flops_thop'] / 1e6:>14.2f}{total['params']:>12,}")
    return "\n".join(lines)


def profile_json(layers: Sequence[Layer], **extra) -> str:
    """The one-line JSON the profile mode prints last."""
    return json.dumps({**totals(layers), **extra}, sort_keys=False)
