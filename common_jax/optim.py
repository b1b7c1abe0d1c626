"""PyTorch-equivalent SGD and the papers' learning-rate schedules (per step).

``sgd(config.optimizer, ...)`` = coupled weight decay (``g + wd * w``, as PyTorch's
``weight_decay``) -> momentum buffer (``buf = mu * buf + g``; Nesterov ``g + mu * buf``, no
dampening) -> ``-lr(step) * update``. This is exactly ``torch.optim.SGD``.

Schedules (``epoch = step // steps_per_epoch``, ``E = ceil(total_steps / steps_per_epoch)``):
* ``constant``: lr.
* ``step``: lr * factor ** (number of ``decay_epochs`` <= epoch) (``MultiStepLR`` per epoch).
* ``cosine``: 0.5 * lr * (1 + cos(pi * step / total_steps)) (``CosineAnnealingLR`` per step).
* ``cosine_epoch``: 0.5 * lr * (1 + cos(pi * (epoch - w) / (E - w))), w = warm-up epochs
  (the DCFF ImageNet cos schedule, evaluated per epoch).
``warmup_epochs`` > 0 multiplies by ``(1 + step) / warmup_steps`` for the first
``warmup_steps`` steps (the DCFF ImageNet warm-up).
"""

from __future__ import annotations

import math
from typing import Callable

import jax.numpy as jnp
import optax
from flax import traverse_util

SCHEDULES = ("constant", "step", "cosine", "cosine_epoch")
WEIGHT_DECAY_ON = ("all", "kernels")


def learning_rate_schedule(opt_cfg, steps_per_epoch: int, total_steps: int) -> Callable:
    """The learning rate as a jittable function of the (0-based) step."""
    if opt_cfg.schedule not in SCHEDULES:
        raise ValueError(f"optimizer.schedule={opt_cfg.schedule!r}: expected one of {SCHEDULES}")
    base, kind = opt_cfg.learning_rate, opt_cfg.schedule
    total_epochs = math.ceil(total_steps / steps_per_epoch)
    warmup_steps = int(round(opt_cfg.warmup_epochs * steps_per_epoch))
    boundaries = jnp.asarray(list(opt_cfg.decay_epochs) or [total_epochs + 1], jnp.int32)

    def schedule(step):
        step = jnp.asarray(step, jnp.int32)
        epoch = step // steps_per_epoch
        if kind == "constant":
            lr = jnp.asarray(base, jnp.result_type(float))
        elif kind == "step":
            lr = base * opt_cfg.decay_factor ** jnp.sum(epoch >= boundaries).astype(jnp.float32)
        elif kind == "cosine":
            lr = 0.5 * base * (1 + jnp.cos(jnp.pi * step / total_steps))
        else:
            w = opt_cfg.warmup_epochs
            lr = 0.5 * base * (1 + jnp.cos(jnp.pi * (epoch - w) / max(total_epochs - w, 1)))
        if warmup_steps:
            lr = jnp.where(step < warmup_steps, lr * (1.0 + step) / warmup_steps, lr)
        return lr.astype(jnp.result_type(float))  # float32 (float64 with x64 enabled)

    return schedule


def weight_decay_mask(params, rule: str):
    """Which leaves get weight decay: 'all', or 'kernels' (PSS-Net: conv kernels with more
    than one input channel per group and linear kernels; no depthwise, BN or biases)."""
    if rule not in WEIGHT_DECAY_ON:
        raise ValueError(f"optimizer.weight_decay_on={rule!r}: expected one of {WEIGHT_DECAY_ON}")
    flat = traverse_util.flatten_dict(params)
    if rule == "all":
        mask = {path: True for path in flat}
    else:
        mask = {path: path[-1] == "kernel" and (leaf.ndim == 2 or leaf.shape[-2] != 1)
                for path, leaf in flat.items()}
    return traverse_util.unflatten_dict(mask)


def sgd(opt_cfg, schedule: Callable) -> optax.GradientTransformation:
    """torch.optim.SGD(momentum, nesterov, weight_decay) with the decay mask of the config."""
    decay = optax.add_decayed_weights(
        opt_cfg.weight_decay, mask=lambda p: weight_decay_mask(p, opt_cfg.weight_decay_on))
    return optax.chain(decay if opt_cfg.weight_decay else optax.identity(),
                       optax.trace(decay=opt_cfg.momentum, nesterov=opt_cfg.nesterov),
                       optax.scale_by_learning_rate(schedule))
