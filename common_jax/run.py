"""What a config resolves to before anything is compiled: data, schedule, optimizer, mesh.

``setup(config, arch)`` checks everything that needs the device count or the dataset size
(one-line ``ValueError`` naming the bad value) and builds the pieces every trainer uses.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import ml_collections
import optax

from common_jax import compilation_cache, data, mesh as mesh_lib, models, optim


@dataclasses.dataclass
class Run:
    """The input pipeline, step counts, learning-rate schedule, optimizer and device mesh."""

    config: ml_collections.ConfigDict
    input: data.Input
    steps_per_epoch: int
    total_steps: int
    schedule: Callable
    tx: optax.GradientTransformation
    mesh: Any

    @property
    def total_epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)

    def epoch(self, step: int) -> int:
        return step // self.steps_per_epoch

    def normalize(self, images, dtype):
        return data.normalize(images, self.input.info.mean, self.input.info.std, dtype)


def setup(config: ml_collections.ConfigDict, arch: dict, workdir: str | None = None) -> Run:
    """The Run of ``config`` training the network described by ``arch`` (in ``workdir``: it
    places the default compilation cache of a multi-process run); raises ValueError with a
    one-line message naming the bad value for anything that cannot run."""
    eval_batch = config.eval_batch_size or config.batch_size
    for key, value in (("batch_size", config.batch_size), ("eval_batch_size", eval_batch)):
        if value % jax.device_count():
            raise ValueError(f"config.{key}={value} is not divisible by the "
                             f"{jax.device_count()} devices; use a multiple of "
                             f"{jax.device_count()}")
    models.arch_layers(arch, data.image_size(config.dataset))  # size errors surface here
    compilation_cache.enable(config.compilation_cache_dir, workdir)
    inputs = data.make_input(config.dataset, global_batch=config.batch_size,
                             eval_batch=eval_batch, seed=config.seed,
                             process_index=jax.process_index(),
                             process_count=jax.process_count())
    steps_per_epoch = inputs.num_train // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"config.batch_size={config.batch_size} is larger than the "
                         f"{inputs.num_train} training examples of {config.dataset.name!r}")
    total_steps = config.num_train_steps or config.num_epochs * steps_per_epoch
    schedule = optim.learning_rate_schedule(config.optimizer, steps_per_epoch, total_steps)
    return Run(config, inputs, steps_per_epoch, total_steps, schedule,
               optim.sgd(config.optimizer, schedule), mesh_lib.data_mesh())
