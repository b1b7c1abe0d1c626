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

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from common_jax.models import ops
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


class BasicBlock(nn.Module):
    mid: int
    out: int
    stride: int
    conv: Any
    norm: Any

    @nn.compact
    def __call__(self, x):
        y = self.conv(self.mid, 3, self.stride, name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.out, 3, name="conv2")(y)
        y = self.norm(name="bn2")(y)
        if self.stride != 1 or x.shape[-1] != self.out:
            x = ops.shortcut_option_a(x, self.out, self.stride)
        return nn.relu(y + x)


class ResNetCifar(nn.Module):
    """Flax module for an architecture description of this family."""

    stem: int
    stages: Sequence[Sequence[Sequence[int]]]
    num_classes: int
    conv: Any = nn.Conv
    norm: Any = nn.BatchNorm
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        conv = ops.torch_conv(self.conv, kernel_init=ops.he_normal_fan_in, dtype=self.dtype)
        norm = ops.batch_norm(train, self.dtype, self.norm)
        x = conv(self.stem, 3, name="stem_conv")(x)
        x = nn.relu(norm(name="stem_bn")(x))
        for s, blocks in enumerate(self.stages):
            for b, (mid, out) in enumerate(blocks):
                stride = STAGE_STRIDES[s] if b == 0 else 1
                x = BasicBlock(mid, out, stride, conv, norm, name=f"stage{s + 1}_block{b}")(x)
        return ops.classifier(x, self.num_classes, kernel_init=ops.he_normal_fan_in,
                              dtype=self.dtype)


def build(arch: dict, **kwargs) -> ResNetCifar:
    return ResNetCifar(stem=arch["stem"], stages=arch["stages"],
                       num_classes=arch["num_classes"], **kwargs)


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
