"""A network family defined outside the package (docs/architecture.md, "adding a network").

A small CNN: a 3x3 stem, a stride-2 3x3 conv into a residual stage of two basic blocks (the
blocks' outputs are added to their inputs, so the stage conv and every block's second conv
share one width), a 1x1 head conv, global average pooling and a linear classifier. Train it
with PSS-Net by naming its import path:

    python launch.py --config=configs/pssnet/embedded.py \\
        --config.model.name=residual_cnn_family:FAMILY ...

and with DCFF by one compression rate per width group (stem, stage, the two blocks' inner
widths, head), e.g. ``--config.dcff.rates=[0.0]+[0.25]+[0.5]*2+[0.25]``.
"""

import types

import flax.linen as nn
import jax.numpy as jnp

from common_jax.models import ops
from common_jax.models.family import WidthGroup
from common_jax.profile import Layer, bn_layer, conv_layer

BLOCKS = 2


def full_arch(*, num_classes, in_channels, width_mult=1.0, small_input=False):
    """The full-width description (``small_input`` has no variant here)."""
    def width(base):
        return ops.make_divisible(base * width_mult)
    return {"family": "residual_cnn", "num_classes": num_classes, "in_channels": in_channels,
            "stem": width(16), "stage": width(32), "mids": [width(32)] * BLOCKS,
            "head": width(64)}


def layers(arch, image_size):
    """Every counted layer by its parameter name (widths may be arrays of many subnets)."""
    stem = conv_layer("stem_conv", "stem", image_size, arch["in_channels"], arch["stem"], 3)
    down = conv_layer("down_conv", "stage", stem.out_hw, arch["stem"], arch["stage"], 3, 2)
    hw = down.out_hw
    out = [stem, bn_layer("stem_bn", "stem", stem.out_hw, arch["stem"]),
           down, bn_layer("down_bn", "stage", hw, arch["stage"])]
    for i, mid in enumerate(arch["mids"]):
        out += [conv_layer(f"block{i}_conv1", "stage", hw, arch["stage"], mid, 3),
                bn_layer(f"block{i}_bn1", "stage", hw, mid),
                conv_layer(f"block{i}_conv2", "stage", hw, mid, arch["stage"], 3),
                bn_layer(f"block{i}_bn2", "stage", hw, arch["stage"])]
    out += [conv_layer("head_conv", "head", hw, arch["stage"], arch["head"], 1),
            bn_layer("head_bn", "head", hw, arch["head"])]
    return out + [Layer("avgpool", "avgpool", "head", hw, arch["head"], 1, arch["head"]),
                  Layer("linear", "fc", "head", 1, arch["head"], 1, arch["num_classes"],
                        bias=True)]


def forward(x, arch, *, conv, norm, depthwise, dtype):
    """The network on NHWC ``x`` with injected ``conv`` and ``norm`` (``depthwise`` unused),
    inside a flax compact method; layer names are those of ``layers``."""
    x = nn.relu(norm("stem_bn")(conv(arch["stem"], 3, name="stem_conv")(x)))
    x = nn.relu(norm("down_bn")(conv(arch["stage"], 3, 2, name="down_conv")(x)))
    for i, mid in enumerate(arch["mids"]):
        y = nn.relu(norm(f"block{i}_bn1")(conv(mid, 3, name=f"block{i}_conv1")(x)))
        y = norm(f"block{i}_bn2")(conv(arch["stage"], 3, name=f"block{i}_conv2")(y))
        x = nn.relu(y + x)
    x = nn.relu(norm("head_bn")(conv(arch["head"], 1, name="head_conv")(x)))
    return ops.classifier(x, arch["num_classes"], kernel_init=ops.he_normal_fan_out,
                          dtype=dtype)


class ResidualCNN(nn.Module):
    """The plain network of a description (what exports load), with injectable conv and
    norm classes (DCFF injects its fused conv)."""

    arch: dict
    dtype: object = jnp.float32
    conv: object = nn.Conv
    norm: object = nn.BatchNorm

    @nn.compact
    def __call__(self, x, train: bool = True):
        conv = ops.torch_conv(self.conv, kernel_init=ops.he_normal_fan_out, dtype=self.dtype)
        norm = ops.batch_norm(train, self.dtype, self.norm)
        return forward(x, self.arch, conv=conv, norm=lambda name: norm(name=name),
                       depthwise=None, dtype=self.dtype)


def build(arch, dtype=jnp.float32, conv=nn.Conv, norm=nn.BatchNorm):
    return ResidualCNN(arch=arch, dtype=dtype, conv=conv, norm=norm)


def width_groups(arch):
    """PSS-Net's multipliers: the stem, the stage (tied by the residual adds), each block's
    inner width and the head."""
    return (WidthGroup("stem", arch["stem"]), WidthGroup("stage", arch["stage"]),
            *[WidthGroup(f"block{i}_mid", mid) for i, mid in enumerate(arch["mids"])],
            WidthGroup("head", arch["head"]))


def with_group_widths(arch, widths, make_divisible):
    """The description at one width per group (no derived widths in this family)."""
    return dict(arch, stem=widths[0], stage=widths[1], mids=list(widths[2:2 + BLOCKS]),
                head=widths[2 + BLOCKS])


FAMILY = types.SimpleNamespace(full_arch=full_arch, layers=layers, forward=forward, build=build,
                               width_groups=width_groups, with_group_widths=with_group_widths)
