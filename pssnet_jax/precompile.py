"""Every program of a PSS-Net run compiled before the first step, in parallel (issue #27 part 2).

Lazily, each program compiles on the host thread the first time its resolution is drawn,
while the devices idle: on ImageNet about 40 programs of up to minutes each. Here they are
lowered and compiled at start-up by a thread pool (XLA compiles without holding the GIL):
first the gradient programs of every resolution (split mode; single mode: the whole step for
every middle resolution) and BN recalibration at every resolution, then the programs whose
inputs are those programs' outputs (the update; evaluation with recalibrated statistics).
The compiled functions land in ``StepFunctions.compiled``, which training then uses as is.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import time

import numpy as np

from common_jax import mesh as mesh_lib

log = logging.getLogger(__name__)


def _run_all(jobs: list, workers: int) -> list:
    with concurrent.futures.ThreadPoolExecutor(max(1, min(workers, len(jobs)))) as pool:
        return list(pool.map(lambda job: job(), jobs))


def precompile(pss, state, batch, step_mode: str, workers: int | None = None) -> dict:
    """Compiles the step, recalibration and evaluation programs of every resolution of
    ``pss`` (a ``SupernetRun``) for arguments like ``state`` and the global ``batch``;
    returns {"programs", "wall_s", "sum_s"} and logs them."""
    fns, evaluator = pss.fns, pss.evaluator
    workers = workers or os.cpu_count() or 1
    resolutions, low = pss.space.resolutions, pss.min_subnet
    widths, low_widths = pss.widths(pss.max_subnet), pss.widths(low)
    before, start = set(fns.compiled.times), time.perf_counter()
    if step_mode == "single":
        args = (state, batch, widths, widths, low_widths)
        steps = [lambda r=r: fns.single_program((fns.max_resolution, r, low.resolution), args)
                 for r in resolutions]
    else:
        args = (state["params"], state["batch_stats"], batch, widths, fns.no_teacher(batch),
                1.0, 0.0)
        steps = [lambda r=r: fns.grad_program(r, args) for r in resolutions]
    bn_args = (state["params"], evaluator.initial_stats(state["batch_stats"]),
               evaluator.recal_batch(), widths, np.float32(0.0))
    bn = [lambda r=r: evaluator.bn_program(r, bn_args) for r in resolutions]
    first = _run_all(steps + bn, workers)
    eval_batch = mesh_lib.global_batch(next(iter(pss.run.input.eval_batches())), pss.run.mesh)
    eval_args = (state["params"], first[-1].out_info, eval_batch, widths)
    second = [lambda r=r: evaluator.eval_program(r, eval_args) for r in resolutions]
    if step_mode != "single":
        grads, stats = first[0].out_info[:2]
        second.append(lambda: fns.update_program((state, (grads,) * 3, stats)))
    _run_all(second, workers)
    new = [name for name in fns.compiled.times if name not in before]
    report = {"programs": len(new), "wall_s": time.perf_counter() - start,
              "sum_s": sum(fns.compiled.times[name] for name in new)}
    log.info("compiled %d programs up front in %.1f s (%.1f s of compiles in %d threads)",
             report["programs"], report["wall_s"], report["sum_s"], workers)
    return report
