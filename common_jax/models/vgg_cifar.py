"""CIFAR VGG-16 as in the DCFF code (conv+bias, BN, ReLU; five max-pools; Linear(512, 10)).

Architecture description::

    {"family": "vgg_cifar", "num_classes": 10, "in_channels": 3,
     "features": [64, 64, "M", 128, 128, "M", ...]}   # ints are 3x3 convs, "M" a 2x2 max-pool

The features end with an ``AvgPool2d(1)`` over the last (1x1 at 32 px) map, written here as a
global average pool; the classifier is one linear layer with bias.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from common_jax.models import ops
from common_jax.profile import Layer, bn_layer, conv_layer

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
         512, 512, 512, "M")


def full_arch(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> dict:
    features = [v if v == "M" else max(1, int(round(v * width_mult))) for v in VGG16]
    return {"family": "vgg_cifar", "num_classes": num_classes, "in_channels": in_channels,
            "features": features}


class VGGCifar(nn.Module):
    features: Sequence[Any]
    num_classes: int
    conv: Any = nn.Conv
    norm: Any = nn.BatchNorm
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        norm = ops.batch_norm(train, self.dtype, self.norm)
        index = 0
        for value in self.features:
            if value == "M":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
                continue
            fan_in = x.shape[-1] * 9
            x = self.conv(value, (3, 3), padding=ops.torch_padding(3), use_bias=True,
                          kernel_init=ops.torch_default_kernel,
                          bias_init=ops.torch_default_bias(fan_in), dtype=self.dtype,
                          name=f"conv{index}")(x)
            x = nn.relu(norm(name=f"bn{index}")(x))
            index += 1
        return ops.classifier(x, self.num_classes, kernel_init=ops.torch_default_kernel,
                              dtype=self.dtype)


def build(arch: dict, **kwargs) -> VGGCifar:
    return VGGCifar(features=arch["features"], num_classes=arch["num_classes"], **kwargs)


def layers(arch: dict, image_size: int) -> list[Layer]:
    out: list[Layer] = []
    hw, ch, index, block = image_size, arch["in_channels"], 0, 1
    for value in arch["features"]:
        if value == "M":
            hw //= 2
            block += 1
            continue
        conv = conv_layer(f"conv{index}", f"block{block}", hw, ch, value, 3, bias=True)
        out += [conv, bn_layer(f"bn{index}", f"block{block}", hw, value)]
        ch, index = value, index + 1
    if hw < 1:
        raise ValueError(f"VGG input {image_size}x{image_size} is too small for five max-pools")
    return out + [Layer("avgpool", "avgpool", "head", hw, ch, hw, ch, pool_rule="module"),
                  Layer("linear", "fc", "head", 1, ch, 1, arch["num_classes"], bias=True)]
