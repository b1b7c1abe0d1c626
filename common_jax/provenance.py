"""Where a raw output came from: the commit, the command, the date and the config's digest.

Every raw output of the project (a run's ``provenance.jsonl``, the evidence studies' and the
benchmarks' JSON files) carries ``provenance(...)``, so a number can be traced to the code
and the config that produced it. Reading it needs neither JAX nor a network.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", "-C", CHECKOUT, *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def config_digest(config) -> str:
    """sha256 of a config's JSON with sorted keys (a ConfigDict or a plain dict)."""
    tree = json.loads(config.to_json()) if hasattr(config, "to_json") else config
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()


def _script(path: str) -> str:
    """A script of this checkout relative to it (no machine's absolute path in raw outputs)."""
    full = os.path.abspath(path)
    return os.path.relpath(full, CHECKOUT) if full.startswith(CHECKOUT + os.sep) else path


def provenance(command: str | None = None, config=None) -> dict:
    """{"commit", "dirty", "command", "date", "python", "jax"[, "config_sha256"]}: the
    checkout's commit (None outside a git checkout) and whether tracked files differed from
    it, the command (default: this process's), and the digest of ``config`` if given."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    try:
        jax_version = importlib.metadata.version("jax")
    except importlib.metadata.PackageNotFoundError:
        jax_version = None
    record = {"commit": commit, "dirty": bool(status) if commit else None,
              "command": command or shlex.join(["python", _script(sys.argv[0])] + sys.argv[1:]),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "python": platform.python_version(), "jax": jax_version}
    if config is not None:
        record["config_sha256"] = config_digest(config)
    return record
