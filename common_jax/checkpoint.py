"""Orbax checkpoints of the train state plus JSON host state, with automatic resume.

A checkpoint directory ``workdir/checkpoints/<step>/`` holds two items: ``state`` (step,
params, BN statistics, optimizer state, RNG key data) and ``host`` (JSON: data position,
the unflushed training-metric window, and whatever a method registers, e.g. PSS-Net pools).
Orbax writes each checkpoint into a temporary directory and renames it only when complete,
so a crash during a save leaves nothing that is later taken as a valid checkpoint; older
checkpoints are deleted only after a newer one is complete (``keep_checkpoints``).
"""

from __future__ import annotations

import json
import logging
import time

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as preservation

from common_jax import paths

log = logging.getLogger(__name__)

ITEMS = ("state", "host")
CHECKPOINTS = "checkpoints"


def checkpoint_dir(workdir: str) -> str:
    return paths.join(paths.absolute(workdir), CHECKPOINTS)


def manager(workdir: str, keep: int = 3, async_save: bool = True, read_only: bool = False,
            keep_best: bool = False) -> ocp.CheckpointManager:
    """The manager of ``<workdir>/checkpoints/``: keeps the newest ``keep`` checkpoints and,
    with ``keep_best``, the one saved with the highest ``eval_accuracy`` metric (orbax
    preservation policies; only checkpoints of a new best eval carry that metric)."""
    policy = preservation.LatestN(n=keep)
    if keep_best:
        policy = preservation.AnyPreservationPolicy(policies=[policy, preservation.BestN(
            get_metric_fn=lambda metrics: metrics["eval_accuracy"], n=1,
            keep_checkpoints_without_metrics=False)])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=None if read_only else policy,
        save_interval_steps=0 if read_only else 1, create=not read_only, read_only=read_only,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options, item_names=ITEMS)


def save(mngr: ocp.CheckpointManager, step: int, state, host: dict,
         metrics: dict | None = None) -> None:
    """Saves (asynchronously when the manager is async). The host state is serialised here,
    so later changes to the objects it refers to cannot leak into the checkpoint."""
    snapshot = json.loads(json.dumps(host))
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            host=ocp.args.JsonSave(snapshot)),
              metrics=metrics, force=True)


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state):
    """(state, host) of checkpoint ``step``; ``abstract_state`` gives structure and shardings."""
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), host=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["host"])


def _best_step(mngr: ocp.CheckpointManager) -> int | None:
    """The best-eval step recorded in the newest readable host state (only the small JSON
    item is read, not the train state)."""
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            host = mngr.restore(step, args=ocp.args.Composite(host=ocp.args.JsonRestore()))
        except Exception:  # noqa: BLE001 - a damaged checkpoint: try the previous one
            continue
        return dict(host["host"]).get("best", {}).get("step")
    return None


def restore_newest_good(mngr: ocp.CheckpointManager, abstract_state, quarantine: bool = True):
    """(state, host) of the newest checkpoint that restores, or None if there is none.

    A checkpoint that fails to restore (truncated or corrupted files) is reported with a
    warning naming it and, with ``quarantine``, renamed to ``damaged-<step>-<time>`` (kept for
    inspection, out of the way of the step numbers the resumed run will write again); the
    previous one is tried next."""
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            return restore(mngr, step, abstract_state)
        except Exception as error:  # noqa: BLE001 - any failure means "unusable"
            path = paths.join(mngr.directory, str(step))
            log.warning("checkpoint %s is damaged and is skipped (%s: %s)", path,
                        type(error).__name__, " ".join(str(error).split())[:300])
            if quarantine:
                _quarantine(mngr, path, step)
    return None


def _quarantine(mngr: ocp.CheckpointManager, path: str, step: int) -> None:
    if jax.process_index() == 0:
        target = paths.join(mngr.directory, f"damaged-{step}-{int(time.time())}")
        paths.rename(path, target)
        log.warning("moved the damaged checkpoint to %s", target)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(f"quarantine checkpoint {step}")
    mngr.reload()


def read_checkpoint(workdir: str, abstract_state, which: str = "latest"):
    """(state, host) for eval and export: ``which='latest'`` reads the newest checkpoint,
    ``'best'`` the one of the best eval so far (``config.keep_best_checkpoint``, recorded in
    the newest checkpoint's host state); ValueError if the workdir has none. Nothing is
    moved or deleted."""
    if not paths.isdir(checkpoint_dir(workdir)):
        raise ValueError(f"--workdir={workdir!r} holds no {CHECKPOINTS}/; train first")
    mngr = manager(workdir, read_only=True)
    try:
        if which == "best":
            best = _best_step(mngr)
            if best is None or best not in mngr.all_steps():
                raise ValueError(f"--workdir={workdir!r} holds no best-eval checkpoint; "
                                 f"train with --config.keep_best_checkpoint=True first")
            restored = restore(mngr, best, abstract_state)
        else:
            restored = restore_newest_good(mngr, abstract_state, quarantine=False)
        if restored is None:
            raise ValueError(f"--workdir={workdir!r} holds no complete checkpoint in "
                             f"{CHECKPOINTS}/; train first")
    finally:
        mngr.close()
    return restored
