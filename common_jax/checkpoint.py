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
import re
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as preservation

from common_jax import paths, storage

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


def save_checked(mngr: ocp.CheckpointManager, step: int, state, host: dict,
                 metrics: dict | None = None) -> None:
    """``save`` with transient storage errors retried (``storage.retry``); a save that keeps
    failing, or fails for any other reason, raises StorageError naming the checkpoint. The
    checkpoints already written stay as they are (orbax commits each one only when it is
    complete). An earlier asynchronous save that failed is reported here too."""
    path = paths.join(mngr.directory, str(step))
    try:
        storage.retry(lambda: save(mngr, step, state, host, metrics), f"write {path}")
    except storage.StorageError:
        raise
    except Exception as error:  # noqa: BLE001 - reported in one line, nothing is removed
        raise storage.StorageError(f"cannot write {path}: {storage.reason(error)}; the "
                                   f"checkpoints written before it are kept") from error


def wait_checked(mngr: ocp.CheckpointManager) -> None:
    """Waits for pending asynchronous saves; StorageError when one of them failed."""
    try:
        mngr.wait_until_finished()
    except Exception as error:  # noqa: BLE001 - reported in one line, nothing is removed
        raise storage.StorageError(f"cannot write a checkpoint in {mngr.directory}: "
                                   f"{storage.reason(error)}; the checkpoints written before "
                                   f"it are kept") from error


def close(mngr: ocp.CheckpointManager) -> None:
    """Closes the manager; a failed pending save (already reported by ``wait_checked``)
    does not raise again."""
    try:
        mngr.close()
    except Exception as error:  # noqa: BLE001 - reported once, by wait_checked
        log.debug("closing the checkpoint manager: %s", storage.reason(error))


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
            host = storage.retry(lambda: mngr.restore(step, args=ocp.args.Composite(
                host=ocp.args.JsonRestore())), f"read {paths.join(mngr.directory, str(step))}")
        except Exception as error:  # noqa: BLE001 - a damaged checkpoint: try the previous one
            if storage.classify(error) != "corrupt":
                raise
            continue
        return dict(host["host"]).get("best", {}).get("step")
    return None


class StateMismatch(ValueError):
    """The checkpoint holds another train-state structure than the current config builds;
    ``detail`` names the first differing array (``params/a/kernel (3, 3, 8, 8) on disk,
    (3, 3, 16, 16) now``). A config change, never damage: nothing is moved."""

    def __init__(self, path: str, detail: str):
        super().__init__(f"the checkpoint {path} holds another train state than this config "
                         f"builds ({detail}); use a new --workdir or the original config")
        self.path, self.detail = path, detail


def _key_name(entry) -> str:
    for attribute in ("key", "idx", "name"):
        if hasattr(entry, attribute):
            return str(getattr(entry, attribute))
    return str(entry)


def _leaves(tree) -> dict:
    """{"params/a/kernel": (shape, dtype name)} of a tree of arrays, abstract arrays or
    orbax array metadata."""
    out = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        shape = tuple(getattr(leaf, "shape", None) or ())
        dtype = getattr(leaf, "dtype", None)
        out["/".join(_key_name(k) for k in path)] = (shape, np.dtype(dtype).name
                                                     if dtype is not None else "?")
    return out


def _shape_text(shape: tuple) -> str:
    return "(" + ",".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def state_difference(stored, abstract_state) -> str | None:
    """The first array whose presence, shape or dtype differs between the checkpoint's
    metadata ``stored`` and ``abstract_state``; None when they agree."""
    on_disk, now = _leaves(stored), _leaves(abstract_state)
    for name in sorted(set(on_disk) | set(now), key=lambda n: (not n.startswith("params"), n)):
        if name not in on_disk:
            return f"{name} {_shape_text(now[name][0])} not on disk"
        if name not in now:
            return f"{name} {_shape_text(on_disk[name][0])} on disk, not in this config"
        (disk_shape, disk_dtype), (shape, dtype) = on_disk[name], now[name]
        if disk_shape != shape:
            return f"{name} {_shape_text(disk_shape)} on disk, {_shape_text(shape)} now"
        if "?" not in (disk_dtype, dtype) and disk_dtype != dtype:
            return f"{name} {disk_dtype} on disk, {dtype} now"
    return None


def stored_state_metadata(mngr: ocp.CheckpointManager, step: int):
    """The array metadata (shapes, dtypes) of checkpoint ``step``'s train state, read from
    its ``_METADATA`` file alone (FileNotFoundError / JSONDecodeError when damaged)."""
    directory = epath.Path(paths.join(mngr.directory, str(step), "state"))
    return ocp.StandardCheckpointHandler().metadata(directory)


def check_structure(mngr: ocp.CheckpointManager, step: int, abstract_state) -> None:
    """StateMismatch if checkpoint ``step`` holds another structure than ``abstract_state``
    (None: restore whatever is stored, nothing to compare)."""
    if abstract_state is None:
        return
    stored = storage.retry(lambda: stored_state_metadata(mngr, step),
                           f"read {paths.join(mngr.directory, str(step))}")
    detail = state_difference(stored, abstract_state)
    if detail:
        raise StateMismatch(paths.join(mngr.directory, str(step)), detail)


def restore_checked(mngr: ocp.CheckpointManager, step: int, abstract_state):
    """(state, host) of checkpoint ``step`` after its structure is checked; transient errors
    retried. Raises StateMismatch, StorageError, or the original error when it proves the
    checkpoint damaged (``storage.classify(error) == 'corrupt'``)."""
    path = paths.join(mngr.directory, str(step))
    try:
        check_structure(mngr, step, abstract_state)
        return storage.retry(lambda: restore(mngr, step, abstract_state), f"read {path}")
    except (StateMismatch, storage.StorageError):
        raise
    except Exception as error:  # noqa: BLE001 - classified: only damage passes through
        kind = storage.classify(error)
        if kind == "corrupt":
            raise
        if kind == "mismatch":
            raise StateMismatch(path, storage.reason(error)) from error
        raise storage.StorageError(f"cannot restore {path}: {storage.reason(error)}") from error


def restore_newest_good(mngr: ocp.CheckpointManager, abstract_state, quarantine: bool = True):
    """(state, host) of the newest checkpoint that restores, or None if there is none.

    Only proven damage (unreadable metadata, a chunk that fails to decode, a missing file;
    ``storage.classify``) lets the next older checkpoint be tried: the damaged one is
    reported with a warning naming the file and, with ``quarantine``, renamed to
    ``damaged-<step>-<time>`` (kept for inspection). A structure mismatch raises
    StateMismatch, a storage error that persists (transient ones are retried first) or
    anything else StorageError: nothing is moved for those."""
    for step in sorted(mngr.all_steps(), reverse=True):
        path = paths.join(mngr.directory, str(step))
        try:
            return restore_checked(mngr, step, abstract_state)
        except (StateMismatch, storage.StorageError):
            raise
        except Exception as error:  # noqa: BLE001 - restore_checked lets only damage through
            log.warning("checkpoint %s is damaged and is skipped: %s (%s)", path,
                        damaged_file(path, error), storage.reason(error))
            if quarantine:
                _quarantine(mngr, path, step)
    return None


def damaged_file(directory: str, error: BaseException) -> str:
    """The file of checkpoint ``directory`` that ``error`` shows to be damaged, as far as
    it can be told: the array TensorStore failed to read, the file orbax missed, or the
    first of the checkpoint's JSON files that does not parse."""
    text = " ".join(str(e) for e in storage.chain(error))
    array = re.search(r'Error reading "([^"]+)"', text)
    if array:
        return f"{paths.join(directory, 'state')} (array chunk {array.group(1)})"
    missing = re.search(r"(?:File|Metadata file \(named \S+\) does not exist at) (\S+?)\.? "
                        r"(?:not found|$)", text)
    if missing:
        return missing.group(1)
    for name in ("host/metadata", "state/_METADATA", "_CHECKPOINT_METADATA"):
        try:
            json.loads(paths.read_text(paths.join(directory, name)))
        except (OSError, ValueError):
            return paths.join(directory, name)
    return directory


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
            restored = restore_checked(mngr, best, abstract_state)
        else:
            restored = restore_newest_good(mngr, abstract_state, quarantine=False)
        if restored is None:
            raise ValueError(f"--workdir={workdir!r} holds no complete checkpoint in "
                             f"{CHECKPOINTS}/; train first")
    finally:
        mngr.close()
    return restored
