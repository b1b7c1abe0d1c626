"""What every trainer does around its steps: resume, log, evaluate on schedule, checkpoint,
stop on preemption or on a non-finite loss, and write ``summary.json``.

A trainer owns its loop and calls these pieces; it reads top to bottom::

    loop = Loop(run, workdir, compiles, stop_after)
    restored = loop.restore(abstract_state)          # (state, method host state) or None
    while loop.running():
        state, metrics = <the method's step>(state, loop.next_batch(), loop.step)
        loop.after_step(metrics)                     # metric window, first-step and log lines
        if loop.eval_due():
            loop.record_eval(state, <evaluate>(state), host_json)
        if loop.checkpoint_due():                    # also when preempted (SIGTERM)
            loop.save(state, host_json())
    loop.close()

Checkpoints hold the train state plus JSON host state: the step, the data position, the
unflushed metric window (so a resumed run logs the same values), the best eval so far and the
method's own host state (PSS-Net's pools).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
from typing import Callable

import jax

from common_jax import checkpoint, files, mesh as mesh_lib, paths, storage
from common_jax.metrics import MetricWriter
from common_jax.preemption import Preemption
from common_jax.run import Run

log = logging.getLogger(__name__)


class NonFiniteLoss(ValueError):
    """Training produced NaN or Inf; raised before a checkpoint could store the bad state."""


class TrainWindow:
    """Per-step metrics since the last log line; flushed to host floats in step order, so a
    run resumed from a checkpoint (which stores the unflushed values) reports the same."""

    def __init__(self, values=(), last=None):
        self.values = list(values)  # [step, loss, accuracy], device scalars or floats
        self.last = last or {}

    def add(self, step: int, metrics: dict) -> None:
        self.values.append((step, metrics["loss"], metrics["accuracy"]))

    def host_values(self) -> list:
        """The values as floats; NonFiniteLoss names the first step whose loss is not finite."""
        values = [[int(s), float(loss), float(acc)]
                  for s, loss, acc in jax.device_get(self.values)]
        for step, loss, _ in values:
            if not math.isfinite(loss):
                raise NonFiniteLoss(f"training loss is {loss} at step {step}; stopping, the "
                                    f"last good checkpoint is kept")
        self.values = values
        return values

    def flush(self) -> dict:
        values = self.host_values()
        if values:
            self.last = {"train_loss": sum(v[1] for v in values) / len(values),
                         "train_accuracy": sum(v[2] for v in values) / len(values)}
        self.values = []
        return self.last


def digest(payload) -> str:
    """A short hash of JSON-serialisable state: equal on every host when hosts agree."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class Loop:
    """Step counter, metric window, evaluation and checkpoint cadence of one training run.

    ``config.keep_best_checkpoint`` also keeps the checkpoint of the best eval accuracy so
    far (one manager, ``checkpoint.manager``), which is how the official DCFF code selects
    models (on the test set); the summary then reports ``best_eval_accuracy`` too."""

    def __init__(self, run: Run, workdir: str, compiles, stop_after: int | None = None,
                 state_keys: tuple = files.STATE_KEYS):
        config = self.config = run.config
        self.run, self.workdir, self.compiles = run, workdir, compiles
        self.state_keys = state_keys
        paths.makedirs(workdir)
        self.config_changes = files.config_changes(workdir, config)
        self.mngr = checkpoint.manager(workdir, config.keep_checkpoints,
                                       config.async_checkpoints,
                                       keep_best=config.keep_best_checkpoint)
        self.start = time.perf_counter()
        self.window, self.step, self.best, self.eval_metrics = TrainWindow(), 0, {}, {}
        self.end = run.total_steps if stop_after is None else min(stop_after, run.total_steps)
        self.eval_every = config.eval_every_steps or run.steps_per_epoch
        self.ckpt_every = config.checkpoint_every_steps or run.steps_per_epoch
        self.preemption, self.preempted = Preemption(), False
        self._batches, self._peeked, self.tracing = None, None, False
        self.steady_start, self.steady_step = self.start, 0

    def restore(self, abstract) -> tuple | None:
        """(state, method host state) of the newest good checkpoint, or None. A workdir
        trained with another config (a ``state_keys`` change, or arrays of other shapes on
        disk) is refused with a one-line ValueError before anything is restored or written;
        only then are config.json and the metric writer set up."""
        try:
            self._check_resume_config(abstract)
            restored = checkpoint.restore_newest_good(self.mngr, abstract)
        except checkpoint.StateMismatch as mismatch:
            checkpoint.close(self.mngr)
            raise ValueError(files.mismatch_line(self.workdir, self.config_changes,
                                                 mismatch.detail)) from None
        except BaseException:
            checkpoint.close(self.mngr)
            raise
        files.record_config(self.workdir, self.config, self.config_changes)
        files.record_provenance(self.workdir, self.config)
        self.writer = MetricWriter(self.workdir, enabled=jax.process_index() == 0)
        self.writer.text("config", "```\n" + self.config.to_json(indent=2) + "\n```")
        if restored is not None:
            state, host = restored
            self.step, self.best = int(host["step"]), host.get("best", {})
            self.window = TrainWindow(host["train_window"], host["last_train"])
            log.info("resumed from checkpoint at step %d (epoch %d)", self.step,
                     self.run.epoch(self.step))
            restored = state, host.get("method", {})
        self.resumed_at = self.window_start = self.step
        self.tic = time.perf_counter()
        return restored

    def _check_resume_config(self, abstract) -> None:
        """ValueError (``files.mismatch_line``) if a key of ``state_keys`` changed since the
        workdir's checkpoints were written; names the first differing array when the
        newest checkpoint's metadata can be read."""
        changed = files.state_changes(self.config_changes, self.state_keys)
        steps = storage.retry(self.mngr.all_steps, f"list {self.mngr.directory}")
        if not (changed and steps):
            return
        try:
            detail = checkpoint.state_difference(
                checkpoint.stored_state_metadata(self.mngr, max(steps)), abstract)
        except Exception:  # noqa: BLE001 - the array detail is optional in this message
            detail = None
        raise ValueError(files.mismatch_line(self.workdir, changed, detail))

    def log_plan(self, costs: dict) -> None:
        run, config = self.run, self.config
        log.info("%s on %s: %d steps (%d epochs of %d steps), %.2f MFLOPs, %d params, "
                 "%d devices", config.model.name, config.dataset.name, run.total_steps,
                 run.total_epochs, run.steps_per_epoch, costs["flops"] / 1e6, costs["params"],
                 jax.device_count())
        if run.input.pipeline != "memory":
            log.info("input pipeline: %s (the data is prepared as %s)", run.input.pipeline,
                     "array_record" if run.input.pipeline == "grain" else "TFRecord")

    def running(self) -> bool:
        return self.step < self.end and not self.preempted

    def next_batch(self):
        """The global batch of the current step (the stream continues at the resumed step)."""
        if self._peeked is not None:
            batch, self._peeked = self._peeked, None
            return batch
        if self._batches is None:
            self._batches = self.run.input.train_batches(self.step)
        return mesh_lib.global_batch(next(self._batches), self.run.mesh)

    def peek_batch(self):
        """The batch ``next_batch`` returns next, read now (to compile for its shapes)."""
        if self._peeked is None:
            self._peeked = self.next_batch()
        return self._peeked

    def after_step(self, metrics: dict) -> bool:
        """Counts the step; logs the first one (compiles) and every ``log_every_steps`` (step,
        loss, images/s, ETA); starts and stops the profiler trace. True on a log step (the
        trainer may add its own scalars with ``write_scalars``)."""
        self.step += 1
        step = self.step
        self.window.add(step, metrics)
        self._profile(step)
        if step == self.resumed_at + 1:  # throughput is measured from here on, no compiles
            jax.block_until_ready(metrics)
            log.info("first step done %.1f s after start; %s", time.perf_counter() - self.start,
                     self.compiles.line())
            self._restart_clock()
            self.steady_start, self.steady_step = self.tic, step
        logged = step % self.config.log_every_steps == 0 or step == self.run.total_steps
        if logged:
            lr = float(metrics["learning_rate"])
            last = self.window.flush()
            now = time.perf_counter()
            rate = (step - self.window_start) * self.config.batch_size / (now - self.tic)
            log.info("step %d/%d | epoch %d | loss %.4f | acc %.4f | lr %.5f | %.0f img/s | "
                     "ETA %s", step, self.run.total_steps, self.run.epoch(step - 1),
                     last["train_loss"], last["train_accuracy"], lr, rate, self._eta(now))
            self.writer.write(step, {**last, "learning_rate": lr, "images_per_s": rate})
            self._restart_clock()
        return logged

    def _eta(self, now: float) -> str:
        """Time left at the mean step time since the first step (compiles excluded)."""
        done = self.step - self.steady_step
        if done <= 0:
            return "?"
        seconds = int((now - self.steady_start) / done * (self.run.total_steps - self.step))
        return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else (
            f"{seconds // 60}m{seconds % 60:02d}s")

    def _profile(self, step: int) -> None:
        """A ``jax.profiler`` trace of steps (start, stop] of ``config.profile_steps`` in
        ``<workdir>/profile`` (TensorBoard's profile tab reads it)."""
        start, stop = self.config.profile_steps
        if start < stop and step == start + 1 and jax.process_index() == 0:
            self.trace_dir = (tempfile.mkdtemp(prefix="profile-") if paths.is_url(self.workdir)
                              else paths.join(self.workdir, "profile"))
            jax.profiler.start_trace(self.trace_dir)
            self.tracing = True
        if self.tracing and step >= stop:
            self._stop_trace()
            log.info("profiler trace of steps %d-%d in %s", start + 1, stop,
                     paths.join(self.workdir, "profile"))

    def _stop_trace(self) -> None:
        jax.profiler.stop_trace()
        self.tracing = False
        if paths.is_url(self.workdir):  # traced locally, copied to the object store
            paths.copy_tree(self.trace_dir, paths.join(self.workdir, "profile"))

    def write_scalars(self, scalars: dict) -> None:
        """Extra scalars of the method at the current step (metrics.jsonl and TensorBoard)."""
        self.writer.write(self.step, {k: float(v) for k, v in scalars.items()})

    def _restart_clock(self) -> None:
        self.tic, self.window_start = time.perf_counter(), self.step

    def eval_due(self) -> bool:
        return self.step % self.eval_every == 0 or self.step == self.run.total_steps

    def record_eval(self, state, metrics: dict, host_json: Callable[[], dict] = dict) -> None:
        """Logs and writes ``metrics`` (eval_loss, eval_accuracy, ...); keeps the best state."""
        step, self.eval_metrics = self.step, metrics
        log.info("eval at step %d | loss %.4f | accuracy %.4f", step, metrics["eval_loss"],
                 metrics["eval_accuracy"])
        self.writer.write(step, metrics)
        if (self.config.keep_best_checkpoint
                and metrics["eval_accuracy"] > self.best.get("eval_accuracy", -1.0)):
            self.best = {"eval_accuracy": metrics["eval_accuracy"], "step": step}
            if step not in self.mngr.all_steps():  # else saved before a crash: identical
                checkpoint.save_checked(self.mngr, step, state, self._host(host_json()),
                                        metrics={"eval_accuracy": metrics["eval_accuracy"]})
        self._restart_clock()

    def checkpoint_due(self) -> bool:
        """True at the checkpoint cadence, at the end of this invocation and on preemption."""
        self.preempted = self.preemption.requested(self.step)
        return self.step % self.ckpt_every == 0 or self.step == self.end or self.preempted

    def save(self, state, method_host: dict) -> None:
        if self.step in self.mngr.all_steps():  # saved as a new best eval at this step
            return
        host = self._host(method_host)
        checkpoint.save_checked(self.mngr, self.step, state, host)
        log.info("checkpoint at step %d (method host state %s)", self.step,
                 digest(host["method"]))

    def _host(self, method_host: dict) -> dict:
        epoch, index = divmod(self.step, self.run.steps_per_epoch)
        return {"step": self.step, "data_position": {"epoch": epoch, "step_in_epoch": index},
                "train_window": self.window.host_values(), "last_train": self.window.last,
                "best": self.best, "method": method_host}

    def flush(self) -> None:
        """Waits for pending checkpoints, then closes the manager, the preemption handler and
        the metric writer."""
        if self.tracing:
            self._stop_trace()
        self.preemption.close()
        try:
            checkpoint.wait_checked(self.mngr)
        finally:
            checkpoint.close(self.mngr)
        self.writer.close()

    def close(self) -> dict | None:
        """Waits for pending checkpoints; None when training is complete, else the
        ``{"step", "finished": False, "preempted"}`` result of a stopped invocation."""
        self.flush()
        log.info("compilation: %s", self.compiles.line())
        if self.step >= self.run.total_steps:
            return None
        log.info("stopped at step %d of %d%s; run the same command again to continue",
                 self.step, self.run.total_steps, " (preempted)" if self.preempted else "")
        return {"step": self.step, "finished": False, "preempted": self.preempted}

    def write_summary(self, costs: dict, extra: dict | None = None) -> dict:
        """summary.json of a finished run: last train window, eval, costs, ``extra`` (the
        method's results), wall and compile time, and the best eval when kept."""
        config = self.config
        summary = {"step": self.step, **self.window.last, **self.eval_metrics, **costs,
                   "mode": "train", "model": config.model.name,
                   "dataset": config.dataset.name, **(extra or {}),
                   "wall_time_s": time.perf_counter() - self.start,
                   "xla_compiles": self.compiles.compiled,
                   "compile_time_s": self.compiles.seconds}
        if self.best:
            summary.update(best_eval_accuracy=self.best["eval_accuracy"],
                           best_step=self.best["step"])
        files.write_json(paths.join(self.workdir, "summary.json"), summary)
        return summary


def write_eval_summary(config, workdir: str, host: dict, metrics: dict, costs: dict,
                       extra: dict | None = None) -> dict:
    """summary.json of ``--mode=eval``: the checkpoint's step and last train window, the
    fresh eval ``metrics``, costs and the method's results."""
    log.info("eval of step %d | loss %.4f | accuracy %.4f", host["step"], metrics["eval_loss"],
             metrics["eval_accuracy"])
    summary = {"step": int(host["step"]), **host.get("last_train", {}), **metrics, **costs,
               "mode": "eval", "model": config.model.name, "dataset": config.dataset.name,
               **(extra or {})}
    files.write_json(paths.join(workdir, "summary.json"), summary)
    return summary
