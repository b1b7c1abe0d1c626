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
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from common_jax.models import ops
from common_jax.profile import Layer, bn_layer, conv_layer

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


class MobileNet(nn.Module):
    """Both versions; ``version`` is 1 or 2, ``blocks`` the description's block dicts."""

    version: int
    stem: int
    stem_stride: int
    blocks: Sequence[dict]
    num_classes: int
    tail: int = 0
    conv: Any = nn.Conv
    norm: Any = nn.BatchNorm
    depthwise: Any = ops.DepthwiseConv
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        conv = ops.torch_conv(self.conv, kernel_init=ops.he_normal_fan_out, dtype=self.dtype)
        norm = ops.batch_norm(train, self.dtype, self.norm)
        act = nn.relu6
        x = act(norm(name="stem_bn")(conv(self.stem, 3, self.stem_stride, name="stem_conv")(x)))
        for i, block in enumerate(self.blocks):
            name = f"block{i}"
            y = x
            if self.version == 2 and block["expand"]:
                y = act(norm(name=f"{name}_expand_bn")(
                    conv(block["expand"], 1, name=f"{name}_expand_conv")(y)))
            y = self.depthwise(strides=block["stride"], dtype=self.dtype,
                               name=f"{name}_dw_conv")(y)
            y = act(norm(name=f"{name}_dw_bn")(y))
            y = norm(name=f"{name}_pw_bn")(conv(block["out"], 1, name=f"{name}_pw_conv")(y))
            if self.version == 1:
                y = act(y)
            elif block["residual"]:
                y = y + x
            x = y
        if self.version == 2:
            x = act(norm(name="tail_bn")(conv(self.tail, 1, name="tail_conv")(x)))
        return ops.classifier(x, self.num_classes, kernel_init=nn.initializers.normal(0.01),
                              dtype=self.dtype, torch_bias=False)


def build(arch: dict, **kwargs) -> MobileNet:
    version = {"mobilenet_v1": 1, "mobilenet_v2": 2}[arch["family"]]
    return MobileNet(version=version, stem=arch["stem"], stem_stride=arch["stem_stride"],
                     blocks=arch["blocks"], num_classes=arch["num_classes"],
                     tail=arch.get("tail", 0), **kwargs)


def layers(arch: dict, image_size: int) -> list[Layer]:
    version = {"mobilenet_v1": 1, "mobilenet_v2": 2}[arch["family"]]
    stem = conv_layer("stem_conv", "stem", image_size, arch["in_channels"], arch["stem"], 3,
                      arch["stem_stride"])
    out = [stem, bn_layer("stem_bn", "stem", stem.out_hw, arch["stem"])]
    hw, ch = stem.out_hw, arch["stem"]
    for i, block in enumerate(arch["blocks"]):
        name, group = f"block{i}", f"block{i}"
        if version == 2 and block["expand"]:
            out += [conv_layer(f"{name}_expand_conv", group, hw, ch, block["expand"], 1),
                    bn_layer(f"{name}_expand_bn", group, hw, block["expand"])]
            ch = block["expand"]
        dw = conv_layer(f"{name}_dw_conv", group, hw, ch, ch, 3, block["stride"], groups=ch)
        hw = dw.out_hw
        out += [dw, bn_layer(f"{name}_dw_bn", group, hw, ch),
                conv_layer(f"{name}_pw_conv", group, hw, ch, block["out"], 1),
                bn_layer(f"{name}_pw_bn", group, hw, block["out"])]
        ch = block["out"]
    if version == 2:
        out += [conv_layer("tail_conv", "tail", hw, ch, arch["tail"], 1),
                bn_layer("tail_bn", "tail", hw, arch["tail"])]
        ch = arch["tail"]
    return out + [Layer("avgpool", "avgpool", "head", hw, ch, 1, ch, pool_rule="adaptive"),
                  Layer("linear", "fc", "head", 1, ch, 1, arch["num_classes"], bias=True)]
