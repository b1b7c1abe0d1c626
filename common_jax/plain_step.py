"""The jitted train and eval steps of a network trained as it is (baseline, DCFF).

``variables(state, params)`` gives what ``model.apply`` takes: the baseline's
``{"params", "batch_stats"}``, or DCFF's with the fusion matrices of the state added.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from common_jax import evaluation, mesh as mesh_lib, models
from common_jax.losses import cross_entropy
from common_jax.run import Run

log = logging.getLogger(__name__)


def plain_variables(state: dict, params) -> dict:
    return {"params": params, "batch_stats": state["batch_stats"]}


def make_train_step(run: Run, model, variables: Callable = plain_variables):
    """jit(state, batch) -> (state, metrics); the state argument is donated."""
    dtype = models.DTYPES[run.config.compute_dtype]

    def train_step(state, batch):
        images = run.normalize(batch["image"], dtype)

        def loss_fn(params):
            logits, updates = model.apply(variables(state, params), images, train=True,
                                          mutable=["batch_stats"])
            loss = jnp.mean(cross_entropy(logits, batch["label"]))
            return loss, (logits, updates["batch_stats"])

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"])
        updates, opt_state = run.tx.update(grads, state["opt_state"], state["params"])
        new_state = dict(state, step=state["step"] + 1, batch_stats=batch_stats,
                         opt_state=opt_state,
                         params=optax.apply_updates(state["params"], updates))
        metrics = {"loss": loss,
                   "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
                   "learning_rate": run.schedule(state["step"])}
        return new_state, metrics

    replicated = mesh_lib.replicated(run.mesh)
    return jax.jit(train_step, donate_argnums=0, out_shardings=(replicated, replicated))


def compile_logged(name: str, jitted, *args):
    """AOT-compiles ``jitted`` for ``args`` and logs the compile time."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    log.info("compiled %s in %.1f s", name, time.perf_counter() - start)
    return compiled


def make_eval_step(run: Run, model, variables: Callable = plain_variables):
    """jit(state, batch) -> sums of loss, correct predictions and real examples."""
    dtype = models.DTYPES[run.config.compute_dtype]

    def eval_step(state, batch):
        images = run.normalize(batch["image"], dtype)
        logits = model.apply(variables(state, state["params"]), images, train=False)
        return evaluation.batch_sums(logits, batch)

    return jax.jit(eval_step, out_shardings=mesh_lib.replicated(run.mesh))


def evaluate_split(run: Run, eval_step, state) -> dict:
    """{"eval_loss", "eval_accuracy"} of the trained network over the whole eval split."""
    result = evaluation.accumulate(eval_step(state, mesh_lib.global_batch(batch, run.mesh))
                                   for batch in run.input.eval_batches())
    return {"eval_loss": result["loss"], "eval_accuracy": result["accuracy"]}
