"""The fused DCFF network: the baseline architecture at compact widths with fused convs.

``FusedConv`` drops into the baselines' injected ``conv`` seam. For a layer listed in
``full_widths`` (flax path -> n_l) it owns the over-complete filter bank W_l of shape
(k, k, m_{l-1}, n_l) (plus an n_l bias where the conv has one) and convolves with the fused
filters ``W_l F_l^T`` (and bias ``F_l b_l``), where the fusion matrix F_l (m_l, n_l) is a
non-trainable variable in the ``fusion`` collection, recomputed once per epoch (§2.6-2.8).
Gradients flow through the product into every filter of the bank. Any other layer (ResNet-50's
downsample convs) is an ordinary conv at compact width. Parameter names equal nn.Conv's, so
folding the fusion into the kernels gives the plain compact model's variables.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from common_jax import models

FUSION = "fusion"


def fuse(kernel: jax.Array, matrix: jax.Array, precision=None) -> jax.Array:
    """(k, k, c_in, n) bank and (m, n) fusion matrix -> (k, k, c_in, m) fused kernel. Training
    uses the default precision (the product feeds a conv in the compute dtype; ``HIGHEST``
    would run true float32 on GPUs and 6 bf16 passes on TPUs inside every step); folding for
    export passes ``jax.lax.Precision.HIGHEST``."""
    return jnp.einsum("hwin,mn->hwim", kernel, matrix, precision=precision)


class FusedConv(nn.Module):
    """nn.Conv-compatible conv whose output filters are fusions of a larger bank."""

    features: int
    kernel_size: tuple
    strides: Any = 1
    padding: Any = "SAME"
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros
    dtype: Any = None
    full_widths: Mapping[str, int] = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        bank = (self.full_widths or {}).get("/".join(self.path))
        width = bank or self.features
        kh, kw = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], width),
                            jnp.float32)
        bias = self.param("bias", self.bias_init, (width,), jnp.float32) if self.use_bias else None
        if bank is not None:
            matrix = self.variable(FUSION, "P",
                                   lambda: jnp.eye(bank, dtype=jnp.float32)[:self.features]).value
            kernel = fuse(kernel, matrix)
            bias = None if bias is None else matrix @ bias
        dtype = self.dtype or x.dtype
        strides = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides)
        y = jax.lax.conv_general_dilated(x.astype(dtype), kernel.astype(dtype), strides,
                                         self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y if bias is None else y + bias.astype(dtype)


def build_fused_model(arch: dict, full_widths: Mapping[str, int], dtype: str = "float32"):
    """The compact network of ``arch`` with the convs in ``full_widths`` fused."""
    return models.build_model(arch, dtype=dtype,
                              conv=lambda *a, **kw: FusedConv(*a, full_widths=full_widths, **kw))
