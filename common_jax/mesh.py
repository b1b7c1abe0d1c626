"""The 1-D data-parallel device mesh and moving host batches onto it.

Parameters and optimizer state are replicated; batches are split along the batch axis over
all devices of all processes. ``jax.jit`` then inserts the cross-device reductions (losses,
BatchNorm statistics, gradients), so one program serves 1 CPU, 1 GPU or a pod slice.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh() -> Mesh:
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_host_value(tree, mesh: Mesh):
    """A pytree of host values that every process holds identically (a subnet's widths) ->
    replicated ``jax.Array``s, without the cross-process equality check (an all-gather that
    waits for the devices) that ``jax.device_put`` runs on several processes."""
    sharding = replicated(mesh)
    return jax.tree.map(
        lambda value: jax.make_array_from_process_local_data(sharding, np.asarray(value)), tree)


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
    """This process's slice of a global batch -> globally sharded ``jax.Array``s."""
    sharding = batch_sharded(mesh)
    return {key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
            for key, value in local_batch.items()}
