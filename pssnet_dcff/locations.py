"""Every user-given location a mode will use, checked before anything is compiled.

Locations that will be written (the workdir, the export directory, the compilation cache, a
latency table being built) get a marker object written and deleted; those that will be read
(an ``init_from`` export, the data directory, the workdir of eval and export; a latency
table in use is checked by the PSS-Net validation) must be reachable. Each problem is one ``StorageError`` line such as ``cannot write
gs://bucket/run: permission denied`` (``common_jax.storage``), within about 30 s even when
the store does not answer.
"""

from __future__ import annotations

import os

from common_jax import compilation_cache, paths, storage


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if paths.is_url(path) else os.path.dirname(
        paths.absolute(path))


def check(config, workdir: str, mode: str, export_dir: str | None = None) -> None:
    """Checks the locations ``mode`` ('train', 'eval', 'export', 'latency_table') of
    ``config`` will write and read; StorageError naming the first that fails."""
    writes, reads = [], []  # reads: (location, the flag that names it), must exist
    if mode == "train":
        writes += [workdir, compilation_cache.directory(config.compilation_cache_dir, workdir)]
        reads.append((config.init_from, "config.init_from"))
        if not (config.dataset.synthetic or config.dataset.name == "embedded"):
            reads.append((config.dataset.data_dir, "config.dataset.data_dir"))
    elif mode in ("eval", "export"):
        # reachable; a workdir without checkpoints is told later, and nothing is created
        if storage.exists(workdir):
            writes.append(workdir if mode == "eval" else
                          export_dir or paths.join(workdir, "export"))
    elif mode == "latency_table":
        table = config.latency.table or paths.join(workdir, "latency_table.json")
        writes.append(_parent(table))
    for location, flag in reads:
        if location:
            storage.check_readable(location, f" ({flag})")
    for location in writes:
        if location:
            storage.check_writable(location)
