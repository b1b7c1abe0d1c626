"""Masked MobileNetV1/V2 supernets (../shared/papers/pssnet.md §2.4, §12).

Every layer is built at the max net's width. A subnet is given as integer arrays of active
channel counts (``widths``: ``stem`` scalar, per-block ``out`` and, for V2, ``expand``), turned
into 0/1 channel masks inside the jitted step, so one compiled function serves every width
of a resolution. The mask zeroes every BatchNorm's output on the inactive channels (folded
into BN's scale and bias; BN alone maps a zero channel to beta), which makes each conv see
exactly the active prefix of its input channels: the result equals
the sliced subnet (the official code slices ``W[:out, :in]``). Resolution is static: the
input (a crop at the max resolution) is resized inside the model with align-corners bilinear
interpolation, one compiled variant per resolution.

Parameter names equal the baseline ``MobileNet``'s, so slicing the first channels of every
tensor gives the plain subnet (``slice_variables``).

BatchNorm is shared by all subnets (statistics are recalibrated per subnet for evaluation);
``bn_group_size`` > 0 computes training statistics per group of that many images (ghost BN,
as the original 4-GPU ``DataParallel`` runs did per 256 images), and a ``bn_momentum``
argument overrides the running-average momentum (BN recalibration uses t / (t + 1), a
cumulative average).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from common_jax.models import ops


def channel_mask(channels: int, active, dtype) -> jax.Array:
    return (jnp.arange(channels) < active).astype(dtype)


class MaskedBatchNorm(nn.Module):
    """BatchNorm over NHWC whose output is zero on the channels the mask turns off.

    The mask is folded into the affine parameters (``y * (scale * mask) + bias * mask``)
    instead of multiplying the activation: the same values, but XLA then carries the mask
    only as two per-channel vectors. Multiplying every activation (and its gradient) by the
    mask made the compiled gradient 1.1-1.8x slower to compile and 1.1-1.5x slower to run
    (``benchmarks/compile_probe.py``, benchmarks/RESULTS.md)."""

    momentum: float = 0.9
    epsilon: float = 1e-5
    group_size: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, mask, train: bool, momentum=None):
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (channels,), jnp.float32)
        xf = x.astype(jnp.float32)
        if train:
            groups = x.shape[0] // self.group_size if self.group_size else 1
            # One group needs no reshape (the reshape alone cost compile and run time).
            grouped = xf.reshape((groups, -1) + x.shape[1:]) if groups > 1 else xf
            axes = (1, 2, 3) if groups > 1 else (0, 1, 2)
            mean = jnp.mean(grouped, axis=axes, keepdims=True)
            var = jnp.mean(jnp.square(grouped - mean), axis=axes, keepdims=True)
            y = ((grouped - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
            if not self.is_initializing():
                m = self.momentum if momentum is None else momentum
                over_groups = tuple(range(mean.ndim - 1))
                ra_mean.value = m * ra_mean.value + (1 - m) * jnp.mean(mean, axis=over_groups)
                ra_var.value = m * ra_var.value + (1 - m) * jnp.mean(var, axis=over_groups)
        else:
            y = (xf - ra_mean.value) * jax.lax.rsqrt(ra_var.value + self.epsilon)
        return (y * (scale * mask) + bias * mask).astype(self.dtype)


class MaskedMobileNet(nn.Module):
    """The supernet of a max-net description (``common_jax.models.mobilenet`` format)."""

    version: int
    stem: int
    stem_stride: int
    blocks: Sequence[dict]
    num_classes: int
    tail: int = 0
    depthwise_impl: str = "auto"
    bn_group_size: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, widths: dict, resolution: int, train: bool = True,
                 bn_momentum=None):
        x = ops.resize_align_corners(x.astype(jnp.float32), resolution).astype(self.dtype)
        conv = ops.torch_conv(nn.Conv, kernel_init=ops.he_normal_fan_out, dtype=self.dtype)

        def norm(y, active, name):
            bn = MaskedBatchNorm(group_size=self.bn_group_size, dtype=self.dtype, name=name)
            return bn(y, channel_mask(y.shape[-1], active, self.dtype), train, bn_momentum)

        act = nn.relu6
        x = act(norm(conv(self.stem, 3, self.stem_stride, "stem_conv")(x), widths["stem"],
                     "stem_bn"))
        for i, block in enumerate(self.blocks):
            name, y = f"block{i}", x
            if self.version == 2 and block["expand"]:
                y = conv(block["expand"], 1, name=f"{name}_expand_conv")(y)
                y = act(norm(y, widths["expand"][i], f"{name}_expand_bn"))
            active_mid = widths["expand"][i] if self.version == 2 and block["expand"] else (
                widths["out"][i - 1] if i else widths["stem"])
            y = ops.DepthwiseConv(strides=block["stride"], impl=self.depthwise_impl,
                                  dtype=self.dtype, name=f"{name}_dw_conv")(y)
            y = act(norm(y, active_mid, f"{name}_dw_bn"))
            y = norm(conv(block["out"], 1, name=f"{name}_pw_conv")(y), widths["out"][i],
                     f"{name}_pw_bn")
            if self.version == 1:
                y = act(y)
            elif block["residual"]:
                y = y + x
            x = y
        if self.version == 2:
            x = act(norm(conv(self.tail, 1, name="tail_conv")(x), self.tail, "tail_bn"))
        return ops.classifier(x, self.num_classes, kernel_init=nn.initializers.normal(0.01),
                              dtype=self.dtype, torch_bias=False)


def build_supernet(full_arch: dict, dtype=jnp.float32, depthwise_impl: str = "auto",
                   bn_group_size: int = 0) -> MaskedMobileNet:
    version = {"mobilenet_v1": 1, "mobilenet_v2": 2}[full_arch["family"]]
    return MaskedMobileNet(version, full_arch["stem"], full_arch["stem_stride"],
                           full_arch["blocks"], full_arch["num_classes"],
                           full_arch.get("tail", 0), depthwise_impl, bn_group_size, dtype)


def widths_of(arch: dict) -> dict:
    """The active-channel arrays of a subnet's plain description (for the masked step)."""
    blocks = arch["blocks"]
    return {"stem": np.int32(arch["stem"]),
            "out": np.asarray([b["out"] for b in blocks], np.int32),
            "expand": np.asarray([b.get("expand", 0) for b in blocks], np.int32)}


def slice_variables(variables: dict, subnet_arch: dict) -> dict:
    """The plain subnet's variables: the first channels of every supernet tensor."""
    wanted = {}
    blocks = subnet_arch["blocks"]
    cin = subnet_arch["in_channels"]

    def conv(name, cin_, cout):
        wanted[(name, "kernel")] = (slice(None), slice(None), slice(0, cin_), slice(0, cout))

    def bn(name, channels):
        for leaf in ("scale", "bias", "mean", "var"):
            wanted[(name, leaf)] = (slice(0, channels),)

    conv("stem_conv", cin, subnet_arch["stem"])
    bn("stem_bn", subnet_arch["stem"])
    cin = subnet_arch["stem"]
    for i, block in enumerate(blocks):
        mid = cin
        if block.get("expand"):
            conv(f"block{i}_expand_conv", cin, block["expand"])
            bn(f"block{i}_expand_bn", block["expand"])
            mid = block["expand"]
        wanted[(f"block{i}_dw_conv", "kernel")] = (slice(None), slice(None), slice(None),
                                                    slice(0, mid))
        bn(f"block{i}_dw_bn", mid)
        conv(f"block{i}_pw_conv", mid, block["out"])
        bn(f"block{i}_pw_bn", block["out"])
        cin = block["out"]
    if subnet_arch.get("tail"):
        conv("tail_conv", cin, subnet_arch["tail"])
        bn("tail_bn", subnet_arch["tail"])
        cin = subnet_arch["tail"]
    wanted[("fc", "kernel")] = (slice(0, cin), slice(None))
    wanted[("fc", "bias")] = (slice(None),)
    out = {}
    for collection in ("params", "batch_stats"):
        flat = traverse_util.flatten_dict(variables[collection])
        out[collection] = traverse_util.unflatten_dict(
            {key: np.asarray(value)[wanted[key]] for key, value in flat.items()})
    return out
