"""PSS-Net's sampling rules against exact expectations (../shared/papers/pssnet.md §5-9).

Mutants these tests were checked against (each made a test here fail): p_range and t_range
swapped in ``draw``; the pool softmax at score * t instead of score / t; the conditioned
sampler drawing multipliers uniformly (instead of from the target's marginals) before
rejecting; the rejection fallback removed; the selection taking the top-scored subnet
instead of the best held-out accuracy among the top k, or looking past the top k.
"""

import types

import numpy as np
import pytest

from conftest import override
from pssnet_jax import draw as draw_lib, sampler, selection
from pssnet_jax.pools import exp_schedule
from pssnet_jax.space import Subnet
from test_pssnet import pss_tiny, sampling



def marked(i: int) -> Subnet:
    """A pool member no sampler can produce (resolution 999): tells pool draws apart."""
    return Subnet(999, (i,) * 8)


def full_pools(config, scores):
    plan, host = sampling(config)
    for target in plan.maps["flops"].targets:
        for i, score in enumerate(scores):
            host.pools["flops"].update(target, marked(i), score)
    return plan, host


@pytest.mark.parametrize("epoch", [1, 2, 3])
def test_fresh_draws_follow_p_e_and_pool_draws_follow_the_softmax_at_t_e(epoch):
    """With distinct p and t schedules, over 4,000 seeded draws at epoch e of 4: the share of
    fresh subnets is p_e (4 standard deviations) and the pool members come with frequencies
    softmax(score / t_e) (chi-square, p = 0.001)."""
    scores = [-0.2, -0.5, -1.0, -2.0, -3.0]
    config = pss_tiny(**{"pssnet.p_range": (0.9, 0.05), "pssnet.t_range": (2.0, 0.2),
                         "pssnet.pool_size": len(scores), "seed": epoch})
    plan, host = full_pools(config, scores)
    draws = 4000
    counts, fresh = np.zeros(len(scores)), 0
    for _ in range(draws):
        _, _, subnet = draw_lib.draw(plan, host, epoch, 4)
        if subnet.resolution == 999:
            counts[subnet.channels[0]] += 1
        else:
            fresh += 1
    p = exp_schedule(0.9, 0.05, epoch, 4)
    assert abs(fresh / draws - p) < 4 * np.sqrt(p * (1 - p) / draws)
    t = exp_schedule(2.0, 0.2, epoch, 4)
    weights = np.exp(np.asarray(scores) / t)
    expected = counts.sum() * weights / weights.sum()
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert chi2 < chi2_critical(len(scores) - 1), (chi2, counts, expected)


def test_a_pool_that_is_not_full_is_always_explored():
    config = pss_tiny(**{"pssnet.pool_size": 3})
    plan, host = full_pools(config, [-1.0, -2.0])  # 2 of 3
    assert all(draw_lib.draw(plan, host, 3, 4)[2].resolution != 999 for _ in range(200))


def test_conditioned_sampler_matches_rejection_from_the_target_marginals():
    """The conditioned sampler's draws follow the product of the target's marginals
    restricted to the target: compare its resolution and stage-1 multiplier distribution
    with plain rejection sampling from those marginals (independent generator)."""
    config = override(pss_tiny(), **{"pssnet.map_samples": 20000})
    plan, _ = sampling(config)
    fmap, space = plan.maps["flops"], plan.space
    target = fmap.targets[-1]  # the top target: marginals far from uniform
    rng = np.random.default_rng(0)
    ours = [sampler.sample(space, fmap, target, rng) for _ in range(1500)]
    reference, ref_rng = [], np.random.default_rng(1)
    res_p, mult_p = fmap.resolution_probs[target], fmap.mult_probs[target]
    while len(reference) < 1500:
        res = fmap.resolutions[ref_rng.choice(len(res_p), size=512, p=res_p)]
        mults = np.stack([fmap.mult_values[ref_rng.choice(len(fmap.mult_values), size=512,
                                                          p=mult_p[s])]
                          for s in range(space.num_stages)], axis=1)
        keep = sampler.target_of(fmap.metric(res, mults), fmap.start, fmap.step) == target
        reference += [space.subnet(int(r), m.tolist()) for r, m in zip(res[keep], mults[keep])]
    reference = reference[:1500]
    tested = 0
    for key in (lambda s: s.resolution, lambda s: s.channels[4], lambda s: s.channels[6],
                lambda s: s.channels[7]):
        a, b = np.asarray([key(s) for s in ours]), np.asarray([key(s) for s in reference])
        values = sorted(set(a) | set(b))
        table = np.array([[np.sum(a == v) for v in values], [np.sum(b == v) for v in values]],
                         np.float64)
        table = table[:, table.sum(0) >= 10]  # sparse cells out of the test
        if table.shape[1] < 2:  # one value only (e.g. the top target's resolution)
            assert set(a) == set(b)
            continue
        tested += 1
        expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
        chi2 = float(np.sum((table - expected) ** 2 / expected))
        assert chi2 < chi2_critical(table.shape[1] - 1), (chi2, table)
    assert tested >= 2
    top_widths = np.mean([s.channels[7] for s in ours])
    assert top_widths > space.base_widths[7] * 0.875  # the top target favours wide stages


def chi2_critical(df: int, z: float = 3.09) -> float:
    """The p = 0.001 critical value of chi-square with ``df`` degrees of freedom
    (Wilson-Hilferty; within 1% of the tables for df >= 1)."""
    return df * (1 - 2 / (9 * df) + z * np.sqrt(2 / (9 * df))) ** 3


def test_sampler_falls_back_to_a_map_sample_after_3200_rejections():
    plan, _ = sampling(pss_tiny())
    fmap, space = plan.maps["flops"], plan.space
    target = fmap.targets[0]
    calls = []

    def never_in_target(res, mults):
        calls.append(len(res))
        return np.full(len(res), -100.0)

    fmap.metric = never_in_target
    subnet = sampler.sample(space, fmap, target, np.random.default_rng(0))
    assert sum(calls) == 3200  # 50 batches of 64 rejected
    res, mults = fmap.samples[target]
    assert subnet in {space.subnet(int(r), m.tolist()) for r, m in zip(res, mults)}


def test_selection_keeps_the_best_held_out_accuracy_among_the_top_k():
    """Accuracies set by the test: the kept subnet is the most accurate of the k best-scored
    (the first of them on ties), never one ranked below k; 'rank1' keeps the top score."""
    ranked = [(marked(i), -float(i)) for i in range(6)]  # descending score
    accuracies = {0: 0.50, 1: 0.70, 2: 0.70, 3: 0.60, 4: 0.99, 5: 0.10}

    def fake(topk):
        return types.SimpleNamespace(
            config=types.SimpleNamespace(pssnet=types.SimpleNamespace(topk=topk)),
            recalibrated_stats=lambda state, subnet: f"stats {subnet.channels[0]}",
            subnet_results=lambda state, subnet, stats, split: {
                "accuracy": accuracies[subnet.channels[0]]})

    subnet, score, rank, accuracy, stats = selection.best_of_pool(fake(4), None, ranked,
                                                                  "holdout")
    assert (subnet, rank, accuracy, stats) == (marked(1), 2, 0.70, "stats 1")
    assert selection.best_of_pool(fake(5), None, ranked, "holdout")[0] == marked(4)
    assert selection.best_of_pool(fake(4), None, ranked, None)[:3] == (marked(0), 0.0, 1)
    assert selection.best_of_pool(fake(4), None, [], "holdout") is None
