"""SGD and schedules against PyTorch's formulas, written out independently here."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from common_jax import optim


def opt_config(**kw):
    c = ml_collections.ConfigDict(dict(
        learning_rate=0.1, momentum=0.9, nesterov=False, weight_decay=5e-4,
        weight_decay_on="all", schedule="step", decay_epochs=(2, 4), decay_factor=0.1,
        warmup_epochs=0))
    c.update(kw)
    return c


def torch_sgd_reference(params, grads_per_step, lrs, momentum, nesterov, wd, decay_mask):
    """torch.optim.SGD's update rule (dampening 0), step by step, in float64."""
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    buf = {}
    for grads, lr in zip(grads_per_step, lrs):
        for k in params:
            g = np.asarray(grads[k], np.float64) + (wd * params[k] if decay_mask[k] else 0)
            buf[k] = g if k not in buf else momentum * buf[k] + g
            step = g + momentum * buf[k] if nesterov else buf[k]
            params[k] = params[k] - lr * step
    return params


@pytest.mark.parametrize("nesterov,rule", [(False, "all"), (True, "kernels")])
def test_sgd_matches_torch_reference(nesterov, rule):
    rng = np.random.default_rng(0)
    params = {"conv": {"kernel": rng.normal(size=(3, 3, 4, 8)).astype(np.float32)},
              "dw": {"kernel": rng.normal(size=(3, 3, 1, 8)).astype(np.float32)},
              "bn": {"scale": rng.normal(size=(8,)).astype(np.float32)},
              "fc": {"kernel": rng.normal(size=(8, 10)).astype(np.float32),
                     "bias": rng.normal(size=(10,)).astype(np.float32)}}
    grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
             for _ in range(5)]
    cfg = opt_config(nesterov=nesterov, weight_decay_on=rule, schedule="step", decay_epochs=(1,))
    schedule = optim.learning_rate_schedule(cfg, steps_per_epoch=3, total_steps=5)
    tx = optim.sgd(cfg, schedule)
    state, current = tx.init(params), params
    for g in grads:
        updates, state = tx.update(g, state, current)
        current = optax.apply_updates(current, updates)
    flat = lambda tree: {"/".join(k.key for k in path): v  # noqa: E731
                         for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
    decays = {"conv/kernel": True, "dw/kernel": rule == "all", "bn/scale": rule == "all",
              "fc/kernel": True, "fc/bias": rule == "all"}
    expected = torch_sgd_reference(flat(params), [flat(g) for g in grads],
                                   [0.1, 0.1, 0.1, 0.01, 0.01], 0.9, nesterov, 5e-4, decays)
    for key, value in flat(current).items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-5, atol=1e-6)


def lr_at(cfg, steps_per_epoch, total_steps, steps):
    schedule = optim.learning_rate_schedule(cfg, steps_per_epoch, total_steps)
    return [float(schedule(s)) for s in steps]


def test_step_schedule_is_multistep_per_epoch():
    lrs = lr_at(opt_config(decay_epochs=(150, 225)), 196, 300 * 196,
                [0, 150 * 196 - 1, 150 * 196, 225 * 196 - 1, 225 * 196, 300 * 196 - 1])
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


def test_cosine_schedule_is_per_step_to_zero():
    cfg = opt_config(schedule="cosine", learning_rate=0.3)
    lrs = lr_at(cfg, 10, 1000, [0, 250, 500, 999])
    expected = [0.15 * (1 + math.cos(math.pi * s / 1000)) for s in (0, 250, 500, 999)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-5, atol=1e-7)


def test_dcff_imagenet_warmup_and_epoch_cosine():
    cfg = opt_config(schedule="cosine_epoch", learning_rate=0.01, warmup_epochs=5)
    spe, epochs = 4, 20
    lrs = lr_at(cfg, spe, spe * epochs, [0, 3, 19, 20, 40, 79])
    # DCFF: lr = 0.5 lr0 (1 + cos(pi (e-5)/(E-5))), times (1 + it + e*ipe) / (5 ipe) for e < 5.
    def reference(step):
        e = step // spe
        lr = 0.5 * 0.01 * (1 + math.cos(math.pi * (e - 5) / (epochs - 5)))
        return lr * (1 + step) / (5 * spe) if e < 5 else lr
    np.testing.assert_allclose(lrs, [reference(s) for s in (0, 3, 19, 20, 40, 79)], rtol=1e-5)


def test_dcff_imagenet_step_schedule_with_warmup():
    cfg = opt_config(decay_epochs=(30, 60, 80), warmup_epochs=5, weight_decay=1e-4)
    lrs = lr_at(cfg, 10, 900, [0, 49, 50, 299, 300, 600, 800])
    np.testing.assert_allclose(lrs, [0.1 / 50, 0.1, 0.1, 0.1, 0.01, 0.001, 0.0001], rtol=1e-5)


def test_weight_decay_mask_kernels_rule():
    params = {"stem": {"kernel": jnp.zeros((3, 3, 3, 8))},
              "dw": {"kernel": jnp.zeros((3, 3, 1, 8))},
              "bn": {"scale": jnp.zeros(8), "bias": jnp.zeros(8)},
              "fc": {"kernel": jnp.zeros((8, 2)), "bias": jnp.zeros(2)}}
    mask = optim.weight_decay_mask(params, "kernels")
    assert mask == {"stem": {"kernel": True}, "dw": {"kernel": False},
                    "bn": {"scale": False, "bias": False},
                    "fc": {"kernel": True, "bias": False}}
    with pytest.raises(ValueError, match="weight_decay_on='bn'"):
        optim.weight_decay_mask(params, "bn")


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="schedule='poly'"):
        optim.learning_rate_schedule(opt_config(schedule="poly"), 10, 100)
