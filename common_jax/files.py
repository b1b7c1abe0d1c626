"""Run files: JSON written atomically by process 0, and the workdir's ``config.json``."""

from __future__ import annotations

import json
import logging

import jax
import ml_collections

from common_jax import paths

log = logging.getLogger(__name__)


def write_json(path: str, payload: dict) -> None:
    """Writes JSON atomically (``paths.write_text``), from process 0 only."""
    if jax.process_index() != 0:
        return
    paths.write_text(path, json.dumps(payload, indent=2) + "\n")
    log.info("wrote %s", path)


def record_config(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Saves config.json; warns about keys that differ from the one a resumed run used."""
    path = paths.join(workdir, "config.json")
    current = json.loads(config.to_json())
    if paths.exists(path):
        previous = json.loads(paths.read_text(path))
        flat_prev, flat_cur = _flatten(previous), _flatten(current)
        changed = sorted(k for k in set(flat_prev) | set(flat_cur)
                         if flat_prev.get(k) != flat_cur.get(k))
        if changed:
            log.warning("config differs from the one this workdir was started with: %s",
                        ", ".join(f"{k}: {flat_prev.get(k)!r} -> {flat_cur.get(k)!r}"
                                  for k in changed))
    write_json(path, current)


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
