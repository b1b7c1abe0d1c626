"""The PSS-Net trainer (../shared/papers/pssnet.md §5-9).

Reads top to bottom: set up (``supernet_run.setup``) -> restore the train state and the host
state (pools, sampler generator, pending score; ``host_state.py``) or start fresh -> for each
step: draw the middle subnet (``draw.py``), run the compiled three-subnet step (max net +
middle + min net; ``step.py``), record its score (the previous step's score enters its pool
now that this step is dispatched), then log / evaluate the max net / checkpoint / preemption
-> flush the last score, select the kept subnet of every pool (``selection.py``) -> summary.
This module is the ``pssnet`` entry of ``pssnet_dcff/registry.py``.
"""

from __future__ import annotations

import logging

import ml_collections

from common_jax import checkpoint, compilation_cache, data, files, paths, train_state
from common_jax.loop import Loop, write_eval_summary
from pssnet_jax import ladder, report, selection, subnet_export, supernet_run, torch_import
from pssnet_jax.draw import diagnostics, sampled_step
from pssnet_jax.host_state import HostState
from pssnet_jax.precompile import precompile
from pssnet_jax.space import space_from_config
from pssnet_jax.validation import validate  # noqa: F401  (the registry's entry point)

log = logging.getLogger(__name__)
INIT_FROM = "workdir"  # config.init_from names a PSS-Net workdir (registry.validate)

# Keys whose change changes the supernet's parameters or the pools' keys: a resume with
# another value is refused (common_jax.loop.Loop.restore).
STATE_KEYS = files.STATE_KEYS + ("pssnet.resolutions", "pssnet.mult_range", "pssnet.targets",
                                 "pssnet.pool_size", "pssnet.constraints", "pssnet.sampling",
                                 "latency.table", "latency.targets", "latency.num_pools")


def profiled_arch(config: ml_collections.ConfigDict) -> tuple[dict, dict]:
    """The max net's description and the min net's FLOPs (``min_flops``)."""
    space = space_from_config(config, data.dataset_info(config.dataset.name))
    return space.full_arch, {"min_flops": report.costs(space, space.min_subnet())["flops"]}


def train(config: ml_collections.ConfigDict, workdir: str, stop_after: int | None = None):
    """(summary, final state) of PSS-Net training in ``workdir`` (resumes its checkpoints)."""
    with compilation_cache.CompileStats() as compiles:
        pss = supernet_run.setup(config, workdir)
        run, cfg, init = pss.run, config.pssnet, pss.init()
        loop = Loop(run, workdir, compiles, stop_after, STATE_KEYS)
        abstract = train_state.abstract_state(run, init)
        restored = loop.restore(abstract)
        state = restored[0] if restored else train_state.init_state(run, init)
        host = pss.fresh_host_state()
        if restored and restored[1]:
            host.load_json(restored[1])
        elif config.init_from:
            state = initialized_from_run(pss, state, host, abstract, config.init_from)
        costs = pss.costs()
        loop.log_plan(costs)
        if loop.running():
            precompile(pss, state, loop.peek_batch(), cfg.step_mode)
        requests_before = compiles.requests
        max_widths = pss.widths(pss.max_subnet)
        low = (pss.widths(pss.min_subnet), pss.min_subnet.resolution)

        def step_fn(state, batch, subnet):
            return pss.fns.step(state, batch, max_widths, (pss.widths(subnet),
                                subnet.resolution), low, cfg.step_mode)

        while loop.running():
            epoch = run.epoch(loop.step)
            state, metrics, subnet = sampled_step(
                pss.plan, host, step_fn, state, loop.next_batch(), loop.step, epoch,
                run.total_epochs, pss.min_subnet.resolution)
            if loop.after_step(metrics):
                loop.write_scalars(diagnostics(pss.plan, host, metrics, subnet, epoch,
                                               run.total_epochs))
            if loop.eval_due():
                loop.record_eval(state, pss.max_net_eval(state), host.to_json)
            if loop.checkpoint_due():
                loop.save(state, host.to_json())
        stopped = loop.close()
        if stopped:
            return stopped, state
        if not loop.eval_metrics:  # resumed at the very end: evaluate the final state again
            loop.eval_metrics = pss.max_net_eval(state)
        host.flush()
        kept = selection.select_and_report(pss, host, state, workdir)
        after_startup = compiles.requests - requests_before
        log.info("XLA programs compiled or loaded after start-up (training, evaluation, "
                 "selection): %d", after_startup)
        return loop.write_summary(costs, {**kept, "xla_programs_after_startup":
                                          after_startup}), state


def initialized_from_run(pss: supernet_run.SupernetRun, state, host: HostState, abstract,
                         source: str):
    """``state`` with the supernet weights and BN statistics of the newest checkpoint of the
    PSS-Net workdir ``source`` (``config.init_from``: fine-tuning, e.g. of an imported
    supernet), and ``host`` with its pools; step, optimizer and sampling start fresh."""
    try:
        restored, host_json = checkpoint.read_checkpoint(source, abstract)
    except checkpoint.StateMismatch as mismatch:
        raise ValueError(f"config.init_from={source!r}: its checkpoint does not fit this "
                         f"config's supernet ({mismatch.detail})") from None
    method = host_json.get("method") or {}
    if method.get("pools"):
        loaded = pss.fresh_host_state()
        loaded.load_json(method)
        host.pools = loaded.pools
    log.info("initialised the supernet and its pools (%d members) from %s (step %d)",
             sum(len(p) for p in host.pools.values()), source, int(host_json["step"]))
    return dict(state, params=restored["params"], batch_stats=restored["batch_stats"])


def import_published(config: ml_collections.ConfigDict, source: str, workdir: str,
                     directory: str) -> str:
    """Writes ``workdir`` from an official PSS-Net checkpoint (``torch_import.py``): then
    ``--mode=eval``, ``export`` and ``train`` use it as a run of this project."""
    torch_import.import_checkpoint(supernet_run.setup(config, workdir), source, workdir)
    return workdir


def _restored(config, workdir: str, which: str):
    pss = supernet_run.setup(config, workdir)
    state, host_json = checkpoint.read_checkpoint(
        workdir, train_state.abstract_state(pss.run, pss.init()), which)
    host = pss.fresh_host_state()
    if host_json.get("method"):
        host.load_json(host_json["method"])
    return pss, state, host, host_json


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Evaluates the max net of the newest checkpoint and re-runs the selection."""
    pss, state, host, host_json = _restored(config, workdir, "latest")
    metrics = pss.max_net_eval(state)
    host.flush()
    kept = selection.select_and_report(pss, host, state, workdir)
    return write_eval_summary(config, workdir, host_json, metrics, pss.costs(), kept)


def export_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                      directory: str | None = None) -> str:
    """Exports the best kept subnet for ``config.export``'s budget (``subnet_export.py``), or
    with ``config.export.all`` every kept subnet and the budget ladder (``ladder.py``)."""
    if config.export.all:
        return export_ladder(config, workdir, directory)
    pss, state, _, _ = _restored(config, workdir, config.export_from)
    directory = directory or paths.join(workdir, "export")
    if config.export.subnet:
        return subnet_export.export_named(pss, state, config.export.subnet, directory)
    return subnet_export.export_for_budget(pss, state, workdir, directory)


def export_ladder(config: ml_collections.ConfigDict, workdir: str,
                  directory: str | None = None) -> str:
    """Exports every kept subnet with ``ladder.json`` (default ``<workdir>/export``)."""
    pss, state, _, _ = _restored(config, workdir, config.export_from)
    return ladder.export_ladder(pss, state, workdir, directory or paths.join(workdir, "export"))
