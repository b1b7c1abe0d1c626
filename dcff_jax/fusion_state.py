"""DCFF's entry of the train state and what is computed from it (../shared/papers/dcff.md
§2.7-2.11).

``state["fusion"]`` holds the fusion matrices (the ``fusion`` variable collection of the
fused model), the last importance scores (the faithful mode keeps them when new ones are not
finite, as the official code does), the current selection (slot -> filter index), all keyed
like the fusion collection, and the update they were computed for (key ``epoch``: the epoch,
or with ``config.dcff.schedule='progress'`` the index ``step // update_every_steps``). It is
recomputed from the current filter banks before the first step of every epoch (or every
``update_every_steps`` steps), checkpointed with the rest of the state, and not recomputed
when a run resumes between two updates. ``fold`` turns the fused network
into the plain compact model for export.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import traverse_util

from common_jax.plain_step import plain_variables
from dcff_jax import fusion
from dcff_jax.model import FUSION, fuse

HIGHEST = jax.lax.Precision.HIGHEST


def initial(variables: dict) -> dict:
    """``{"fusion": ...}`` of a fresh state: the model's initial matrices, zero scores, the
    identity selection and epoch -1 (nothing computed yet)."""
    matrices = variables[FUSION]
    return {"fusion": {
        "matrix": matrices,
        "score": jax.tree.map(lambda p: jnp.zeros(p.shape[1], jnp.float32), matrices),
        "selection": jax.tree.map(lambda p: jnp.arange(p.shape[0], dtype=jnp.int32),
                                  matrices),
        "epoch": jnp.array(-1, jnp.int32)}}


def fused_variables(state: dict, params) -> dict:
    """What the fused model's ``apply`` takes: params, BN statistics and the matrices."""
    return {**plain_variables(state, params), FUSION: state["fusion"]["matrix"]}


def _bank_kernels(params, matrices):
    """The filter banks of the fused convs, keyed like the fusion collection."""
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({key: flat[key[:-1] + ("kernel",)]
                                         for key in traverse_util.flatten_dict(matrices)})


def update_interval(run, cfg) -> int:
    """Steps between fusion updates: an epoch, or ``cfg.update_every_steps`` ('progress')."""
    return cfg.update_every_steps if cfg.schedule == "progress" else run.steps_per_epoch


def schedule_point(step: int, run, cfg) -> tuple[int, float, int]:
    """(update index, e, E) of the update due at ``step``: T(e) of a schedule of E epochs.
    'epoch': the run's epoch and epochs; 'progress': e = the fraction of the run's steps done
    at the update times ``cfg.paper_epochs``, E = ``cfg.paper_epochs``."""
    if cfg.schedule == "progress":
        index = step // cfg.update_every_steps
        done = index * cfg.update_every_steps / run.total_steps
        return index, done * cfg.paper_epochs, cfg.paper_epochs
    epoch = run.epoch(step)
    return epoch, epoch, run.total_epochs


def updated(state: dict, epoch: float, total_epochs: int, cfg, index: int | None = None):
    """``state`` with the fusion recomputed at the temperature T(epoch) of a schedule of
    ``total_epochs`` (``cfg`` = ``config.dcff``), recorded as update ``index`` (default the
    epoch); unchanged when update ``index`` was already computed (a run resumed between two
    updates keeps the checkpointed matrices)."""
    index = epoch if index is None else index
    old = state["fusion"]
    if int(old["epoch"]) == index:
        return state
    temp, t = fusion.schedule_values(epoch, total_epochs, cfg)
    matrices, scores, selections = fusion.update_all(
        _bank_kernels(state["params"], old["matrix"]), old["score"], old["selection"],
        jnp.asarray(int(old["epoch"]) < 0), temp, t, mode=cfg.mode)
    new = {"matrix": matrices, "score": scores, "selection": selections,
           "epoch": jnp.asarray(index, jnp.int32)}
    new = jax.tree.map(lambda x, like: jax.device_put(x, like.sharding), new, old)
    return dict(state, fusion=new)


def update_diagnostics(old: dict, new: dict, epoch: float, total_epochs: int, cfg) -> dict:
    """TensorBoard scalars of a fusion update: the temperature T(epoch) and how many kept
    slots changed their selected filter (every slot at the first update)."""
    temp, _ = fusion.schedule_values(epoch, total_epochs, cfg)
    before, after = jax.device_get((old["selection"], new["selection"]))
    changed = sum(int((a != b).sum()) for a, b in zip(jax.tree.leaves(before),
                                                       jax.tree.leaves(after)))
    return {"fusion_temperature": float(temp), "fusion_selections_changed": changed}


def fold(params, matrices):
    """Params of the plain compact model: fused kernels ``W F^T`` and biases ``F b``, at
    ``HIGHEST`` precision (an export is folded once; training fuses at the default)."""
    flat = dict(traverse_util.flatten_dict(params))
    for key, matrix in traverse_util.flatten_dict(matrices).items():
        layer = key[:-1]
        flat[layer + ("kernel",)] = fuse(flat[layer + ("kernel",)], matrix, HIGHEST)
        if layer + ("bias",) in flat:
            flat[layer + ("bias",)] = jnp.dot(matrix, flat[layer + ("bias",)],
                                              precision=HIGHEST)
    return traverse_util.unflatten_dict(flat)


def compact_variables(state: dict) -> dict:
    """Variables of the exported compact model (fusion folded into the kernels)."""
    return {"params": fold(state["params"], state["fusion"]["matrix"]),
            "batch_stats": state["batch_stats"]}
