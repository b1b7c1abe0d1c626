"""MobileNetV1 and MobileNetV2 as in the PSS-Net code (../shared/papers/pssnet.md §2.2-2.4).

Architecture descriptions (plain widths)::

    {"family": "mobilenet_v1", "num_classes": 1000, "in_channels": 3,
     "stem": 32, "stem_stride": 2, "blocks": [{"out": 64, "stride": 1}, ...]}      # 13 blocks
    {"family": "mobilenet_v2", "num_classes": 1000, "in_channels": 3,
     "stem": 32, "stem_stride": 2, "tail": 1280,
     "blocks": [{"expand": 0 | width, "out": 16, "stride": 1, "residual": False}, ...]}  # 17

V1 block: depthwise 3x3 -> BN -> ReLU6 -> pointwise -> BN -> ReLU6. V2 block: [expand 1x1 ->
BN -> ReLU6] (absent when ``expand`` is 0) -> depthwise 3x3 -> BN -> ReLU6 -> project 1x1 -> BN,
plus the input when ``residual``. All convs are bias-free; init N(0, sqrt(2 / (k*k*C_out))),
classifier N(0, 0.01) with zero bias. The ``small_input`` variants (28-32 px images) use a
stride-1 stem and one stride-2 stage fewer.

The structure is written once, in ``blocks`` (every block's sizes and widths) and
``layers`` (every counted conv/BN/linear layer by its parameter name). They drive the flax
network (``forward``, with injected conv, norm and depthwise layers), the FLOPs/params
profile, PSS-Net's masked supernet (the same ``forward`` with a masking norm), slicing a
subnet's variables, the vectorised FLOPs of many subnets and the latency units. Widths may
be integers, NumPy arrays (many subnets at once) or traced scalars (a subnet's active widths
inside a compiled step).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from common_jax.models import ops
from common_jax.models.family import WidthGroup
from common_jax.profile import Layer, bn_layer, conv_layer, conv_out_hw

V1_POINTWISE = (64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)
V1_STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)
# (expansion t, channels c, repeats n, first stride s) per stage.
V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))


def v1_arch(num_classes: int = 1000, in_channels: int = 3, width_mult: float = 1.0,
            small_input: bool = False) -> dict:
    strides = list(V1_STRIDES)
    if small_input:
        strides[1] = 1  # 28-32 px: stride-1 stem and first downsampling kept at full size
    blocks = [{"out": ops.make_divisible(c * width_mult), "stride": s}
              for c, s in zip(V1_POINTWISE, strides)]
    return {"family": "mobilenet_v1", "num_classes": num_classes, "in_channels": in_channels,
            "stem": ops.make_divisible(32 * width_mult), "stem_stride": 1 if small_input else 2,
            "blocks": blocks}


def v2_arch(num_classes: int = 1000, in_channels: int = 3, width_mult: float = 1.0,
            small_input: bool = False) -> dict:
    stem = ops.make_divisible(32 * width_mult)
    blocks, cin = [], stem
    for stage, (t, c, n, s) in enumerate(V2_STAGES):
        cout = ops.make_divisible(c * width_mult)
        if small_input and stage == 1:
            s = 1
        for i in range(n):
            stride = s if i == 0 else 1
            blocks.append({"expand": ops.make_divisible(cin * t) if t != 1 else 0, "out": cout,
                           "stride": stride, "residual": stride == 1 and cin == cout})
            cin = cout
    return {"family": "mobilenet_v2", "num_classes": num_classes, "in_channels": in_channels,
            "stem": stem, "stem_stride": 1 if small_input else 2, "tail": 1280,
            "blocks": blocks}


VERSIONS = {"mobilenet_v1": 1, "mobilenet_v2": 2}
V2_EXPANSION = 6  # a subnet's V2 expansion width: make_divisible(6 * its input width)


def block_groups(arch: dict) -> tuple:
    """The width group (0 = stem) that sets each block's output width: V1 one per block,
    V2 one per stage of ``V2_STAGES`` (a residual add ties a stage's blocks together)."""
    if arch["family"] == "mobilenet_v1":
        return tuple(range(1, len(arch["blocks"]) + 1))
    return tuple(s + 1 for s, (_, _, n, _) in enumerate(V2_STAGES) for _ in range(n))


def width_groups(arch: dict) -> tuple:
    """PSS-Net's width groups (``common_jax.models.family``): V1 the stem and the 13
    pointwise convs (14); V2 the stem, the 7 stage outputs and the tail (9), the tail
    inert as in the official code (its multiplier is drawn, its width stays full)."""
    groups = block_groups(arch)
    bases = {g: block["out"] for g, block in zip(groups, arch["blocks"])}
    out = [WidthGroup("stem", arch["stem"])]
    out += [WidthGroup(f"block{g - 1}" if arch["family"] == "mobilenet_v1" else f"stage{g}",
                       bases[g]) for g in sorted(bases)]
    if arch.get("tail"):
        out.append(WidthGroup("tail", arch["tail"], inert=True))
    return tuple(out)


def active_widths(arch: dict) -> dict:
    """A subnet's widths as the masked step takes them: ``stem``, per-block ``out`` and
    ``expand`` arrays (``with_active_widths`` reads them back inside the step)."""
    blocks = arch["blocks"]
    return {"stem": np.int32(arch["stem"]),
            "out": np.asarray([b["out"] for b in blocks], np.int32),
            "expand": np.asarray([b.get("expand", 0) for b in blocks], np.int32)}


def with_active_widths(full_arch: dict, widths: dict) -> dict:
    """The max-net description with ``active_widths`` (traced inside a compiled step) in
    place of the full ones; the structure stays the max net's."""
    blocks = [dict(block, out=widths["out"][i],
                   expand=widths["expand"][i] if has_expand(full_arch, block) else 0)
              for i, block in enumerate(full_arch["blocks"])]
    return dict(full_arch, stem=widths["stem"], blocks=blocks)


def with_group_widths(arch: dict, widths, make_divisible) -> dict:
    """``arch`` with every group's width from ``widths`` (one per ``width_groups`` entry;
    integers or arrays of many subnets) and each V2 expansion ``make_divisible(6 * input)``;
    the inert tail keeps its width."""
    blocks, cin = [], widths[0]
    for block, group in zip(arch["blocks"], block_groups(arch)):
        new = dict(block, out=widths[group])
        if has_expand(arch, block):
            new["expand"] = make_divisible(cin * V2_EXPANSION)
        blocks.append(new)
        cin = widths[group]
    return dict(arch, stem=widths[0], blocks=blocks)


@dataclasses.dataclass(frozen=True)
class Block:
    """One block of a description at an input size: V1 depthwise-separable (``mid`` = ``cin``),
    V2 inverted residual (``mid`` = the expansion width when ``expand``)."""

    name: str
    in_hw: Any
    out_hw: Any
    cin: Any
    mid: Any
    out: Any
    stride: int
    expand: bool  # V2 block with a 1x1 expansion conv
    residual: bool  # V2: the input is added to the output
    act_after_project: bool  # V1: ReLU6 after the pointwise conv


def has_expand(arch: dict, block: dict) -> bool:
    """Whether a block has an expansion conv (a V2 block whose ``expand`` is not the literal
    0 of the description; array or traced widths always do)."""
    width = block.get("expand", 0)
    return arch["family"] == "mobilenet_v2" and not (
        isinstance(width, (int, np.integer)) and width == 0)


def blocks(arch: dict, image_size) -> list[Block]:
    """The blocks of a description with their spatial sizes at ``image_size`` input."""
    v2 = arch["family"] == "mobilenet_v2"
    hw, cin, out = conv_out_hw(image_size, 3, arch["stem_stride"], 1), arch["stem"], []
    for i, block in enumerate(arch["blocks"]):
        expand = has_expand(arch, block)
        out_hw = conv_out_hw(hw, 3, block["stride"], 1)
        out.append(Block(f"block{i}", hw, out_hw, cin, block["expand"] if expand else cin,
                         block["out"], block["stride"], expand,
                         v2 and bool(block.get("residual")), not v2))
        hw, cin = out_hw, block["out"]
    return out


def layers(arch: dict, image_size) -> list[Layer]:
    """Every counted layer (parameter names of ``forward``) at ``image_size`` input."""
    stem = conv_layer("stem_conv", "stem", image_size, arch["in_channels"], arch["stem"], 3,
                      arch["stem_stride"])
    out = [stem, bn_layer("stem_bn", "stem", stem.out_hw, arch["stem"])]
    hw, ch = stem.out_hw, arch["stem"]
    for b in blocks(arch, image_size):
        name = b.name
        if b.expand:
            out += [conv_layer(f"{name}_expand_conv", name, b.in_hw, b.cin, b.mid, 1),
                    bn_layer(f"{name}_expand_bn", name, b.in_hw, b.mid)]
        out += [conv_layer(f"{name}_dw_conv", name, b.in_hw, b.mid, b.mid, 3, b.stride,
                           groups=b.mid),
                bn_layer(f"{name}_dw_bn", name, b.out_hw, b.mid),
                conv_layer(f"{name}_pw_conv", name, b.out_hw, b.mid, b.out, 1),
                bn_layer(f"{name}_pw_bn", name, b.out_hw, b.out)]
        hw, ch = b.out_hw, b.out
    if arch.get("tail"):
        out += [conv_layer("tail_conv", "tail", hw, ch, arch["tail"], 1),
                bn_layer("tail_bn", "tail", hw, arch["tail"])]
        ch = arch["tail"]
    return out + [Layer("avgpool", "avgpool", "head", hw, ch, 1, ch, pool_rule="adaptive"),
                  Layer("linear", "fc", "head", 1, ch, 1, arch["num_classes"], bias=True)]


def forward(x: jax.Array, arch: dict, *, conv: Callable, norm: Callable, depthwise: Callable,
            dtype) -> jax.Array:
    """The network of ``arch`` on NHWC ``x``, called inside a flax module's compact method:
    ``conv(features, kernel, strides, name)`` and ``depthwise(strides=, name=)`` make layers,
    ``norm(name)`` gives the normalisation of one layer (a plain BatchNorm, or PSS-Net's
    masked one that applies the active width of that layer)."""
    act, size = nn.relu6, x.shape[1]
    x = act(norm("stem_bn")(conv(arch["stem"], 3, arch["stem_stride"], name="stem_conv")(x)))
    for b in blocks(arch, size):
        y = x
        if b.expand:
            y = act(norm(f"{b.name}_expand_bn")(conv(b.mid, 1, name=f"{b.name}_expand_conv")(y)))
        y = act(norm(f"{b.name}_dw_bn")(depthwise(strides=b.stride, name=f"{b.name}_dw_conv")(y)))
        y = norm(f"{b.name}_pw_bn")(conv(b.out, 1, name=f"{b.name}_pw_conv")(y))
        if b.act_after_project:
            y = act(y)
        elif b.residual:
            y = y + x
        x = y
    if arch.get("tail"):
        x = act(norm("tail_bn")(conv(arch["tail"], 1, name="tail_conv")(x)))
    return ops.classifier(x, arch["num_classes"], kernel_init=nn.initializers.normal(0.01),
                          dtype=dtype, torch_bias=False)


class MobileNet(nn.Module):
    """Both versions from a plain-width description (``build``), with injected layers."""

    arch: dict
    conv: Any = nn.Conv
    norm: Any = nn.BatchNorm
    depthwise: Any = ops.DepthwiseConv
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        conv = ops.torch_conv(self.conv, kernel_init=ops.he_normal_fan_out, dtype=self.dtype)
        norm = ops.batch_norm(train, self.dtype, self.norm)
        return forward(x, self.arch, conv=conv, norm=lambda name: norm(name=name),
                       depthwise=functools.partial(self.depthwise, dtype=self.dtype),
                       dtype=self.dtype)


def build(arch: dict, **kwargs) -> MobileNet:
    if arch["family"] not in VERSIONS:
        raise ValueError(f"architecture family {arch['family']!r}: expected one of "
                         f"{list(VERSIONS)}")
    return MobileNet(arch=arch, **kwargs)
