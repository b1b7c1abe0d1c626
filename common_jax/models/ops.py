"""Building blocks shared by the baseline architectures.

Initializers reproduce the PyTorch ones the original code used; convolutions pad like
PyTorch (``k // 2`` on both sides) so strided layers line up with the reference models.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ModuleDef = Any
Dtype = Any

# kaiming_normal_(mode='fan_in' | 'fan_out', nonlinearity='relu'): untruncated normal.
he_normal_fan_in = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
he_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# PyTorch's default conv/linear weight init, kaiming_uniform_(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_default_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_default_bias(fan_in: int) -> Callable:
    """PyTorch's default bias init U(+-1/sqrt(fan_in)) for a layer with this fan-in."""
    bound = 1.0 / np.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` without dropping more than 10%."""
    min_value = divisor if min_value is None else min_value
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def torch_padding(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Symmetric padding ``k // 2`` as in the PyTorch models (not flax's asymmetric SAME)."""
    pad = kernel // 2
    return ((pad, pad), (pad, pad))


def batch_norm(train: bool, dtype: Dtype, norm: ModuleDef = nn.BatchNorm) -> ModuleDef:
    """BatchNorm with PyTorch's defaults (momentum 0.1 -> flax 0.9, eps 1e-5)."""
    return functools.partial(norm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                             dtype=dtype)


class PlainNetwork(nn.Module):
    """The plain network of a description: a family's ``forward`` with injected conv (PyTorch
    padding, the family's ``conv_init``) and BatchNorm classes (DCFF injects its fused
    conv). A family subclasses it, setting ``forward`` and ``conv_init`` as static methods."""

    arch: dict
    conv: ModuleDef = nn.Conv
    norm: ModuleDef = nn.BatchNorm
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        conv = torch_conv(self.conv, kernel_init=self.conv_init, dtype=self.dtype)
        norm = batch_norm(train, self.dtype, self.norm)
        return self.forward(x, self.arch, conv=conv, norm=named_norm(norm), dtype=self.dtype)


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over the spatial axes of an NHWC tensor."""
    return jnp.mean(x, axis=(1, 2))


def leaf_name(name: str | None) -> str | None:
    """The module name of a layer name: its last '/'-separated part (the parts before it are
    the ``Scope`` modules the family's forward opened around the layer)."""
    return None if name is None else name.rpartition("/")[2]


class Scope(nn.Module):
    """A named flax scope around part of a forward pass (a ResNet block): the layers that
    ``body`` makes get parameter paths 'scope/layer'. Families name layers by those paths
    (as ``layers`` does); the injected factories name each module by ``leaf_name``."""

    body: Callable

    @nn.compact
    def __call__(self, *args):
        return self.body(*args)


def torch_conv(conv: ModuleDef, *, kernel_init: Callable, dtype: Dtype,
               use_bias: bool = False) -> Callable:
    """``make(features, kernel, strides=1, name=None)``: square convs from the (injected)
    ``conv`` class with PyTorch padding, one init and dtype for a whole network; ``name`` is
    the layer's path (``leaf_name``)."""
    def make(features: int, kernel: int, strides: int = 1, name: str | None = None):
        return conv(features, (kernel, kernel), strides=strides, padding=torch_padding(kernel),
                    use_bias=use_bias, kernel_init=kernel_init, dtype=dtype,
                    name=leaf_name(name))
    return make


def named_norm(norm: ModuleDef) -> Callable:
    """``norm(name)`` of a family's forward from a BatchNorm class (``batch_norm``)."""
    return lambda name: norm(name=leaf_name(name))


def classifier(x: jax.Array, num_classes: int, *, kernel_init: Callable, dtype: Dtype,
               torch_bias: bool = True) -> jax.Array:
    """Global average pool, then the linear classifier ``fc`` (bias: PyTorch's default init,
    or zeros with ``torch_bias=False``). Call inside a module's compact method."""
    x = global_avg_pool(x)
    bias_init = torch_default_bias(x.shape[-1]) if torch_bias else nn.initializers.zeros
    return nn.Dense(num_classes, kernel_init=kernel_init, bias_init=bias_init, dtype=dtype,
                    name="fc")(x)


def default_depthwise_impl() -> str:
    """'shifts' on CPU, where grouped convolutions are slow; XLA's grouped conv elsewhere."""
    return "shifts" if jax.default_backend() == "cpu" else "conv"


class DepthwiseConv(nn.Module):
    """Depthwise k x k convolution with PyTorch padding; kernel shape (k, k, 1, C).

    ``impl='shifts'`` computes it as k*k shifted multiply-adds (same result, much faster with
    XLA on CPU); ``'conv'`` uses a grouped convolution; ``'auto'`` picks by backend.
    """

    kernel_size: int = 3
    strides: int = 1
    impl: str = "auto"
    dtype: Dtype | None = None
    kernel_init: Callable = he_normal_fan_out

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels, k, s = x.shape[-1], self.kernel_size, self.strides
        kernel = self.param("kernel", self.kernel_init, (k, k, 1, channels), jnp.float32)
        dtype = self.dtype or x.dtype
        x, kernel = x.astype(dtype), kernel.astype(dtype)
        impl = default_depthwise_impl() if self.impl == "auto" else self.impl
        if impl == "conv":
            return jax.lax.conv_general_dilated(
                x, kernel, window_strides=(s, s), padding=torch_padding(k),
                dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels)
        if impl != "shifts":
            raise ValueError(f"depthwise impl {self.impl!r}: expected 'auto', 'conv' or 'shifts'")
        pad = k // 2
        out_h = (x.shape[1] + 2 * pad - k) // s + 1
        out_w = (x.shape[2] + 2 * pad - k) // s + 1
        padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        out = None
        for i in range(k):
            for j in range(k):
                window = padded[:, i:i + s * (out_h - 1) + 1:s, j:j + s * (out_w - 1) + 1:s, :]
                term = window * kernel[i, j, 0]
                out = term if out is None else out + term
        return out


def shortcut_option_a(x: jax.Array, out_channels: int, stride: int, active=None) -> jax.Array:
    """Parameter-free CIFAR ResNet shortcut: subsample by ``stride`` and zero-pad channels.

    ``(out - in) // 2`` channels go in front and the rest behind, as in the PyTorch
    ``F.pad``; a negative difference crops the same way ``F.pad`` does. In a masked supernet
    ``active`` is (active input width, active output width), possibly traced: ``x`` is zero
    beyond its active prefix, and the result is the sliced subnet's shortcut on the first
    active output channels and zero beyond them (``masked_shortcut_option_a``).
    """
    if stride != 1:  # a strided slice, not indexing: stays a slice with a symbolic batch
        x = jax.lax.slice(x, (0, 0, 0, 0), x.shape, (1, stride, stride, 1))
    if active is not None:
        return masked_shortcut_option_a(x, out_channels, *active)
    diff = out_channels - x.shape[-1]
    if diff == 0:
        return x
    front = diff // 2
    zero = jnp.zeros((), x.dtype)
    return jax.lax.pad(x, zero, ((0, 0, 0), (0, 0, 0), (0, 0, 0), (front, diff - front, 0)))


def masked_shortcut_option_a(x: jax.Array, out_channels: int, active_in, active_out):
    """Option-A channel padding of a masked activation (its first ``active_in`` channels
    active) to ``out_channels``, of which the first ``active_out`` are active: output channel
    j is input channel j - (active_out - active_in) // 2, as the sliced subnet's ``F.pad``
    puts them. One dynamic slice of the input padded by ``out_channels`` zeros on both sides;
    channels from ``active_out`` on are zeroed (a crop would leave input channels there)."""
    front = (active_out - active_in) // 2
    zero = jnp.zeros((), x.dtype)
    padded = jax.lax.pad(x, zero, ((0, 0, 0), (0, 0, 0), (0, 0, 0),
                                   (out_channels, out_channels, 0)))
    start = jnp.asarray(out_channels - front, jnp.int32)
    shifted = jax.lax.dynamic_slice_in_dim(padded, start, out_channels, axis=3)
    keep = (jnp.arange(out_channels) < active_out).astype(x.dtype)
    return shifted * keep


def align_corners_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) bilinear interpolation weights with align_corners=True semantics."""
    if out_size == 1:
        positions = np.zeros(1)
    else:
        positions = np.arange(out_size) * (in_size - 1) / (out_size - 1)
    low = np.minimum(np.floor(positions).astype(int), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    frac = positions - low
    weights = np.zeros((out_size, in_size), np.float64)  # each entry rounds once to x's dtype
    weights[np.arange(out_size), low] += 1 - frac
    weights[np.arange(out_size), high] += frac
    return weights


def resize_align_corners(x: jax.Array, size: int) -> jax.Array:
    """Bilinear resize of NHWC images to ``size`` x ``size`` like PyTorch's
    ``F.interpolate(mode='bilinear', align_corners=True)`` (no antialiasing)."""
    if x.shape[1] == size and x.shape[2] == size:
        return x
    rows = jnp.asarray(align_corners_matrix(x.shape[1], size), x.dtype)
    cols = jnp.asarray(align_corners_matrix(x.shape[2], size), x.dtype)
    x = jnp.einsum("oh,nhwc->nowc", rows, x, precision=jax.lax.Precision.HIGHEST)
    return jnp.einsum("pw,nowc->nopc", cols, x, precision=jax.lax.Precision.HIGHEST)
