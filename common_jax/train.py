"""The baseline trainer: a network trained as it is, with the plain jitted step.

Reads top to bottom: set up the run -> restore the newest checkpoint or initialise -> for each
step: the compiled step, log / evaluate / checkpoint / preemption (``common_jax.loop``) ->
summary. ``train_network`` is also how DCFF's ``scratch`` control trains its compact widths.
This module is the ``baseline`` entry of the method registry (``pssnet_dcff/registry.py``):
``validate``, ``profiled_arch``, ``train``, ``evaluate_checkpoint``, ``export_checkpoint``.
"""

from __future__ import annotations

import logging

import ml_collections

from common_jax import (checkpoint, compilation_cache, data, export, files, models, paths,
                        train_state)
from common_jax import run as run_lib, torch_import
from common_jax.loop import Loop, write_eval_summary
from common_jax.plain_step import (compile_logged, evaluate_split, make_eval_step,
                                   make_train_step, plain_variables)

log = logging.getLogger(__name__)


def validate(config: ml_collections.ConfigDict, need_latency_table: bool = True) -> None:
    """The baseline has no section of its own; ``config_check`` covers every key."""


def arch_of(config: ml_collections.ConfigDict) -> dict:
    """The plain-width description of ``config.model`` for the config's dataset."""
    info = data.dataset_info(config.dataset.name)
    return models.arch_from_config(config.model, info.num_classes, info.channels)


def profiled_arch(config: ml_collections.ConfigDict) -> tuple[dict, dict]:
    """(description of the trained network, extra integer costs) for ``--mode=profile``."""
    return arch_of(config), {}


def build(config: ml_collections.ConfigDict, arch: dict):
    return models.build_model(arch, dtype=config.compute_dtype,
                              depthwise_impl=config.model.depthwise_impl)


def train(config: ml_collections.ConfigDict, workdir: str, stop_after: int | None = None):
    """(summary, final state) of training ``config`` in ``workdir``, resuming from its newest
    checkpoint; ``stop_after`` ends this invocation at that global step with a checkpoint."""
    with compilation_cache.CompileStats() as compiles:
        return train_network(config, arch_of(config), workdir, stop_after, compiles)


def train_network(config, arch: dict, workdir: str, stop_after, compiles,
                  state_keys: tuple = files.STATE_KEYS):
    """Trains the network of ``arch`` (baseline widths or DCFF's compact ones); a resume
    into a config that changed one of ``state_keys`` is refused."""
    run = run_lib.setup(config, arch, workdir)
    model = build(config, arch)
    init = train_state.make_init(run, model)
    loop = Loop(run, workdir, compiles, stop_after, state_keys)
    restored = loop.restore(train_state.abstract_state(run, init))
    if restored:
        state = restored[0]
    else:
        state = train_state.init_state(run, init)
        if config.init_from:
            state = train_state.initialized_from_export(run, state, arch, config.init_from)
    costs = models.model_costs(arch, run.input.image_size)
    loop.log_plan(costs)
    eval_step, step_fn = make_eval_step(run, model), None
    while loop.running():
        batch = loop.next_batch()
        step_fn = step_fn or compile_logged("train step", make_train_step(run, model), state,
                                            batch)
        state, metrics = step_fn(state, batch)
        loop.after_step(metrics)
        if loop.eval_due():
            loop.record_eval(state, evaluate_split(run, eval_step, state))
        if loop.checkpoint_due():
            loop.save(state, {})
    stopped = loop.close()
    if stopped:
        return stopped, state
    if not loop.eval_metrics:  # resumed at the very end: evaluate the final state again
        loop.eval_metrics = evaluate_split(run, eval_step, state)
    return loop.write_summary(costs), state


def import_published(config: ml_collections.ConfigDict, source: str, workdir: str,
                     directory: str) -> str:
    """Exports a published baseline state dict read from ``source`` (widths those of
    ``config.model``; CIFAR ResNets, VGG-16 and GoogLeNet in the official DCFF code's
    layout, ResNet-50 and MobileNetV2 in torchvision's)."""
    return torch_import.export_imported(config, source, arch_of(config), directory,
                                        thop_pool="functional")


def _restored(config, arch: dict, workdir: str, which: str):
    run = run_lib.setup(config, arch, workdir)
    init = train_state.make_init(run, build(config, arch))
    state, host = checkpoint.read_checkpoint(workdir, train_state.abstract_state(run, init),
                                             which)
    return run, state, host


def evaluate_checkpoint_of(config, arch: dict, workdir: str) -> dict:
    """Evaluates the newest checkpoint of the network of ``arch``; writes ``summary.json``."""
    run, state, host = _restored(config, arch, workdir, "latest")
    metrics = evaluate_split(run, make_eval_step(run, build(config, arch)), state)
    return write_eval_summary(config, workdir, host, metrics,
                              models.model_costs(arch, run.input.image_size))


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict:
    return evaluate_checkpoint_of(config, arch_of(config), workdir)


def export_checkpoint_of(config, arch: dict, workdir: str, directory: str | None) -> str:
    """Exports the newest (or, with ``config.export_from='best'``, the best-eval) state of
    the network of ``arch`` as a plain model (default ``<workdir>/export``)."""
    run, state, host = _restored(config, arch, workdir, config.export_from)
    return export.export_trained(directory or paths.join(workdir, "export"), arch,
                                 plain_variables(state, state["params"]), run, host["step"])


def export_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                      directory: str | None = None) -> str:
    return export_checkpoint_of(config, arch_of(config), workdir, directory)
