"""The DCFF fusion transform (../shared/papers/dcff.md §2.2-2.6, §3, §9), jitted over all layers.

Per fused conv l with filter bank W_l (k, k, m_{l-1}, n_l), once per epoch:

1. D_jk = ||w_j - w_k||_2 between flattened filters (exact-zero diagonal);
2. proxies P = softmax(-T(e) * D) row-wise, with the sigmoid temperature schedule of §2.2;
3. importance s_j = (1/n) sum_k KL(P_j || P_k);
4. keep the m_l = int(n_l (1 - r_l)) filters with the largest scores; their proxy rows form the
   fusion matrix F_l (m_l, n_l), and the forward pass uses the fused filters F_l W_l.

Three modes (``config.dcff.mode``):

* ``faithful`` (default; what produced the published numbers): the official code's float32
  arithmetic. P = softmax(-D / t) with t = 1/T, s = mean_l P log(P / (P + 1e-7)) summed over k.
  From epoch 1 on (T >= 4622) the softmax rows are exactly one-hot, 0 * log 0 makes every score
  NaN, and - as in the official code - a layer's score is replaced only when all its entries
  are finite, so the epoch-0 selection (made at T = 1 on the random init) is kept for the whole
  run and F_l becomes exact one-hot rows: the network trains the selected filters directly.
* ``stable``: the same criterion computed in log space (log P = log_softmax(-T D), no epsilon),
  which never turns NaN, so the selection follows the current weights every epoch (the
  paper's stated intent; at large T it equals ranking by sum_k D_jk, an FPGM-like criterion).
  Output slots stay aligned: a kept filter keeps its slot while it stays selected and a newly
  selected filter takes a slot that a dropped one frees (§9.2), so BN statistics, the next
  layer's input channels and residual adds keep meaning the same channel.
* ``scratch``: no fusion at all; the same compact widths are trained directly (the control
  run §3 recommends). It never calls this module.

The kept filters are ordered by descending score in the first selection (a fixed order, as the
faithful reproduction allows, §9.1).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

MODES = ("faithful", "stable", "scratch")
EPSILON = 1e-7


def temperature(epoch: int, total_epochs: int, t_start: float = 1.0, t_end: float = 1e4,
                k: float = 1.0) -> float:
    """T(e) = A / (1 + exp(-k e)) + Ts - A / 2, A = 2 (Te - Ts)(1 + e^{-kE}) / (1 - e^{-kE})."""
    decay = math.exp(-k * total_epochs)
    a = 2 * (t_end - t_start) * (1 + decay) / (1 - decay)
    return a / (1 + math.exp(-k * epoch)) + t_start - a / 2


def filter_rows(kernel: jax.Array, dtype=jnp.float32) -> jax.Array:
    """(k, k, c_in, n) kernel -> (n, k*k*c_in) rows in ``dtype``, one per filter."""
    return kernel.reshape(-1, kernel.shape[-1]).T.astype(dtype)


def pairwise_distances(rows: jax.Array) -> jax.Array:
    """Euclidean distances between rows, with an exactly zero diagonal."""
    gram = jnp.dot(rows, rows.T, precision=jax.lax.Precision.HIGHEST)
    sq = jnp.diagonal(gram)
    dist = jnp.sqrt(jnp.maximum(sq[:, None] + sq[None, :] - 2 * gram, 0.0))
    return jnp.where(jnp.eye(len(rows), dtype=bool), 0.0, dist)


def faithful_scores(distances: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(P, s) with the official arithmetic: P = softmax(-D / t); s_j = sum_k mean_l
    P_jl log(P_jl / (P_kl + eps)). NaN wherever some P_jl is exactly 0, as in the original."""
    proxies = jax.nn.softmax(-distances / t, axis=1)
    n = proxies.shape[0]
    self_term = jnp.sum(proxies * jnp.log(proxies), axis=1)  # 0 * log 0 = NaN, deliberately
    cross = jnp.log(proxies + EPSILON).sum(axis=0)  # sum_k log(P_kl + eps), per l
    return proxies, self_term - jnp.dot(proxies, cross, precision=jax.lax.Precision.HIGHEST) / n


def stable_scores(distances: jax.Array, temp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(P, s) in log space: s_j = (1/n) sum_k sum_l P_jl (log P_jl - log P_kl); never NaN."""
    log_p = jax.nn.log_softmax(-distances * temp, axis=1)
    proxies = jnp.exp(log_p)
    n = proxies.shape[0]
    self_term = jnp.sum(proxies * log_p, axis=1)
    return proxies, self_term - jnp.dot(proxies, log_p.sum(axis=0),
                                        precision=jax.lax.Precision.HIGHEST) / n


def keep_slots(previous: jax.Array, top: jax.Array, scores: jax.Array) -> jax.Array:
    """Slot assignment for a new top-m set: filters of ``previous`` (m,) still in ``top`` keep
    their slot; freed slots (in slot order) take the newcomers (in descending score order)."""
    previous, scores = jnp.asarray(previous), jnp.asarray(scores)
    n, m = scores.shape[0], previous.shape[0]
    chosen = jnp.zeros(n, bool).at[top].set(True)
    stays = chosen[previous]
    newcomer = chosen & ~jnp.zeros(n, bool).at[previous].set(True)
    newcomers = jnp.argsort(jnp.where(newcomer, -scores, jnp.inf))[:m]  # stable sort
    freed = jnp.argsort(stays)  # freed slots first, each group in slot order
    fill = jnp.arange(m) < jnp.sum(~stays)
    return previous.at[freed].set(jnp.where(fill, newcomers, previous[freed])
                                  .astype(previous.dtype))


def update_layer(kernel, previous_scores, previous_selection, first, temp, t, *, mode: str):
    """One layer's (fusion matrix (m, n), scores (n,), selection (m,)) for this epoch."""
    # faithful: float32 as the official code (its NaN freeze depends on it); stable: at least
    # float32 (float64 kernels under x64 stay float64, for the reference test)
    dtype = jnp.float32 if mode == "faithful" else jnp.promote_types(kernel.dtype, jnp.float32)
    distances = pairwise_distances(filter_rows(kernel, dtype))
    m = previous_selection.shape[0]
    if mode == "faithful":
        proxies, scores = faithful_scores(distances, t)
        scores = jnp.where(first | jnp.all(jnp.isfinite(scores)), scores, previous_scores)
        selection = jax.lax.top_k(scores, m)[1]
    elif mode == "stable":
        proxies, scores = stable_scores(distances, temp)
        top = jax.lax.top_k(scores, m)[1]
        selection = jnp.where(first, top, keep_slots(previous_selection, top, scores))
    else:
        raise ValueError(f"config.dcff.mode={mode!r}: the fusion transform needs 'faithful' or "
                         f"'stable'")
    return proxies[selection], scores, selection.astype(jnp.int32)


@functools.partial(jax.jit, static_argnames="mode")
def update_all(kernels, scores, selections, first, temp, t, mode: str):
    """Fusion matrices, scores and selections of every layer: pytrees with the structure of
    ``kernels``; ``first`` marks a run's first update (epoch 0), ``temp``/``t`` are T and 1/T."""
    out = jax.tree.map(lambda k, s, sel: update_layer(k, s, sel, first, temp, t, mode=mode),
                       kernels, scores, selections)
    is_triple = lambda x: isinstance(x, tuple)  # noqa: E731
    return tuple(jax.tree.map(lambda x: x[i], out, is_leaf=is_triple) for i in range(3))


def schedule_values(epoch: int, total_epochs: int, cfg) -> tuple[np.float32, np.float32]:
    """(T, t = 1/T) as the float32 scalars the jitted update takes."""
    temp = temperature(epoch, total_epochs, cfg.t_start, cfg.t_end, cfg.k)
    return np.float32(temp), np.float32(1.0 / temp)
