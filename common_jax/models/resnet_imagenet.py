"""ImageNet ResNet-50 (bottleneck v1.5: stride on the 3x3 conv), torchvision layout.

Architecture description::

    {"family": "resnet_imagenet", "num_classes": 1000, "in_channels": 3, "stem": 64,
     "stages": [[[c1, c2, c3], ...] x blocks] x 4}

The first block of every stage has a 1x1 projection shortcut (conv + BN) to its ``c3``
width with the stage stride (1, 2, 2, 2); every block of a stage has the same ``c3``.
Stem: 7x7/2 conv, BN, ReLU, 3x3/2 max-pool. Head: ``AvgPool2d(7)`` (global here) and a
linear classifier with bias.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from common_jax.models import ops
from common_jax.models.family import WidthGroup
from common_jax.profile import Layer, bn_layer, conv_layer

STAGE_STRIDES = (1, 2, 2, 2)
RESNET50_BLOCKS = (3, 4, 6, 3)


def full_arch(num_classes: int = 1000, in_channels: int = 3, width: int = 64,
              blocks: Sequence[int] = RESNET50_BLOCKS) -> dict:
    stages = [[[width * 2**s, width * 2**s, 4 * width * 2**s] for _ in range(n)]
              for s, n in enumerate(blocks)]
    return {"family": "resnet_imagenet", "num_classes": num_classes,
            "in_channels": in_channels, "stem": width, "stages": stages}


def forward(x: jax.Array, arch: dict, *, conv: Callable, norm: Callable, depthwise=None,
            dtype=jnp.float32) -> jax.Array:
    """The network of ``arch`` on NHWC ``x`` inside a flax compact method, with injected
    ``conv`` and ``norm`` (``common_jax.models.family``); every block is a ``Scope`` named
    'stage{s}_block{b}', so layer paths are ``layers``' names."""
    x = nn.relu(norm("stem_bn")(conv(arch["stem"], 7, 2, name="stem_conv")(x)))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for s, blocks in enumerate(arch["stages"]):
        for b, (c1, c2, c3) in enumerate(blocks):
            prefix, stride = f"stage{s + 1}_block{b}/", STAGE_STRIDES[s] if b == 0 else 1

            def block(x, prefix=prefix, c1=c1, c2=c2, c3=c3, stride=stride, project=b == 0):
                y = nn.relu(norm(prefix + "bn1")(conv(c1, 1, name=prefix + "conv1")(x)))
                y = nn.relu(norm(prefix + "bn2")(conv(c2, 3, stride, name=prefix + "conv2")(y)))
                y = norm(prefix + "bn3")(conv(c3, 1, name=prefix + "conv3")(y))
                if project:
                    x = norm(prefix + "downsample_bn")(
                        conv(c3, 1, stride, name=prefix + "downsample_conv")(x))
                return nn.relu(y + x)
            x = ops.Scope(block, name=prefix[:-1])(x)
    return ops.classifier(x, arch["num_classes"], kernel_init=ops.torch_default_kernel,
                          dtype=dtype)


class ResNetImagenet(ops.PlainNetwork):
    """Flax module for an architecture description of this family."""

    forward = staticmethod(forward)
    conv_init = staticmethod(ops.he_normal_fan_out)


def build(arch: dict, **kwargs) -> ResNetImagenet:
    return ResNetImagenet(arch=arch, **kwargs)


def width_groups(arch: dict) -> tuple:
    """PSS-Net's width groups (``common_jax.models.family``), as US-Nets / Once-for-All vary
    ResNet-50: the stem, each stage's output width (its blocks' ``c3`` and the projection,
    tied by the residual adds), then every block's bottleneck width (``c1`` = ``c2``)."""
    stages = arch["stages"]
    return (WidthGroup("stem", arch["stem"]),
            *[WidthGroup(f"stage{s + 1}", blocks[0][2]) for s, blocks in enumerate(stages)],
            *[WidthGroup(f"stage{s + 1}_block{b}_mid", c1)
              for s, blocks in enumerate(stages) for b, (c1, _, _) in enumerate(blocks)])


def with_group_widths(arch: dict, widths, make_divisible) -> dict:
    """``arch`` at one width per ``width_groups`` entry (integers or arrays of many
    subnets); a block's ``c2`` equals its ``c1``."""
    mids = iter(widths[1 + len(arch["stages"]):])
    stages = []
    for s, blocks in enumerate(arch["stages"]):
        stage = []
        for _ in blocks:
            mid = next(mids)
            stage.append([mid, mid, widths[1 + s]])
        stages.append(stage)
    return dict(arch, stem=widths[0], stages=stages)


def layers(arch: dict, image_size: int) -> list[Layer]:
    stem = conv_layer("stem_conv", "stem", image_size, arch["in_channels"], arch["stem"], 7, 2)
    out = [stem, bn_layer("stem_bn", "stem", stem.out_hw, arch["stem"])]
    hw, ch = (stem.out_hw + 2 - 3) // 2 + 1, arch["stem"]
    for s, blocks in enumerate(arch["stages"]):
        group = f"stage{s + 1}"
        for b, (c1, c2, c3) in enumerate(blocks):
            prefix, stride = f"{group}_block{b}/", STAGE_STRIDES[s] if b == 0 else 1
            conv2 = conv_layer(prefix + "conv2", group, hw, c1, c2, 3, stride)
            out += [conv_layer(prefix + "conv1", group, hw, ch, c1, 1),
                    bn_layer(prefix + "bn1", group, hw, c1),
                    conv2, bn_layer(prefix + "bn2", group, conv2.out_hw, c2),
                    conv_layer(prefix + "conv3", group, conv2.out_hw, c2, c3, 1),
                    bn_layer(prefix + "bn3", group, conv2.out_hw, c3)]
            if b == 0:
                out += [conv_layer(prefix + "downsample_conv", group, hw, ch, c3, 1, stride),
                        bn_layer(prefix + "downsample_bn", group, conv2.out_hw, c3)]
            hw, ch = conv2.out_hw, c3
    return out + [Layer("avgpool", "avgpool", "head", hw, ch, 1, ch, pool_rule="module"),
                  Layer("linear", "fc", "head", 1, ch, 1, arch["num_classes"], bias=True)]
