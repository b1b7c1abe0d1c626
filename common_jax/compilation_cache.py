"""JAX's persistent compilation cache, on by default, so restarts do not compile again.

``config.compilation_cache_dir``: '' uses ``$JAX_COMPILATION_CACHE_DIR`` when set, else
``~/.cache/pssnet-dcff-jax/xla``; 'off' disables the cache; anything else is the directory
(on a pod, a path every host can write, or a local directory per host).
"""

from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger("common_jax")
_enabled: list = []


def default_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "pssnet-dcff-jax", "xla")


def enable(setting: str) -> str | None:
    """Points JAX at the cache directory of ``setting`` (once per process); returns it."""
    if setting == "off":
        return None
    path = setting or os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_dir()
    if _enabled != [path]:
        os.makedirs(path, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        _enabled[:] = [path]
        log.info("persistent compilation cache: %s", path)
    return path
