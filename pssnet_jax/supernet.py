"""Masked supernets of any family with width groups: MobileNetV1/V2, the ResNets, user
families (../shared/papers/pssnet.md §2.4, §12; ``common_jax.models.family``).

Every layer is built at the max net's width. A subnet is given as one integer array of
active channel counts, one per BatchNorm layer (``widths_of``), turned into 0/1 channel
masks inside the jitted step, so one compiled function serves every width
of a resolution. The mask zeroes every BatchNorm's output on the inactive channels (folded
into BN's scale and bias; BN alone maps a zero channel to beta), which makes each conv see
exactly the active prefix of its input channels (a CIFAR ResNet's option-A shortcut is
placed by the active widths: ``ops.masked_shortcut_option_a``): the result equals
the sliced subnet (the official code slices ``W[:out, :in]``). Resolution is static: the
input (a crop at the max resolution) is resized inside the model with align-corners bilinear
interpolation, one compiled variant per resolution.

The supernet is the baseline network itself (its family's ``forward``, e.g.
``common_jax.models.mobilenet.forward``, the one place MobileNet's structure is written) with a
masking norm injected; parameter names are the baseline's, so slicing the first channels of
every tensor gives the plain subnet (``slice_variables``, driven by the same layer list).

BatchNorm is shared by all subnets (statistics are recalibrated per subnet for evaluation);
``bn_group_size`` > 0 computes training statistics per group of that many images (ghost BN,
as the original 4-GPU ``DataParallel`` runs did per 256 images), and a ``bn_momentum``
argument overrides the running-average momentum (BN recalibration uses t / (t + 1), a
cumulative average).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from common_jax.losses import at_least_float32
from common_jax import models
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
    # Set inside ``jax.shard_map`` over this mesh axis (the training step): ``x`` is one
    # device's share of the batch and statistics are combined across devices explicitly.
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, mask, train: bool, momentum=None):
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (channels,), jnp.float32)
        xf = at_least_float32(x)
        if train:
            share = x.shape[0]
            groups = share // self.group_size if 0 < self.group_size <= share else 1
            # One group needs no reshape (the reshape alone cost compile and run time).
            grouped = xf.reshape((groups, -1) + x.shape[1:]) if groups > 1 else xf
            axes = (1, 2, 3) if groups > 1 else (0, 1, 2)
            # One pass (E[x] and E[x^2], float32 at least): the two reductions are
            # independent, so with statistics over several devices XLA combines their
            # all-reduces into one per layer instead of two in sequence.
            mean = jnp.mean(grouped, axis=axes, keepdims=True)
            mean_square = jnp.mean(jnp.square(grouped), axis=axes, keepdims=True)
            # devices one group spans inside shard_map: 0 = all (the whole batch), 1 = groups
            # within each device's share
            span = 1
            if self.axis_name and (not self.group_size or self.group_size > share):
                span = group_statistics_span(self.axis_name, self.group_size, share)
                mean, mean_square = group_statistics((mean, mean_square), self.axis_name, span)
            var = jnp.maximum(mean_square - jnp.square(mean), 0.0)
            y = ((grouped - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
            if not self.is_initializing():
                m = self.momentum if momentum is None else momentum
                over_groups = tuple(range(mean.ndim - 1))
                batch_mean = jnp.mean(mean, axis=over_groups)
                batch_var = jnp.mean(var, axis=over_groups)
                if self.axis_name and span:  # the running statistics average every group
                    batch_mean, batch_var = jax.lax.pmean((batch_mean, batch_var),
                                                          self.axis_name)
                ra_mean.value = m * ra_mean.value + (1 - m) * batch_mean
                ra_var.value = m * ra_var.value + (1 - m) * batch_var
        else:
            y = (xf - ra_mean.value) * jax.lax.rsqrt(ra_var.value + self.epsilon)
        return (y * (scale * mask) + bias * mask).astype(self.dtype)


def group_statistics_span(axis_name: str, group_size: int, share: int) -> int:
    """How many devices of ``axis_name`` (``share`` images each) one BN group of
    ``group_size`` images spans; 0 when it spans all of them (``group_size`` 0: the whole
    batch)."""
    devices = jax.lax.axis_size(axis_name)
    span = group_size // share if group_size else devices
    return 0 if span == devices else span


def group_statistics(stats, axis_name: str, span: int):
    """Statistics over one device's share of the batch -> over its BN group of ``span``
    devices (``group_statistics_span``): over the whole batch (0) by ``pmean``; over a
    group of several whole shares by an all-gather of the per-channel statistics and the
    mean over the group's devices (``ghost_bn_groups`` says which groups fit)."""
    if not span:
        return jax.lax.pmean(stats, axis_name)
    group = jax.lax.axis_index(axis_name) // span

    def of_group(gathered):
        per_group = gathered.reshape((-1, span) + gathered.shape[1:])
        return jnp.mean(jnp.take(per_group, group, axis=0), axis=0)
    return jax.tree.map(of_group, jax.lax.all_gather(stats, axis_name))


def ghost_bn_groups(batch: int, devices: int) -> list[int]:
    """The ghost-BN group sizes that fit ``batch`` images sharded over ``devices``: a group
    lies within one device's share or spans whole shares. Any other group makes XLA
    all-gather every BatchNorm's activations (measured in the compiled HLO on 8 CPU
    devices: batch 48 with groups 4, 8 or 16 all-gathers; 1, 2, 3, 6, 12, 24, 48 do not)."""
    share = batch // devices
    return [g for g in range(1, batch + 1)
            if batch % g == 0 and (share % g == 0 or g % share == 0)]


def check_ghost_bn(group: int, batch: int, devices: int) -> None:
    """One-line ValueError for a ``bn_group_size`` (dividing the batch, ``validate``) that
    does not fit the device count (``ghost_bn_groups``; 0 = statistics over the whole batch).
    Called by ``supernet_run.setup``, before any compile (``validation.validate`` runs
    before ``jax.distributed`` is initialised and must not ask for devices)."""
    if group and batch % devices == 0 and group not in ghost_bn_groups(batch, devices):
        raise ValueError(f"config.pssnet.bn_group_size={group} does not fit "
                         f"config.batch_size={batch} on {devices} devices ({batch // devices} "
                         f"images each): groups would straddle devices and every BatchNorm "
                         f"would all-gather its activations; use 0 or one of "
                         f"{ghost_bn_groups(batch, devices)}")


def bn_names(arch: dict) -> list[str]:
    """The BatchNorm layers of a description, in ``layers`` order (a subnet's widths vector
    has one entry per name)."""
    return [layer.name for layer in models.arch_layers(arch, ANY_SIZE) if layer.kind == "bn"]


class MaskedSupernet(nn.Module):
    """The supernet of a max-net description of any family with width groups: the family's
    ``forward`` at full width with a masking norm that applies each BN layer's active
    width (``widths``, from ``widths_of`` a subnet's description)."""

    full_arch: dict
    depthwise_impl: str = "auto"
    bn_group_size: int = 0
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None  # inside shard_map (``MaskedBatchNorm.axis_name``)

    @property
    def num_classes(self) -> int:
        return self.full_arch["num_classes"]

    @nn.compact
    def __call__(self, x, widths, resolution: int, train: bool = True, bn_momentum=None):
        x = ops.resize_align_corners(at_least_float32(x), resolution).astype(self.dtype)
        family = models.arch_family(self.full_arch)
        conv = ops.torch_conv(nn.Conv, dtype=self.dtype,
                              kernel_init=getattr(family, "CONV_INIT", ops.he_normal_fan_out))
        active = active_bn_widths(self.full_arch, widths, resolution)

        def norm(name):
            bn = MaskedBatchNorm(group_size=self.bn_group_size, dtype=self.dtype,
                                 axis_name=self.bn_axis_name, name=ops.leaf_name(name))
            return lambda y: bn(y, channel_mask(y.shape[-1], active[name], self.dtype), train,
                                bn_momentum)

        width_aware = "active" in inspect.signature(family.forward).parameters
        return family.forward(
            x, self.full_arch, conv=conv, norm=norm, dtype=self.dtype,
            depthwise=functools.partial(ops.DepthwiseConv, impl=self.depthwise_impl,
                                        dtype=self.dtype),
            **({"active": active.__getitem__} if width_aware else {}))


def build_supernet(full_arch: dict, dtype=jnp.float32, depthwise_impl: str = "auto",
                   bn_group_size: int = 0) -> MaskedSupernet:
    return MaskedSupernet(full_arch, depthwise_impl, bn_group_size, dtype)


def widths_of(arch: dict):
    """The active widths of a subnet's plain description as the masked step takes them: the
    family's ``active_widths`` encoding where it has one (MobileNet: ``stem``, ``out`` and
    ``expand`` arrays), else one int32 per BatchNorm layer in ``bn_names`` order."""
    family = models.arch_family(arch)
    if hasattr(family, "active_widths"):
        return family.active_widths(arch)
    return np.asarray([layer.out_ch for layer in models.arch_layers(arch, ANY_SIZE)
                       if layer.kind == "bn"], np.int32)


def active_bn_widths(full_arch: dict, widths, resolution: int) -> dict:
    """{BN layer name: active width} of ``widths_of``'s encoding (traced in the step)."""
    family = models.arch_family(full_arch)
    if hasattr(family, "with_active_widths"):
        arch = family.with_active_widths(full_arch, widths)
        return {layer.name: layer.out_ch for layer in family.layers(arch, resolution)
                if layer.kind == "bn"}
    return {name: widths[i] for i, name in enumerate(bn_names(full_arch))}


ANY_SIZE = 224  # slicing needs channel counts only; any input size the network accepts


def slice_variables(variables: dict, subnet_arch: dict) -> dict:
    """The plain subnet's variables: the first channels of every supernet tensor, layer by
    layer of the subnet's description (its family's ``layers``)."""
    wanted, keep = {}, slice(None)
    for layer in models.arch_layers(subnet_arch, ANY_SIZE):  # a name is a '/'-separated path
        name, cin = tuple(layer.name.split("/")), slice(0, layer.in_ch)
        cout = slice(0, layer.out_ch)
        if layer.kind == "conv":  # depthwise kernels are (k, k, 1, C)
            wanted[name + ("kernel",)] = (keep, keep, keep if layer.groups > 1 else cin, cout)
        elif layer.kind == "bn":
            for leaf in ("scale", "bias", "mean", "var"):
                wanted[name + (leaf,)] = (cout,)
        elif layer.kind == "linear":
            wanted[name + ("kernel",)], wanted[name + ("bias",)] = (cin, keep), (keep,)
    out = {}
    for collection in ("params", "batch_stats"):
        flat = traverse_util.flatten_dict(variables[collection])
        out[collection] = traverse_util.unflatten_dict(
            {key: np.asarray(value)[wanted[key]] for key, value in flat.items()})
    return out
