"""Orbax checkpoints of the train state plus JSON host state, with automatic resume.

A checkpoint directory ``workdir/checkpoints/<step>/`` holds two items: ``state`` (step,
params, BN statistics, optimizer state, RNG key data) and ``host`` (JSON: data position,
the unflushed training-metric window, and whatever a method registers, e.g. PSS-Net pools).
Orbax writes each checkpoint into a temporary directory and renames it only when complete,
so a crash during a save leaves nothing that is later taken as a valid checkpoint; older
checkpoints are deleted only after a newer one is complete (``keep_checkpoints``).
"""

from __future__ import annotations

import os

import orbax.checkpoint as ocp

ITEMS = ("state", "host")
CHECKPOINTS = "checkpoints"


def checkpoint_dir(workdir: str, name: str = CHECKPOINTS) -> str:
    return os.path.join(os.path.abspath(workdir), name)


def manager(workdir: str, keep: int = 3, async_save: bool = True, read_only: bool = False,
            name: str = CHECKPOINTS) -> ocp.CheckpointManager:
    """The manager of ``<workdir>/<name>/`` keeping the newest ``keep`` checkpoints."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=not read_only, read_only=read_only,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only)
    return ocp.CheckpointManager(checkpoint_dir(workdir, name), options=options,
                                 item_names=ITEMS)


def save(mngr: ocp.CheckpointManager, step: int, state, host: dict) -> None:
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            host=ocp.args.JsonSave(host)), force=True)


def latest_step(mngr: ocp.CheckpointManager) -> int | None:
    return mngr.latest_step()


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state):
    """(state, host) of checkpoint ``step``; ``abstract_state`` gives structure and shardings."""
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), host=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["host"])
