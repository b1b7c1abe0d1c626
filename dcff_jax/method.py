"""DCFF plugged into the shared training loop (../shared/papers/dcff.md §2.7-2.11).

The train state gains ``state["fusion"]``: the fusion matrices (the ``fusion`` variable
collection of the fused model), the last importance scores (the faithful mode keeps them
when new ones are not finite, as the official code does) and the current selection (slot ->
filter index), all keyed like the fusion collection, plus the epoch they were computed for.
They are recomputed before the first step of every epoch from the current filter banks, are
checkpointed with the rest of the state, and are not recomputed when a run resumes mid-epoch.
Export folds the fusion into the kernels, giving the plain compact model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import traverse_util

from common_jax import data, models
from common_jax.train import Method, default_variables
from dcff_jax import architectures, fusion
from dcff_jax.model import FUSION, build_fused_model, fuse
from dcff_jax.rates import RateStringError


def dcff_section(rates: str, mode: str = "faithful") -> ml_collections.ConfigDict:
    """``config.dcff``: the rate string, the mode and the temperature schedule (§2.2)."""
    return ml_collections.ConfigDict({"rates": rates, "mode": mode, "t_start": 1.0,
                                      "t_end": 1e4, "k": 1.0})


def validate(config: ml_collections.ConfigDict) -> None:
    """One-line ValueErrors for a bad ``config.dcff`` (before anything is compiled)."""
    if "dcff" not in config:
        raise ValueError("config.method='dcff' needs a config.dcff section (see "
                         "configs/dcff/*.py)")
    if config.dcff.mode not in fusion.MODES:
        raise ValueError(f"config.dcff.mode={config.dcff.mode!r}: expected one of "
                         f"{list(fusion.MODES)}")
    if config.model.name not in architectures.DCFF_MODELS:
        raise ValueError(f"config.model.name={config.model.name!r} has no DCFF architecture; "
                         f"expected one of {list(architectures.DCFF_MODELS)}")
    if config.model.width_mult != 1.0:
        raise ValueError(f"config.model.width_mult={config.model.width_mult}: DCFF widths come "
                         f"from config.dcff.rates; use 1.0")
    if not 0 < config.dcff.t_start < config.dcff.t_end or config.dcff.k <= 0:
        raise ValueError(f"config.dcff: need 0 < t_start < t_end and k > 0, got t_start="
                         f"{config.dcff.t_start}, t_end={config.dcff.t_end}, k={config.dcff.k}")
    try:
        architectures.compact_arch(config.model.name, config.dcff.rates, num_classes=10,
                                   in_channels=3)
    except RateStringError as e:
        raise ValueError(f"config.dcff.rates: {e}") from None


def _bank_kernels(params, matrices):
    """The filter banks of the fused convs, keyed like the fusion collection."""
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({key: flat[key[:-1] + ("kernel",)]
                                         for key in traverse_util.flatten_dict(matrices)})


def fold(params, matrices):
    """Params of the plain compact model: fused kernels ``W F^T`` and biases ``F b``."""
    flat = dict(traverse_util.flatten_dict(params))
    for key, matrix in traverse_util.flatten_dict(matrices).items():
        layer = key[:-1]
        flat[layer + ("kernel",)] = fuse(flat[layer + ("kernel",)], matrix)
        if layer + ("bias",) in flat:
            flat[layer + ("bias",)] = matrix @ flat[layer + ("bias",)]
    return traverse_util.unflatten_dict(flat)


def dcff_method(config: ml_collections.ConfigDict, info: data.DatasetInfo) -> Method:
    """The Method for ``config.dcff``; ``scratch`` trains the compact widths directly."""
    cfg = config.dcff
    arch, full_widths = architectures.compact_arch(
        config.model.name, cfg.rates, num_classes=info.num_classes, in_channels=info.channels)
    if cfg.mode == "scratch":
        return Method(arch, models.build_model(arch, dtype=config.compute_dtype))

    def extra_state(variables):
        matrices = variables[FUSION]
        return {"fusion": {
            "matrix": matrices,
            "score": jax.tree.map(lambda p: jnp.zeros(p.shape[1], jnp.float32), matrices),
            "selection": jax.tree.map(lambda p: jnp.arange(p.shape[0], dtype=jnp.int32),
                                      matrices),
            "epoch": jnp.array(-1, jnp.int32)}}

    def variables(state, params):
        return {**default_variables(state, params), FUSION: state["fusion"]["matrix"]}

    def before_epoch(state, epoch, total_epochs):
        old = state["fusion"]
        if int(old["epoch"]) == epoch:  # resumed mid-epoch: keep the checkpointed matrices
            return state
        temp, t = fusion.schedule_values(epoch, total_epochs, cfg)
        matrices, scores, selections = fusion.update_all(
            _bank_kernels(state["params"], old["matrix"]), old["score"], old["selection"],
            jnp.asarray(int(old["epoch"]) < 0), temp, t, mode=cfg.mode)
        new = {"matrix": matrices, "score": scores, "selection": selections,
               "epoch": jnp.asarray(epoch, jnp.int32)}
        new = jax.tree.map(lambda x, like: jax.device_put(x, like.sharding), new, old)
        return dict(state, fusion=new)

    def export_variables(state):
        return {"params": fold(state["params"], state["fusion"]["matrix"]),
                "batch_stats": state["batch_stats"]}

    return Method(arch, build_fused_model(arch, full_widths, config.compute_dtype),
                  extra_state=extra_state, variables=variables, before_epoch=before_epoch,
                  export_variables=export_variables)
