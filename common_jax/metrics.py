"""Training metrics: a log line, ``metrics.jsonl`` and TensorBoard events in the workdir.

Only process 0 writes files. TensorBoard events need ``tensorboardX`` (in
requirements.txt); without it only the JSON lines are written.
"""

from __future__ import annotations

import json
import logging
import os

log = logging.getLogger(__name__)


class MetricWriter:
    """Appends ``{"step": s, **scalars}`` lines to metrics.jsonl and TensorBoard scalars."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        self._path = os.path.join(workdir, "metrics.jsonl")
        try:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
        except ImportError:
            log.warning("tensorboardX is not installed; writing metrics.jsonl only")

    def write(self, step: int, scalars: dict) -> None:
        if not self.enabled:
            return
        with open(self._path, "a") as f:
            f.write(json.dumps({"step": step, **scalars}) + "\n")
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
