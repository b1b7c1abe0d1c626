"""Run files: JSON written atomically by process 0, and the workdir's ``config.json``."""

from __future__ import annotations

import json
import logging

import jax
import ml_collections

from common_jax import paths, provenance

log = logging.getLogger(__name__)


def write_json(path: str, payload: dict) -> None:
    """Writes JSON atomically (``paths.write_text``), from process 0 only."""
    if jax.process_index() != 0:
        return
    paths.write_text(path, json.dumps(payload, indent=2) + "\n")
    log.info("wrote %s", path)


# Config keys whose change changes the train state's structure (common to every method; a
# method adds its own, e.g. its rate string or structure space): a resume with another value
# is refused before anything is restored. Other keys (learning rate, epochs, logging) differ
# with a warning.
STATE_KEYS = ("method", "model.name", "model.width_mult", "model.small_input", "dataset.name",
              "dataset.image_size")


def config_changes(workdir: str, config: ml_collections.ConfigDict) -> list:
    """[(dotted key, value in the workdir's config.json, value now)] of every key that
    differs; [] when there is no config.json yet."""
    path = paths.join(workdir, "config.json")
    if not paths.exists(path):
        return []
    flat_prev = _flatten(json.loads(paths.read_text(path)))
    flat_cur = _flatten(json.loads(config.to_json()))
    return [(k, flat_prev.get(k), flat_cur.get(k)) for k in sorted(set(flat_prev) | set(flat_cur))
            if flat_prev.get(k) != flat_cur.get(k)]


def state_changes(changes: list, state_keys) -> list:
    """The entries of ``changes`` whose key is one of ``state_keys`` (or below one)."""
    return [c for c in changes if any(c[0] == k or c[0].startswith(k + ".")
                                      for k in state_keys)]


def change_text(changes: list) -> str:
    return ", ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes)


def mismatch_line(workdir: str, changes: list, state_detail: str | None) -> str:
    """The one line of a resume into another config: the differing keys and the first array
    that differs, e.g. ``--workdir=W was trained with another config (model.width_mult:
    0.25 -> 0.5; params/stem/kernel (3,3,1,4) on disk, (3,3,1,8) now); use a new --workdir
    or the original config``."""
    parts = [p for p in (change_text(changes), state_detail) if p]
    return (f"--workdir={workdir} was trained with another config ({'; '.join(parts)}); "
            f"use a new --workdir or the original config")


def record_config(workdir: str, config: ml_collections.ConfigDict, changes: list) -> None:
    """Saves config.json; warns about the ``changes`` from the one a resumed run used."""
    if changes:
        log.warning("config differs from the one this workdir was started with: %s",
                    change_text(changes))
    write_json(paths.join(workdir, "config.json"), json.loads(config.to_json()))


def record_provenance(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Appends this invocation's provenance (commit, command, date, the config's digest;
    ``common_jax.provenance``) as one line to ``provenance.jsonl``, from process 0 only."""
    if jax.process_index() != 0:
        return
    paths.append_text(paths.join(workdir, "provenance.jsonl"),
                      json.dumps(provenance.provenance(config=config)) + "\n")


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
