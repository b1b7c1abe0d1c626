"""Graceful preemption: on SIGTERM, finish the current step, checkpoint, exit with code 75.

One process: a SIGTERM handler sets a flag that the loop reads after every step. Several
processes (``jax.distributed``): JAX's coordination service notices the SIGTERM on any host
and all hosts agree on the step to stop at (``reached_preemption_sync_point``), so every host
saves the same step and none waits in a collective for the others.
"""

from __future__ import annotations

import logging
import signal
import threading

import jax

log = logging.getLogger(__name__)
PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "try again", the same command resumes


class Preemption:
    """``requested(step)`` is True once the run should checkpoint and stop."""

    def __init__(self):
        self._flag = threading.Event()
        self._previous = None
        self._multi = jax.process_count() > 1
        if not self._multi and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum, frame):
        log.warning("SIGTERM received: stopping after this step with a checkpoint")
        self._flag.set()

    def requested(self, step: int) -> bool:
        if self._multi:
            from jax.experimental import multihost_utils
            return multihost_utils.reached_preemption_sync_point(step)
        return self._flag.is_set()

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
