"""DCFF fusion transform against independent NumPy implementations of the formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcff_jax import fusion

TEMPERATURES = [1.0, 10.0, 100.0, 1e4]


def bank(n=12, c_in=4, seed=0, scale=0.02):
    """A random (3, 3, c_in, n) filter bank; distances ~0.15, so T*D underflows only at 1e4."""
    return np.random.default_rng(seed).normal(0, scale, (3, 3, c_in, n)).astype(np.float32)


def rows_of(kernel):
    return kernel.reshape(-1, kernel.shape[-1]).T


def official_float32(kernel, temp):
    """The official code in NumPy float32: scipy-style float64 cdist cast to float32,
    softmax(-D / t) with t = 1/T, and the n x n x n KL tensor with mean over l and eps 1e-7."""
    rows = rows_of(kernel).astype(np.float64)
    dist = np.sqrt(((rows[:, None, :] - rows[None, :, :]) ** 2).sum(-1)).astype(np.float32)
    logits = -dist / np.float32(1.0 / temp)
    logits = logits - logits.max(axis=1, keepdims=True)
    proxies = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = (proxies[:, None, :] * np.log(proxies[:, None, :] / (proxies[None, :, :] +
                                                                  np.float32(1e-7)))).mean(-1)
    return proxies, kl.sum(axis=1)


def exact_float64(kernel, temp):
    """The KL criterion in float64 log space (no epsilon): s_j = (1/n) sum_k KL(P_j || P_k)."""
    rows = rows_of(kernel).astype(np.float64)
    dist = np.sqrt(((rows[:, None, :] - rows[None, :, :]) ** 2).sum(-1))
    logits = -temp * dist
    log_p = logits - (logits.max(1, keepdims=True) + np.log(
        np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)))
    proxies = np.exp(log_p)
    kl = (proxies[:, None, :] * (log_p[:, None, :] - log_p[None, :, :])).sum(-1)
    return proxies, kl.sum(axis=1) / len(rows)


def run_layer(kernel, temp, mode, m, first=True, previous_scores=None, previous_selection=None):
    n = kernel.shape[-1]
    previous_scores = np.zeros(n, np.float32) if previous_scores is None else previous_scores
    previous_selection = (np.arange(m, dtype=np.int32) if previous_selection is None
                          else previous_selection)
    return jax.jit(fusion.update_layer, static_argnames="mode")(
        kernel, previous_scores, previous_selection, jnp.asarray(first), np.float32(temp),
        np.float32(1.0 / temp), mode=mode)


@pytest.mark.parametrize("temp", TEMPERATURES)
def test_faithful_scores_match_the_official_float32_arithmetic(temp):
    kernel = bank()
    proxies, scores = official_float32(kernel, temp)
    got_p, got_s = jax.jit(fusion.faithful_scores)(
        fusion.pairwise_distances(fusion.filter_rows(kernel)), np.float32(1.0 / temp))
    np.testing.assert_allclose(got_p, proxies, rtol=2e-4, atol=1e-7)
    assert np.array_equal(np.isnan(got_s), np.isnan(scores))
    if temp < 1e4:
        assert np.all(np.isfinite(scores))
        np.testing.assert_allclose(got_s, scores, rtol=1e-3, atol=1e-5 * np.abs(scores).max())
    else:
        assert np.all(np.isnan(scores)), "T = 1e4 must reproduce the official NaN scores"
        np.testing.assert_array_equal(proxies, np.eye(len(proxies), dtype=np.float32))


@pytest.mark.parametrize("temp", TEMPERATURES[:3])
def test_faithful_selection_and_fused_filters(temp):
    kernel, m = bank(seed=1), 5
    proxies, scores = official_float32(kernel, temp)
    expected_sel = np.argsort(-scores, kind="stable")[:m]
    matrix, got_scores, selection = run_layer(kernel, temp, "faithful", m)
    np.testing.assert_array_equal(selection, expected_sel)
    np.testing.assert_allclose(matrix, proxies[expected_sel], rtol=2e-4, atol=1e-7)
    fused = proxies[expected_sel] @ rows_of(kernel)  # fused filter i = sum_l P_jl w_l
    from dcff_jax.model import fuse
    np.testing.assert_allclose(rows_of(np.asarray(fuse(kernel, matrix))), fused, rtol=1e-4,
                               atol=1e-7)


def test_faithful_keeps_the_epoch0_selection_once_scores_turn_nan():
    kernel, m = bank(seed=2), 4
    _, scores0, sel0 = run_layer(kernel, 1.0, "faithful", m)
    trained = kernel + bank(seed=3, scale=0.05)  # weights moved a lot during epoch 0
    matrix, scores1, sel1 = run_layer(trained, fusion.temperature(1, 300), "faithful", m,
                                      first=False, previous_scores=np.asarray(scores0),
                                      previous_selection=np.asarray(sel0))
    np.testing.assert_array_equal(scores1, scores0)  # NaN scores are not taken
    np.testing.assert_array_equal(sel1, sel0)
    np.testing.assert_array_equal(matrix, np.eye(kernel.shape[-1], dtype=np.float32)[sel0])


@pytest.mark.parametrize("temp", TEMPERATURES)
def test_stable_scores_match_float64_and_never_nan(temp):
    kernel, m = bank(seed=4), 5
    proxies, scores = exact_float64(kernel, temp)
    matrix, got_scores, selection = run_layer(kernel, temp, "stable", m)
    assert np.all(np.isfinite(got_scores))
    np.testing.assert_allclose(got_scores, scores, rtol=1e-3, atol=1e-5 * np.abs(scores).max())
    expected_sel = np.argsort(-scores, kind="stable")[:m]
    np.testing.assert_array_equal(selection, expected_sel)
    np.testing.assert_allclose(matrix, proxies[expected_sel], rtol=1e-3, atol=1e-6)


def test_stable_score_at_large_temperature_is_the_distance_sum():
    """dcff.md §3.4: for T >~ 10 the exact criterion is (T / n) sum_k D_jk."""
    kernel = bank(seed=5)
    rows = rows_of(kernel).astype(np.float64)
    dist = np.sqrt(((rows[:, None] - rows[None]) ** 2).sum(-1))
    _, scores, _ = run_layer(kernel, 1e4, "stable", 3)
    np.testing.assert_allclose(scores, 1e4 * dist.sum(1) / len(rows), rtol=1e-4)


def test_stable_mode_keeps_slots_of_filters_that_stay_selected():
    previous = np.array([0, 1, 2, 3], np.int32)
    scores = np.array([0.0, 5.0, 0.1, 4.0, 6.0, 7.0], np.float32)
    top = np.array([5, 4, 1, 3], np.int32)
    slots = np.asarray(jax.jit(fusion.keep_slots)(previous, top, scores))
    # 1 and 3 keep slots 1 and 3; freed slots 0 and 2 take 5 then 4 (descending score).
    np.testing.assert_array_equal(slots, [5, 1, 4, 3])
    unchanged = np.asarray(fusion.keep_slots(previous, np.array([3, 2, 1, 0]), scores))
    np.testing.assert_array_equal(unchanged, previous)


def test_temperature_schedule_values():
    """dcff.md §2.2: T(0) = 1, T(E) = 1e4, the same table for E = 90, 180 and 300."""
    table = {0: 1.0, 1: 4621.7, 2: 7616.2, 3: 9051.6, 4: 9640.3, 5: 9866.2, 6: 9950.6,
             8: 9993.3, 10: 9999.1}
    for total in (90, 180, 300):
        for epoch, value in table.items():
            assert round(fusion.temperature(epoch, total), 1) == value
        assert fusion.temperature(total - 1, total) == pytest.approx(1e4, abs=0.05)
        assert fusion.temperature(total, total) == pytest.approx(1e4, rel=1e-12)
    assert fusion.temperature(0, 300) == pytest.approx(1.0, abs=1e-9)
    # The closed form of the code for one value, written out independently.
    e_neg = math.exp(-300)
    a = 2 * (1e4 - 1) * (1 + e_neg) / (1 - e_neg)
    assert fusion.temperature(1, 300) == pytest.approx(a / (1 + math.exp(-1)) + 1 - a / 2)


def test_stable_update_reselects_when_the_weights_force_it_and_keeps_staying_slots():
    """A bank whose isolated filters are known: after moving one selected filter into the
    crowd and one unselected filter far out, the stable update must select the new outlier,
    drop the one that joined the crowd, and leave the slots of the filters that stayed.
    Mutants that failed it: stable never re-selecting; re-selecting without keeping slots."""
    positions = np.array([0.0, 0.1, 0.2, 5.0, 10.0, -8.0, 0.05, 0.15], np.float32)
    kernel = positions.reshape(1, 1, 1, -1) * np.ones((3, 3, 2, 1), np.float32)
    m, temp = 3, 100.0
    _, scores0, sel0 = run_layer(kernel, temp, "stable", m)
    assert set(np.asarray(sel0)) == {3, 4, 5}  # the three outliers
    moved = positions.copy()
    moved[3], moved[1] = 0.12, 7.0  # 3 joins the crowd, 1 becomes an outlier
    kernel1 = moved.reshape(1, 1, 1, -1) * np.ones((3, 3, 2, 1), np.float32)
    matrix, _, sel1 = run_layer(kernel1, temp, "stable", m, first=False,
                                previous_scores=np.asarray(scores0),
                                previous_selection=np.asarray(sel0))
    sel0, sel1 = np.asarray(sel0), np.asarray(sel1)
    assert set(sel1) == {1, 4, 5}
    for slot in range(m):  # 4 and 5 stay in their slots; 1 takes the slot 3 freed
        assert sel1[slot] == (1 if sel0[slot] == 3 else sel0[slot])
    faithful_sel = run_layer(kernel1, fusion.temperature(1, 300), "faithful", m, first=False,
                             previous_scores=np.asarray(scores0), previous_selection=sel0)[2]
    np.testing.assert_array_equal(faithful_sel, sel0)  # the faithful contrast never re-selects
