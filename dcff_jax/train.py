"""The DCFF trainer (../shared/papers/dcff.md §2.7-2.11): the compact network trained from
scratch with every kept filter a fusion of its layer's filter bank.

Reads top to bottom: set up -> restore or initialise (the state gains ``fusion``,
``dcff_jax/fusion_state.py``) -> for each step: when an epoch starts, recompute the fusion
matrices at T(epoch) (with ``dcff.schedule='progress'``: every ``dcff.update_every_steps``
steps, at T of the training progress); the compiled step; log / evaluate / checkpoint /
preemption -> summary.
Export folds the fusion into the kernels: the plain compact model. The ``scratch`` mode
trains the same compact widths without fusion (the baseline trainer on the compact
description). This module is the ``dcff`` entry of ``pssnet_dcff/registry.py``.
"""

from __future__ import annotations

import ml_collections

from common_jax import (checkpoint, compilation_cache, data, export, files, models, paths,
                        train_state)
from common_jax import run as run_lib, torch_import, train as plain_train
from common_jax.loop import Loop, write_eval_summary
from common_jax.plain_step import (compile_logged, evaluate_split, make_eval_step,
                                   make_train_step)
from dcff_jax import architectures, fusion_state
from dcff_jax.model import build_fused_model
from dcff_jax.validation import validate  # noqa: F401  (the registry's entry point)


# Keys whose change changes the compact widths or the fusion state: a resume with another
# value is refused (common_jax.loop.Loop.restore).
STATE_KEYS = files.STATE_KEYS + ("dcff.rates", "dcff.mode")


def compact(config: ml_collections.ConfigDict) -> tuple[dict, dict]:
    """(compact plain-width description, full bank width of every fused layer)."""
    info = data.dataset_info(config.dataset.name)
    return architectures.compact_arch(config.model.name, config.dcff.rates,
                                      num_classes=info.num_classes, in_channels=info.channels)


def profiled_arch(config: ml_collections.ConfigDict) -> tuple[dict, dict]:
    """The compact model is what gets profiled (and exported)."""
    return compact(config)[0], {}


def fused_setup(config, workdir: str | None = None):
    arch, full_widths = compact(config)
    run = run_lib.setup(config, arch, workdir)
    model = build_fused_model(arch, full_widths, config.compute_dtype)
    init = train_state.make_init(run, model, extra=fusion_state.initial)
    return arch, run, model, init


def train(config: ml_collections.ConfigDict, workdir: str, stop_after: int | None = None):
    """(summary, final state) of DCFF training in ``workdir`` (resumes its checkpoints)."""
    with compilation_cache.CompileStats() as compiles:
        if config.dcff.mode == "scratch":
            return plain_train.train_network(config, compact(config)[0], workdir, stop_after,
                                             compiles, STATE_KEYS)
        arch, run, model, init = fused_setup(config, workdir)
        loop = Loop(run, workdir, compiles, stop_after, STATE_KEYS)
        restored = loop.restore(train_state.abstract_state(run, init))
        state = restored[0] if restored else train_state.init_state(run, init)
        costs = models.model_costs(arch, run.input.image_size)
        loop.log_plan(costs)
        variables = fusion_state.fused_variables
        eval_step, step_fn = make_eval_step(run, model, variables), None
        interval = fusion_state.update_interval(run, config.dcff)
        while loop.running():
            if loop.step % interval == 0 or loop.step == loop.resumed_at:
                index, epoch, total = fusion_state.schedule_point(loop.step, run, config.dcff)
                before = state["fusion"]
                state = fusion_state.updated(state, epoch, total, config.dcff, index)
                if state["fusion"] is not before:
                    loop.write_scalars(fusion_state.update_diagnostics(
                        before, state["fusion"], epoch, total, config.dcff))
            batch = loop.next_batch()
            step_fn = step_fn or compile_logged(
                "train step", make_train_step(run, model, variables), state, batch)
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
    """Exports an official DCFF compact model (``model_best_compact.pt``) read from
    ``source``; its widths must be those of ``config.dcff.rates``."""
    return torch_import.export_imported(config, source, compact(config)[0], directory)


def _restored(config, workdir: str, which: str):
    arch, run, model, init = fused_setup(config, workdir)
    state, host = checkpoint.read_checkpoint(workdir, train_state.abstract_state(run, init),
                                             which)
    return arch, run, model, state, host


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Evaluates the newest checkpoint (the fused network) and writes ``summary.json``."""
    if config.dcff.mode == "scratch":
        return plain_train.evaluate_checkpoint_of(config, compact(config)[0], workdir)
    arch, run, model, state, host = _restored(config, workdir, "latest")
    eval_step = make_eval_step(run, model, fusion_state.fused_variables)
    return write_eval_summary(config, workdir, host, evaluate_split(run, eval_step, state),
                              models.model_costs(arch, run.input.image_size))


def export_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                      directory: str | None = None) -> str:
    """Exports the plain compact model (fusion folded; default ``<workdir>/export``)."""
    if config.dcff.mode == "scratch":
        return plain_train.export_checkpoint_of(config, compact(config)[0], workdir, directory)
    arch, run, _, state, host = _restored(config, workdir, config.export_from)
    return export.export_trained(directory or paths.join(workdir, "export"), arch,
                                 fusion_state.compact_variables(state), run, host["step"])
