"""Baseline architectures: the flax modules agree with their counted layer lists."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from common_jax import models
from common_jax.models import ops
from common_jax.profile import totals

CASES = [("resnet56", 32, 3, 10, False), ("resnet110", 32, 3, 10, False),
         ("vgg16", 32, 3, 10, False), ("googlenet", 32, 3, 10, False),
         ("resnet50", 224, 3, 1000, False), ("mobilenet_v1", 224, 3, 1000, False),
         ("mobilenet_v2", 224, 3, 1000, False), ("mobilenet_v1", 28, 1, 10, True),
         ("mobilenet_v2", 32, 3, 10, True), ("resnet20", 28, 1, 10, False)]


def abstract_variables(arch, size):
    model = models.build_model(arch)
    x = jax.ShapeDtypeStruct((2, size, size, arch["in_channels"]), jnp.float32)
    variables = jax.eval_shape(functools.partial(model.init, train=False),
                               jax.random.key(0), x)
    logits = jax.eval_shape(functools.partial(model.apply, train=False), variables, x)
    return variables, logits


@pytest.mark.parametrize("name,size,channels,classes,small", CASES)
def test_param_shapes_match_layer_list(name, size, channels, classes, small):
    arch = models.arch_for(name, num_classes=classes, in_channels=channels, small_input=small)
    variables, logits = abstract_variables(arch, size)
    assert logits.shape == (2, classes)
    params = traverse_util.flatten_dict(variables["params"], sep="/")
    expected = {}
    for layer in models.arch_layers(arch, size):
        if layer.kind == "conv":
            expected[f"{layer.name}/kernel"] = (layer.kernel, layer.kernel,
                                                layer.in_ch // layer.groups, layer.out_ch)
            if layer.bias:
                expected[f"{layer.name}/bias"] = (layer.out_ch,)
        elif layer.kind == "bn":
            expected[f"{layer.name}/scale"] = expected[f"{layer.name}/bias"] = (layer.out_ch,)
        elif layer.kind == "linear":
            expected[f"{layer.name}/kernel"] = (layer.in_ch, layer.out_ch)
            expected[f"{layer.name}/bias"] = (layer.out_ch,)
    assert {k: tuple(v.shape) for k, v in params.items()} == expected
    assert sum(int(np.prod(v.shape)) for v in params.values()) == totals(
        models.arch_layers(arch, size))["params"]


def test_unknown_model_name_is_rejected():
    with pytest.raises(ValueError, match="model.name='resnet57'.*resnet56"):
        models.arch_for("resnet57", num_classes=10, in_channels=3)


@pytest.mark.parametrize("stride,size", [(1, 9), (2, 9), (2, 8)])
def test_depthwise_shifts_equal_grouped_conv(stride, size):
    """The CPU formulation (nine shifted multiply-adds) and XLA's grouped conv: same outputs,
    same gradients with respect to the input and the kernel."""
    x = jax.random.normal(jax.random.key(1), (2, size, size, 5))
    cotangent = None
    results = []
    for impl in ("shifts", "conv"):
        module = ops.DepthwiseConv(strides=stride, impl=impl)
        kernel = module.init(jax.random.key(0), x)["params"]["kernel"]
        out, vjp = jax.vjp(lambda k, inputs: module.apply({"params": {"kernel": k}}, inputs),
                           kernel, x)
        if cotangent is None:
            cotangent = jax.random.normal(jax.random.key(2), out.shape)
        results.append((out, *vjp(cotangent)))
    expected = -(-size // stride)
    assert results[0][0].shape == (2, expected, expected, 5)
    for ours, grouped in zip(*results):
        np.testing.assert_allclose(ours, grouped, rtol=1e-5, atol=1e-5)


def test_option_a_shortcut_pads_like_torch():
    x = jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3)
    y = ops.shortcut_option_a(x, 8, 2)
    # F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, (8-3)//2, 8-3-(8-3)//2)): 2 zero channels in front.
    assert y.shape == (2, 2, 2, 8)
    np.testing.assert_array_equal(y[..., 2:5], x[:, ::2, ::2, :])
    assert not np.any(y[..., :2]) and not np.any(y[..., 5:])
    # A negative difference crops as F.pad does: (2-3)//2 = -1 in front, 0 behind.
    np.testing.assert_array_equal(ops.shortcut_option_a(x, 2, 1), x[..., 1:])


def test_the_masked_option_a_shortcut_is_the_sliced_subnets_one():
    """In a masked supernet (max widths 16 -> 32) the shortcut of every pair of active widths,
    padding and cropping, equals the plain shortcut of the sliced input on the active output
    channels and zero beyond them (traced widths, one compiled function)."""
    rng = np.random.default_rng(0)
    full = rng.normal(size=(2, 4, 4, 16)).astype(np.float32)
    masked = jax.jit(lambda x, a, b: ops.shortcut_option_a(x, 32, 2, (a, b)))
    for active_in, active_out in ((16, 32), (8, 24), (16, 24), (13, 30), (16, 8), (11, 4)):
        x = np.where(np.arange(16) < active_in, full, 0)
        got = np.asarray(masked(x, active_in, active_out))
        want = ops.shortcut_option_a(full[..., :active_in], active_out, 2)
        np.testing.assert_array_equal(got[..., :active_out], want)
        assert not np.any(got[..., active_out:]), (active_in, active_out)


@pytest.mark.parametrize("value,expected", [(32 * 0.75, 24), (32 * 0.84, 32), (32 * 0.833, 24),
                                            (1024 * 0.75, 768), (16 * 0.75, 16), (3, 8)])
def test_make_divisible_matches_pssnet_rule(value, expected):
    assert ops.make_divisible(value) == expected
