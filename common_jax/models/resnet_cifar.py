"""CIFAR ResNet-20/32/44/56/110 (basic blocks, option-A shortcuts), as in the DCFF/HRank code.

Architecture description (plain widths, JSON-serialisable)::

    {"family": "resnet_cifar", "num_classes": 10, "in_channels": 3, "stem": 16,
     "stages": [[[mid, out], ...], [...], [...]],   # per block: conv1 width, conv2 width
     "thop_pool": "functional"}

Stage strides are 1, 2, 2; the first block of a stage subsamples. ``out`` is the residual
width, equal for all blocks of a stage. ``thop_pool`` says how the original PyTorch class
wrote the final average pool ('functional' for the baseline, 'adaptive' for DCFF's compact
models), which only affects the thop-rule FLOPs.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from common_jax.models import ops
from common_jax.models.family import WidthGroup
from common_jax.profile import Layer, bn_layer, conv_layer

STAGE_STRIDES = (1, 2, 2)


def full_arch(depth: int = 56, num_classes: int = 10, in_channels: int = 3,
              width: int = 16) -> dict:
    """Full-width ResNet-``depth``; ``width`` is the first stage's width (16 in the paper)."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth {depth}: expected 6n+2 (20, 32, 44, 56, 110)")
    n = (depth - 2) // 6
    stages = [[[width * 2**s, width * 2**s] for _ in range(n)] for s in range(3)]
    return {"family": "resnet_cifar", "num_classes": num_classes, "in_channels": in_channels,
            "stem": width, "stages": stages, "thop_pool": "functional"}


def forward(x: jax.Array, arch: dict, *, conv: Callable, norm: Callable, depthwise=None,
            dtype=jnp.float32, active: Callable | None = None) -> jax.Array:
    """The network of ``arch`` on NHWC ``x`` inside a flax compact method, with injected
    ``conv`` and ``norm`` (``common_jax.models.family``); every block is a ``Scope`` named
    'stage{s}_block{b}', so layer paths are ``layers``' names. ``active(bn_name)`` (masked
    supernets) gives a layer's active width, which the option-A shortcut needs to place the
    input's active channels as the sliced subnet does."""
    x = nn.relu(norm("stem_bn")(conv(arch["stem"], 3, name="stem_conv")(x)))
    previous = "stem_bn"
    for s, blocks in enumerate(arch["stages"]):
        for b, (mid, out) in enumerate(blocks):
            prefix, stride = f"stage{s + 1}_block{b}/", STAGE_STRIDES[s] if b == 0 else 1
            widths = None if active is None else (active(previous), active(prefix + "bn2"))

            def block(x, prefix=prefix, mid=mid, out=out, stride=stride, widths=widths):
                y = nn.relu(norm(prefix + "bn1")(conv(mid, 3, stride, name=prefix + "conv1")(x)))
                y = norm(prefix + "bn2")(conv(out, 3, name=prefix + "conv2")(y))
                if stride != 1 or x.shape[-1] != out:
                    x = ops.shortcut_option_a(x, out, stride, widths)
                return nn.relu(y + x)
            x = ops.Scope(block, name=prefix[:-1])(x)
            previous = prefix + "bn2"
    return ops.classifier(x, arch["num_classes"], kernel_init=ops.he_normal_fan_in, dtype=dtype)


CONV_INIT = ops.he_normal_fan_in  # kaiming_normal_(fan_in), as the DCFF/HRank code


class ResNetCifar(ops.PlainNetwork):
    """Flax module for an architecture description of this family."""

    forward = staticmethod(forward)
    conv_init = staticmethod(CONV_INIT)


def build(arch: dict, **kwargs) -> ResNetCifar:
    return ResNetCifar(arch=arch, **kwargs)


def width_groups(arch: dict) -> tuple:
    """PSS-Net's width groups (``common_jax.models.family``): each stage's residual width
    (the residual adds tie a stage's block outputs; the stem joins the first stage, whose
    first block adds it unpadded), then every block's inner width."""
    stages = arch["stages"]
    return (*[WidthGroup(f"stage{s + 1}", blocks[0][1]) for s, blocks in enumerate(stages)],
            *[WidthGroup(f"stage{s + 1}_block{b}_mid", mid)
              for s, blocks in enumerate(stages) for b, (mid, _) in enumerate(blocks)])


def with_group_widths(arch: dict, widths, make_divisible) -> dict:
    """``arch`` at one width per ``width_groups`` entry (integers or arrays of many
    subnets); no width is derived."""
    mids = iter(widths[len(arch["stages"]):])
    stages = [[[next(mids), widths[s]] for _ in blocks] for s, blocks in enumerate(arch["stages"])]
    return dict(arch, stem=widths[0], stages=stages)


def layers(arch: dict, image_size: int) -> list[Layer]:
    """Counted layers of the architecture at ``image_size`` x ``image_size`` input."""
    stem = conv_layer("stem_conv", "stem", image_size, arch["in_channels"], arch["stem"], 3)
    out = [stem, bn_layer("stem_bn", "stem", stem.out_hw, arch["stem"])]
    hw, ch = stem.out_hw, arch["stem"]
    for s, blocks in enumerate(arch["stages"]):
        group = f"stage{s + 1}"
        for b, (mid, cout) in enumerate(blocks):
            prefix = f"{group}_block{b}/"
            conv1 = conv_layer(prefix + "conv1", group, hw, ch, mid, 3,
                               STAGE_STRIDES[s] if b == 0 else 1)
            hw = conv1.out_hw
            out += [conv1, bn_layer(prefix + "bn1", group, hw, mid),
                    conv_layer(prefix + "conv2", group, hw, mid, cout, 3),
                    bn_layer(prefix + "bn2", group, hw, cout)]
            ch = cout
    return out + [
        Layer("avgpool", "avgpool", "head", hw, ch, 1, ch,
              pool_rule=arch.get("thop_pool", "functional")),
        Layer("linear", "fc", "head", 1, ch, 1, arch["num_classes"], bias=True)]
