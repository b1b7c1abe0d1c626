"""CIFAR GoogLeNet as in the DCFF/HRank code (the 5x5 branch is two 3x3 convs).

Architecture description::

    {"family": "googlenet_cifar", "num_classes": 10, "in_channels": 3, "pre": 192,
     "inceptions": [[b1, b2_1x1, b2_3x3, b3_1x1, b3_3x3a, b3_3x3b, b4_1x1], ...]}  # 9 entries

Inceptions a3, b3 | max-pool | a4..e4 | max-pool | a5, b5, then ``AvgPool2d(8)`` and a linear
classifier. Branch outputs are concatenated in the order b1, b2, b3, b4. Every conv has a
bias and is followed by BN and ReLU.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from common_jax.models import ops
from common_jax.profile import Layer, bn_layer, conv_layer

INCEPTION_NAMES = ("a3", "b3", "a4", "b4", "c4", "d4", "e4", "a5", "b5")
POOL_AFTER = ("b3", "e4")  # 3x3 stride-2 max-pools, padding 1
BRANCH_CONVS = ("b1", "b2_1x1", "b2_3x3", "b3_1x1", "b3_3x3a", "b3_3x3b", "b4_1x1")
BRANCH_KERNELS = (1, 1, 3, 1, 3, 3, 1)
# (b1, b2 reduce, b2, b3 reduce, b3 (both 3x3), b4) per inception, as in the original.
FULL_WIDTHS = ((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64),
               (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64),
               (128, 128, 256, 24, 64, 64), (112, 144, 288, 32, 64, 64),
               (256, 160, 320, 32, 128, 128), (256, 160, 320, 32, 128, 128),
               (384, 192, 384, 48, 128, 128))


def full_arch(num_classes: int = 10, in_channels: int = 3) -> dict:
    inceptions = [[b1, r2, b2, r3, b3, b3, b4] for b1, r2, b2, r3, b3, b4 in FULL_WIDTHS]
    return {"family": "googlenet_cifar", "num_classes": num_classes,
            "in_channels": in_channels, "pre": 192, "inceptions": inceptions}


def conv_bn_relu(x, features: int, kernel: int, name: str, conv, norm, dtype):
    """Conv (with bias, PyTorch default init) -> BN -> ReLU, params under ``name_conv/_bn``."""
    fan_in = x.shape[-1] * kernel * kernel
    x = conv(features, (kernel, kernel), padding=ops.torch_padding(kernel), use_bias=True,
             kernel_init=ops.torch_default_kernel, bias_init=ops.torch_default_bias(fan_in),
             dtype=dtype, name=f"{name}_conv")(x)
    return nn.relu(norm(name=f"{name}_bn")(x))


class Inception(nn.Module):
    widths: Sequence[int]
    conv: Any
    norm: Any
    dtype: Any

    @nn.compact
    def __call__(self, x):
        b1, r2, b2, r3, b3a, b3b, b4 = self.widths
        unit = lambda y, features, kernel, name: conv_bn_relu(  # noqa: E731
            y, features, kernel, name, self.conv, self.norm, self.dtype)
        y1 = unit(x, b1, 1, "b1")
        y2 = unit(unit(x, r2, 1, "b2_1x1"), b2, 3, "b2_3x3")
        y3 = unit(unit(unit(x, r3, 1, "b3_1x1"), b3a, 3, "b3_3x3a"), b3b, 3, "b3_3x3b")
        pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        y4 = unit(pooled, b4, 1, "b4_1x1")
        return jnp.concatenate([y1, y2, y3, y4], axis=-1)


class GoogLeNetCifar(nn.Module):
    pre: int
    inceptions: Sequence[Sequence[int]]
    num_classes: int
    conv: Any = nn.Conv
    norm: Any = nn.BatchNorm
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        norm = ops.batch_norm(train, self.dtype, self.norm)
        x = conv_bn_relu(x, self.pre, 3, "pre", self.conv, norm, self.dtype)
        for name, widths in zip(INCEPTION_NAMES, self.inceptions):
            x = Inception(widths, self.conv, norm, self.dtype, name=name)(x)
            if name in POOL_AFTER:
                x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        return ops.classifier(x, self.num_classes, kernel_init=ops.torch_default_kernel,
                              dtype=self.dtype)


def build(arch: dict, **kwargs) -> GoogLeNetCifar:
    return GoogLeNetCifar(pre=arch["pre"], inceptions=arch["inceptions"],
                          num_classes=arch["num_classes"], **kwargs)


def layers(arch: dict, image_size: int) -> list[Layer]:
    pre = conv_layer("pre_conv", "pre", image_size, arch["in_channels"], arch["pre"], 3,
                     bias=True)
    out = [pre, bn_layer("pre_bn", "pre", pre.out_hw, arch["pre"])]
    hw, ch = pre.out_hw, arch["pre"]
    for name, widths in zip(INCEPTION_NAMES, arch["inceptions"]):
        inputs = {"b1": ch, "b2_1x1": ch, "b2_3x3": widths[1], "b3_1x1": ch,
                  "b3_3x3a": widths[3], "b3_3x3b": widths[4], "b4_1x1": ch}
        for conv, kernel, width in zip(BRANCH_CONVS, BRANCH_KERNELS, widths):
            out += [conv_layer(f"{name}/{conv}_conv", name, hw, inputs[conv], width, kernel,
                               bias=True),
                    bn_layer(f"{name}/{conv}_bn", name, hw, width)]
        ch = widths[0] + widths[2] + widths[5] + widths[6]
        if name in POOL_AFTER:
            hw = (hw + 2 - 3) // 2 + 1
    return out + [Layer("avgpool", "avgpool", "head", hw, ch, 1, ch, pool_rule="module"),
                  Layer("linear", "fc", "head", 1, ch, 1, arch["num_classes"], bias=True)]
