"""Losses shared by the trainers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def at_least_float32(x: jax.Array) -> jax.Array:
    """``x`` in float32, or float64 when it is float64 (the reference-step tests run in x64)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy with integer labels, in at least float32."""
    return optax.softmax_cross_entropy_with_integer_labels(at_least_float32(logits), labels)
