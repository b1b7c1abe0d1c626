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

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from common_jax.models import ops
from common_jax.profile import Layer, bn_layer, conv_layer

STAGE_STRIDES = (1, 2, 2, 2)
RESNET50_BLOCKS = (3, 4, 6, 3)


def full_arch(num_classes: int = 1000, in_channels: int = 3, width: int = 64,
              blocks: Sequence[int] = RESNET50_BLOCKS) -> dict:
    stages = [[[width * 2**s, width * 2**s, 4 * width * 2**s] for _ in range(n)]
              for s, n in enumerate(blocks)]
    return {"family": "resnet_imagenet", "num_classes": num_classes,
            "in_channels": in_channels, "stem": width, "stages": stages}


class Bottleneck(nn.Module):
    widths: Sequence[int]
    stride: int
    project: bool
    conv: Any
    norm: Any

    @nn.compact
    def __call__(self, x):
        c1, c2, c3 = self.widths
        y = nn.relu(self.norm(name="bn1")(self.conv(c1, 1, name="conv1")(x)))
        y = nn.relu(self.norm(name="bn2")(self.conv(c2, 3, self.stride, name="conv2")(y)))
        y = self.norm(name="bn3")(self.conv(c3, 1, name="conv3")(y))
        if self.project:
            x = self.norm(name="downsample_bn")(
                self.conv(c3, 1, self.stride, name="downsample_conv")(x))
        return nn.relu(y + x)


class ResNetImagenet(nn.Module):
    stem: int
    stages: Sequence[Sequence[Sequence[int]]]
    num_classes: int
    conv: Any = nn.Conv
    norm: Any = nn.BatchNorm
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        conv = ops.torch_conv(self.conv, kernel_init=ops.he_normal_fan_out, dtype=self.dtype)
        norm = ops.batch_norm(train, self.dtype, self.norm)
        x = nn.relu(norm(name="stem_bn")(conv(self.stem, 7, 2, name="stem_conv")(x)))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for s, blocks in enumerate(self.stages):
            for b, widths in enumerate(blocks):
                stride = STAGE_STRIDES[s] if b == 0 else 1
                x = Bottleneck(widths, stride, b == 0, conv, norm,
                               name=f"stage{s + 1}_block{b}")(x)
        return ops.classifier(x, self.num_classes, kernel_init=ops.torch_default_kernel,
                              dtype=self.dtype)


def build(arch: dict, **kwargs) -> ResNetImagenet:
    return ResNetImagenet(stem=arch["stem"], stages=arch["stages"],
                          num_classes=arch["num_classes"], **kwargs)


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
