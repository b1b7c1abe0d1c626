"""Evaluation sums: per-batch loss / correct / count sums and their host-side accumulation.

A compiled evaluation function returns sums over the real (masked) examples of a batch;
``accumulate`` fetches them once, after the last batch is dispatched, and adds them up in
float64 on the host, so the result does not depend on how the split was batched or padded.
"""

from __future__ import annotations

from typing import Iterable

import jax
import jax.numpy as jnp

from common_jax.losses import cross_entropy


def batch_sums(logits, batch) -> dict:
    """Sums of loss, correct predictions and real examples of one padded batch."""
    mask = batch["mask"]
    return {"loss": jnp.sum(cross_entropy(logits, batch["label"]) * mask),
            "correct": jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * mask),
            "count": jnp.sum(mask)}


def accumulate(sums: Iterable[dict]) -> dict:
    """{"loss", "accuracy"} over the whole split from per-batch device sums: every batch is
    dispatched first, then all sums are fetched in one transfer (no wait per batch)."""
    totals = {"loss": 0.0, "correct": 0.0, "count": 0.0}
    for batch_sums_ in jax.device_get(list(sums)):
        for key, value in batch_sums_.items():
            totals[key] += float(value)
    count = max(totals["count"], 1.0)
    return {"loss": totals["loss"] / count, "accuracy": totals["correct"] / count}
