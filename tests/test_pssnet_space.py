"""PSS-Net structure space, FLOPs, pools, schedules and the FLOPs-conditioned sampler."""

import math

import numpy as np
import pytest

from common_jax import models, profile
from pssnet_jax import sampler, space as space_lib
from pssnet_jax.pools import Pools, exp_schedule
from pssnet_jax.space import Subnet

IMAGENET_RESOLUTIONS = space_lib.resolution_range(128, 224, 8)


def imagenet_space(model, **kw):
    return space_lib.make_space(model, num_classes=1000, in_channels=3,
                                resolutions=IMAGENET_RESOLUTIONS, **kw)


# pssnet.md §3.1, verified there by running the official counter (MFLOPs).
TABLE = [("mobilenet_v1", 224, 1.0, 568.79), ("mobilenet_v1", 128, 0.75, 106.78),
         ("mobilenet_v1", 224, 0.75, 325.44), ("mobilenet_v1", 128, 1.0, 186.42),
         ("mobilenet_v1", 160, 1.0, 290.70), ("mobilenet_v1", 192, 1.0, 418.16),
         ("mobilenet_v2", 224, 1.0, 300.84), ("mobilenet_v2", 128, 0.75, 69.15),
         ("mobilenet_v2", 224, 0.75, 209.13), ("mobilenet_v2", 128, 1.0, 99.09),
         ("mobilenet_v2", 160, 1.0, 154.12), ("mobilenet_v2", 192, 1.0, 221.36)]


@pytest.mark.parametrize("model,resolution,mult,mflops", TABLE)
def test_subnet_flops_match_the_official_counter(model, resolution, mult, mflops):
    stages = 14 if model == "mobilenet_v1" else 9
    flops = space_lib.subnet_flops(model, resolution, [mult] * stages)
    assert isinstance(flops, int) and round(flops / 1e6, 2) == pytest.approx(mflops, abs=1e-9)


@pytest.mark.parametrize("model", space_lib.MODELS)
def test_vectorised_flops_equal_the_layer_profiler(model):
    space = imagenet_space(model)
    rng = np.random.default_rng(0)
    draws = [space.random(rng) for _ in range(50)]
    fast = space_lib.flops(space, [r for r, _ in draws], np.array([m for _, m in draws]))
    for (resolution, mults), value in zip(draws, fast):
        subnet = space.subnet(resolution, mults)
        layers = models.arch_layers(space.arch(subnet), resolution)
        assert value == profile.totals(layers)["flops"]


def test_width_choices_follow_the_make_divisible_rule():
    v2 = [sorted(c) for c in space_lib.stage_choices(imagenet_space("mobilenet_v2"))]
    assert v2 == [[24, 32], [16], [24], [24, 32], [48, 56, 64], [72, 80, 88, 96],
                  list(range(120, 161, 8)), list(range(240, 321, 8))]
    assert math.prod(map(len, v2)) * len(IMAGENET_RESOLUTIONS) == 41_184  # pssnet.md §2.3
    v1 = [len(c) for c in space_lib.stage_choices(imagenet_space("mobilenet_v1"))]
    assert v1 == [2, 3, 5, 5, 9, 9, 17, 17, 17, 17, 17, 17, 33, 33]  # pssnet.md §2.2


def test_subnet_identity_is_resolution_plus_channels():
    space = imagenet_space("mobilenet_v2")
    a = space.subnet(160, [0.80, 1.0, 1.0, 0.751, 0.9, 0.9, 0.9, 0.9, 0.76])
    b = space.subnet(160, [0.81, 0.8, 0.9, 0.752, 0.9, 0.9, 0.9, 0.9, 1.0])  # same rounding
    assert a == b and hash(a) == hash(b) and Subnet.from_json(a.to_json()) == a
    assert a.channels == (24, 16, 24, 24, 56, 88, 144, 288)  # the inert tail is not part of it
    with pytest.raises(ValueError, match="resolution 230 is outside the structure space"):
        space.subnet(230, [1.0] * 9)
    with pytest.raises(ValueError, match="width multiplier 0.5 is outside"):
        space.subnet(224, [0.5] + [1.0] * 8)
    with pytest.raises(ValueError, match="stage 4 width 40 is outside"):
        space.check(Subnet(224, (32, 16, 24, 32, 40, 96, 160, 320)))


def test_resolution_draws_match_the_official_distribution():
    space = imagenet_space("mobilenet_v2")
    resolutions, _ = sampler.uniform_draws(space, 240_000, np.random.default_rng(0))
    freq = {r: np.mean(resolutions == r) for r in IMAGENET_RESOLUTIONS}
    assert freq[128] == pytest.approx(1 / 24, abs=0.003)
    assert freq[224] == pytest.approx(1 / 24, abs=0.003)
    assert all(freq[r] == pytest.approx(1 / 12, abs=0.004) for r in IMAGENET_RESOLUTIONS[1:-1])


def test_pool_insert_ema_and_eviction():
    pools = Pools([100.0], capacity=3, ema=0.9)
    subnets = [Subnet(128, (i,)) for i in range(5)]
    for subnet, score in zip(subnets[:3], (-2.0, -1.0, -3.0)):
        pools.update(100.0, subnet, score)
    pools.update(100.0, subnets[0], -1.0)  # re-visit: EMA
    assert pools.entries[100.0][subnets[0]] == pytest.approx(0.9 * -2.0 + 0.1 * -1.0)
    pools.update(100.0, subnets[3], -0.5)  # over capacity: the lowest (-3.0) goes
    assert list(pools.entries[100.0]) == [subnets[0], subnets[1], subnets[3]]
    pools.update(100.0, subnets[4], -9.0)  # the new entry itself is the lowest
    assert subnets[4] not in pools.entries[100.0] and pools.size(100.0) == 3
    assert [s for s, _ in pools.ranked(100.0)] == [subnets[3], subnets[1], subnets[0]]


def test_pool_priority_is_softmax_of_score_over_temperature():
    pools = Pools([5.0], capacity=10)
    scores = [-1.0, -1.5, -3.0]
    for i, score in enumerate(scores):
        pools.update(5.0, Subnet(128, (i,)), score)
    for temperature in (1.0, 0.1, 0.01):
        expected = np.exp(np.array(scores) / temperature)
        np.testing.assert_allclose(pools.probabilities(5.0, temperature),
                                   expected / expected.sum())
    counts = np.bincount([pools.sample(5.0, 1.0, rng).channels[0] for rng in
                          [np.random.default_rng(0)] for _ in range(20000)], minlength=3)
    np.testing.assert_allclose(counts / 20000, pools.probabilities(5.0, 1.0), atol=0.015)


def test_pools_round_trip_through_json_exactly():
    pools = Pools([80.0, 90.0], capacity=4)
    rng = np.random.default_rng(3)
    for _ in range(30):
        pools.update(rng.choice([80.0, 90.0]), Subnet(int(rng.integers(128, 225)),
                                                       (int(rng.integers(3)),)),
                     float(rng.normal()))
    import json
    restored = Pools.from_json(json.loads(json.dumps(pools.to_json())))
    assert restored.entries == pools.entries
    assert [list(p) for p in restored.entries.values()] == [list(p) for p in
                                                             pools.entries.values()]


def test_schedules_follow_the_table():
    """pssnet.md §6: p_e = t_e = 0.01^(e/E) with E = 250."""
    table = {0: 1.000, 1: 0.982, 25: 0.631, 50: 0.398, 100: 0.158, 125: 0.100, 150: 0.063,
             200: 0.025, 225: 0.016, 249: 0.0102}
    for epoch, value in table.items():
        assert exp_schedule(1.0, 0.01, epoch, 250) == pytest.approx(value, abs=6e-4)


@pytest.mark.parametrize("model,targets,tilt,expected", [
    ("mobilenet_v2", (70, 300, 10), 0, [float(t) for t in range(80, 291, 10)]),
    ("mobilenet_v1", (110, 570, 10), 0, [float(t) for t in range(120, 511, 10)]),
    ("mobilenet_v1", (110, 570, 10), 100_000, [float(t) for t in range(120, 561, 10)])])
def test_map_targets_and_every_sample_lands_in_its_target(model, targets, tilt, expected):
    space = imagenet_space(model)
    fmap = sampler.build_map(space, *targets, 100_000, seed=0, tilt=tilt)
    assert list(fmap.targets) == expected
    rng = np.random.default_rng(1)
    for target in fmap.targets:
        for subnet in [sampler.sample(space, fmap, target, rng) for _ in range(4)]:
            value = profile.totals(models.arch_layers(space.arch(subnet), subnet.resolution))
            assert sampler.target_of(value["flops"] / 1e6, targets[0], targets[2]) == target
