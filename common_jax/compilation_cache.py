"""JAX's persistent compilation cache, on by default, so restarts do not compile again.

``config.compilation_cache_dir``: '' uses ``$JAX_COMPILATION_CACHE_DIR`` when set, else, on
several processes, ``<workdir>/xla_cache`` (one directory every host reads: JAX writes entries
from process 0 only, so with a cache per host every other host compiles again after a
restart), else ``~/.cache/pssnet-dcff-jax/xla``; 'off' disables the cache; anything else is
the directory. Every executable is cached (no minimum compile time), so a warm restart
compiles nothing; ``CompileStats`` counts what a run compiled.
"""

from __future__ import annotations

import logging
import os

import jax
import jax.monitoring

from common_jax import paths

log = logging.getLogger(__name__)
_enabled: list = []
_REQUESTS = "/jax/compilation_cache/compile_requests_use_cache"
_HITS = "/jax/compilation_cache/cache_hits"
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


def default_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "pssnet-dcff-jax", "xla")


def directory(setting: str, workdir: str | None = None) -> str | None:
    """The cache directory that ``setting`` (``config.compilation_cache_dir``) resolves to
    for a run in ``workdir`` (None: not known); None for 'off'."""
    if setting == "off":
        return None
    if setting or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return setting or os.environ["JAX_COMPILATION_CACHE_DIR"]
    if workdir and jax.process_count() > 1:
        return paths.join(workdir, "xla_cache")
    return default_dir()


def enable(setting: str, workdir: str | None = None) -> str | None:
    """Points JAX at the cache directory of ``setting`` for a run in ``workdir`` (once per
    process); returns it."""
    path = directory(setting, workdir)
    if path is None:
        return None
    if _enabled != [path]:
        paths.makedirs(path)
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        _enabled[:] = [path]
        log.info("persistent compilation cache: %s", path)
    return path


class CompileStats:
    """Counts XLA compilations while active: ``compiled`` (not served by the persistent
    cache), ``cache_hits`` and ``seconds`` (compiling or loading executables)."""

    def __init__(self):
        self.requests = self.cache_hits = 0
        self.seconds = 0.0

    @property
    def compiled(self) -> int:
        return self.requests - self.cache_hits

    def _event(self, event, **kwargs):
        if event == _REQUESTS:
            self.requests += 1
        elif event == _HITS:
            self.cache_hits += 1

    def _duration(self, event, duration, **kwargs):
        if event == _BACKEND_COMPILE:
            self.seconds += duration

    def __enter__(self):
        jax.monitoring.register_event_listener(self._event)
        jax.monitoring.register_event_duration_secs_listener(self._duration)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_listener(self._event)
        jax.monitoring.unregister_event_duration_listener(self._duration)

    def line(self) -> str:
        return (f"{self.compiled} XLA compiles, {self.cache_hits} executables loaded from the "
                f"persistent cache, {self.seconds:.1f} s compiling/loading")
