"""Training metrics: a log line, ``metrics.jsonl`` and TensorBoard events in the workdir.

Only process 0 writes files. TensorBoard events need ``tensorboardX`` (in
requirements.txt); without it only the JSON lines are written. For a workdir on an object
store (``gs://...``) both are written locally and copied to the workdir at most every
``sync_seconds`` and at close, since objects cannot be appended to.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time

from common_jax import paths

log = logging.getLogger(__name__)


class MetricWriter:
    """Appends ``{"step": s, **scalars}`` lines to metrics.jsonl and TensorBoard scalars."""

    def __init__(self, workdir: str, enabled: bool = True, sync_seconds: float = 60.0):
        self.enabled, self.sync_seconds = enabled, sync_seconds
        self._tb = None
        if not enabled:
            return
        self._path = paths.join(workdir, "metrics.jsonl")
        self._remote, self._pending, self._synced = paths.is_url(workdir), "", time.time()
        self._tb_remote = paths.join(workdir, "tensorboard")
        self._tb_dir = tempfile.mkdtemp(prefix="tensorboard-") if self._remote else (
            self._tb_remote)
        try:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(self._tb_dir)
        except ImportError:
            log.warning("tensorboardX is not installed; writing metrics.jsonl only")

    def write(self, step: int, scalars: dict) -> None:
        if not self.enabled:
            return
        self._pending += json.dumps({"step": step, **scalars}) + "\n"
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)
        self._sync(force=not self._remote)

    def text(self, tag: str, text: str) -> None:
        """A text entry in TensorBoard (e.g. the resolved config)."""
        if self._tb is not None:
            self._tb.add_text(tag, text, 0)
            self._sync(force=not self._remote)

    def _sync(self, force: bool) -> None:
        """Writes pending lines and events (always locally; to an object store when
        ``sync_seconds`` have passed or when forced)."""
        if not force and time.time() - self._synced < self.sync_seconds:
            return
        if self._pending:
            paths.append_text(self._path, self._pending)
            self._pending = ""
        if self._tb is not None:
            self._tb.flush()
            if self._remote:
                paths.copy_tree(self._tb_dir, self._tb_remote)
        self._synced = time.time()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._tb is not None:
            self._tb.close()
        self._sync(force=True)
