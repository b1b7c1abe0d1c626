"""The train state: a plain dict ``{"step", "params", "batch_stats", "opt_state", "rng",
...}`` created already replicated over the mesh; a method adds its own entries (DCFF's
``fusion``) through ``extra``, so they are sharded and checkpointed like the rest.
"""

from __future__ import annotations

import json
import logging
from typing import Callable

import jax
import jax.numpy as jnp

from common_jax import export, mesh as mesh_lib
from common_jax.run import Run

log = logging.getLogger(__name__)


def seed_keys(seed: int) -> tuple:
    """(init key, train key) of a run's seed: the params' initialisation and the state's
    ``rng`` (an imported state takes the same train key as a fresh run)."""
    init_key, train_key = jax.random.split(jax.random.key(seed))
    return init_key, train_key


def make_init(run: Run, model, init_args: tuple = (),
              extra: Callable[[dict], dict] = lambda variables: {}) -> Callable:
    """init(seed) -> train state of ``model`` (``init_args`` follow the images in
    ``model.init``; ``extra(variables)`` gives method entries of the state)."""
    size, channels = run.input.image_size, run.input.info.channels

    def init(seed):
        init_key, train_key = seed_keys(seed)
        variables = model.init(init_key, jnp.zeros((1, size, size, channels)), *init_args,
                               train=False)
        return {"step": jnp.zeros((), jnp.int32), "params": variables["params"],
                "batch_stats": variables.get("batch_stats", {}),
                "opt_state": run.tx.init(variables["params"]),
                "rng": jax.random.key_data(train_key), **extra(variables)}

    return init


def init_state(run: Run, init: Callable):
    """A fresh train state, created directly with replicated shardings."""
    replicated = mesh_lib.replicated(run.mesh)
    return jax.jit(init, static_argnums=0, out_shardings=replicated)(run.config.seed)


def abstract_state(run: Run, init: Callable):
    """Shapes, dtypes and shardings of the train state, without computing it."""
    replicated = mesh_lib.replicated(run.mesh)
    shapes = jax.eval_shape(init, run.config.seed)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                        shapes)


def initialized_from_export(run: Run, state: dict, arch: dict, directory: str) -> dict:
    """``state`` with the params and BN statistics of an exported model of the same
    architecture ``arch`` (fine-tuning a pruned or pre-trained model); the optimizer starts
    fresh."""
    _, variables, meta = export.load_exported(directory)
    if json.dumps(meta["arch"], sort_keys=True) != json.dumps(arch, sort_keys=True):
        raise ValueError(f"config.init_from={directory!r}: its architecture differs from the "
                         f"config's model ({meta['arch'].get('family')} vs "
                         f"{arch.get('family')}, or other widths)")
    replicated = mesh_lib.replicated(run.mesh)
    loaded = {key: jax.device_put(jax.tree.map(jnp.asarray, variables[key]), replicated)
              for key in ("params", "batch_stats")}
    log.info("initialised params and BN statistics from %s", directory)
    return dict(state, **loaded)
