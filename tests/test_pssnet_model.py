"""PSS-Net supernet: masks equal slicing, the resize, ghost BN, and the split step."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common_jax import export, models
from common_jax.data import DATASETS
from common_jax.models import ops
from conftest import python_on_devices
from pssnet_jax import space as space_lib, supernet


def test_align_corners_resize_matches_the_torch_formula():
    x = np.arange(4, dtype=np.float32).reshape(1, 4, 1, 1) * np.ones((1, 1, 3, 1), np.float32)
    up = np.asarray(ops.resize_align_corners(jnp.asarray(x), 7))[0, :, 0, 0]
    # align_corners=True: output i samples input position i * (in - 1) / (out - 1).
    np.testing.assert_allclose(up, np.arange(7) * 3 / 6, atol=1e-6)
    y = np.random.default_rng(0).normal(size=(2, 9, 9, 3)).astype(np.float32)
    down = np.asarray(ops.resize_align_corners(jnp.asarray(y), 5))
    np.testing.assert_allclose(down, y[:, ::2, ::2], atol=1e-6)  # exact grid points, no blur


def small_space(model):
    return space_lib.make_space(model, num_classes=10, in_channels=3, resolutions=(24, 28, 32),
                                small_input=True,
                                width_mult=0.25 if model == "resnet50" else 0.5)


@pytest.mark.parametrize("model,encoding", [
    (m, e) for m in ("mobilenet_v1", "mobilenet_v2") for e in ("family", "one_per_bn")] + [
    ("resnet20", "one_per_bn"), ("resnet50", "one_per_bn")])
def test_masked_supernet_equals_the_exported_sliced_subnet(model, encoding, tmp_path,
                                                           monkeypatch):
    """Also the ResNets (issue #29 part 2): resnet20's stage widths differ from subnet to
    subnet, so the option-A shortcut's padding moves (a masked shortcut that padded by the
    max net's (out - in) / 2 fails); ResNet-50's projections mask as they are."""
    if encoding == "one_per_bn" and model.startswith("mobilenet"):
        # the widths encoding of families without active_widths
        monkeypatch.delattr(models.mobilenet, "active_widths")
        monkeypatch.delattr(models.mobilenet, "with_active_widths")
    space = small_space(model)
    net = supernet.build_supernet(space.full_arch)
    images = jax.random.randint(jax.random.key(0), (4, 32, 32, 3), 0, 256).astype(jnp.uint8)
    info = DATASETS["cifar10"]
    x = (images.astype(jnp.float32) / 255 - jnp.asarray(info.mean)) / jnp.asarray(info.std)
    variables = net.init(jax.random.key(1), x, supernet.widths_of(space.full_arch), 32,
                         train=False)
    rng = np.random.default_rng(0)
    variables = {"params": variables["params"], "batch_stats": jax.tree.map(
        lambda a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape), jnp.float32),
        variables["batch_stats"])}
    for i, subnet in enumerate([space.subnet(*space.random(rng)), space.min_subnet()]):
        arch = space.arch(subnet)
        widths = supernet.widths_of(arch)
        assert isinstance(widths, dict) == (encoding == "family")
        masked = net.apply(variables, x, widths, subnet.resolution, train=False)
        path = export.export_model(str(tmp_path / f"sub{i}"), arch,
                                   supernet.slice_variables(variables, arch),
                                   image_size=subnet.resolution, info=info)
        plain, plain_vars, meta = export.load_exported(path)
        assert plain.__class__.__module__ == models.arch_family(arch).__name__
        sliced = export.predict(plain, plain_vars, meta, images)  # resizes 32 -> resolution
        np.testing.assert_allclose(sliced, masked, rtol=1e-4, atol=1e-4)


def test_ghost_batch_norm_uses_per_group_statistics():
    bn = supernet.MaskedBatchNorm(group_size=2)
    x = jax.random.normal(jax.random.key(0), (4, 3, 3, 2)) * jnp.array([1.0, 3.0]) + 5
    variables = bn.init(jax.random.key(1), x, jnp.ones(2), True)
    y, updates = bn.apply(variables, x, jnp.array([1.0, 0.0]), True, mutable=["batch_stats"])
    for rows in (slice(0, 2), slice(2, 4)):
        group, got = x[rows], y[rows]
        mean, var = group.mean((0, 1, 2)), group.var((0, 1, 2))
        expected = (group - mean) / jnp.sqrt(var + 1e-5)
        np.testing.assert_allclose(got[..., 0], expected[..., 0], rtol=1e-4, atol=1e-4)
        assert not np.any(got[..., 1])  # masked channel
    group_means = (x[:2].mean((0, 1, 2)) + x[2:].mean((0, 1, 2))) / 2
    np.testing.assert_allclose(updates["batch_stats"]["mean"], 0.1 * group_means, rtol=1e-5)


GHOST_BN_HLO = """
import json
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from pod_efficiency import collectives
from pssnet_jax import supernet
mesh = Mesh(np.array(jax.devices()), ("data",))
x = jax.device_put(jnp.ones((48, 4, 4, 8)), NamedSharding(mesh, PartitionSpec("data")))
found = {}
for group in (0, 2, 3, 4, 6, 8, 12, 16, 24):
    bn = supernet.MaskedBatchNorm(group_size=group)
    v = bn.init(jax.random.key(0), x[:2], jnp.ones(8), False)
    f = jax.jit(lambda v, x: bn.apply(v, x, jnp.ones(8), True, mutable=["batch_stats"]))
    found[group] = collectives(f.lower(v, x).compile().as_text())
print("HLO", json.dumps(found))
"""


def test_ghost_bn_groups_that_straddle_devices_are_refused_and_others_reduce_once():
    """Batch 48 on 8 CPU devices (6 images each), one masked BN compiled per group size: the
    groups ``supernet.ghost_bn_groups`` allows compile without an all-gather and the others
    all-gather (so the check refuses exactly those); whole-batch statistics cost one
    all-reduce (mean and mean square in one pass, combined). Planted defects that fail it: a
    two-pass variance (2 all-reduces), allowing every divisor of the batch."""
    out = python_on_devices(GHOST_BN_HLO, devices=8)
    found = {int(k): v for k, v in json.loads(out.split("HLO ", 1)[1]).items()}
    allowed = supernet.ghost_bn_groups(48, 8)
    assert allowed == [1, 2, 3, 6, 12, 24, 48]
    for group, ops_found in found.items():
        assert ("all-gather" in ops_found) == (group != 0 and group not in allowed), group
    assert found[0] == {"all-reduce": {"count": 1, "bytes": 2 * 8 * 4}}
    supernet.check_ghost_bn(12, 48, 8)
    with pytest.raises(ValueError, match=r"bn_group_size=16 does not fit config.batch_size=48 "
                                         r"on 8 devices \(6 images each\).*\[1, 2, 3, 6, 12"):
        supernet.check_ghost_bn(16, 48, 8)


SHARDED_GRADIENT = """
import json
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import PartitionSpec as P
jax.config.update("jax_enable_x64", True)
from common_jax import mesh as mesh_lib
from common_jax.data import DATASETS
from pod_efficiency import collectives
from pssnet_jax import space as space_lib, supernet
from pssnet_jax.step import StepFunctions, mean_cross_entropy
space = space_lib.make_space("mobilenet_v2", num_classes=10, in_channels=3, resolutions=(16,),
                             small_input=True, width_mult=0.25)
widths = supernet.widths_of(space.full_arch)
rng = np.random.default_rng(0)
batch = {"image": rng.integers(0, 256, (16, 16, 16, 3)).astype(np.uint8),
         "label": rng.integers(0, 10, 16).astype(np.int32)}
sharded = mesh_lib.global_batch(batch, mesh_lib.data_mesh())
out = {}
for group in (0, 2, 8):  # whole batch, within a device's 4 images, spanning two devices
    model = supernet.build_supernet(space.full_arch, jnp.float64, "conv", group)
    fns = StepFunctions(model, optax.sgd(0.1), lambda s: 0.1, DATASETS["cifar10"],
                        jnp.float64, 16)
    variables = model.init(jax.random.key(1), jnp.zeros((1, 16, 16, 3)), widths, 16,
                           train=False)
    variables = jax.tree.map(lambda v: np.asarray(v, np.float64), variables)
    params, stats = variables["params"], variables["batch_stats"]

    def reference(p):  # the whole batch in one program, no shard_map
        logits, updates = model.apply({"params": p, "batch_stats": stats},
                                      fns.images(batch), widths, 16, train=True,
                                      mutable=["batch_stats"])
        return mean_cross_entropy(logits, batch["label"]), updates["batch_stats"]
    # every program compiled before any runs, results fetched before the next compile (no
    # eager op on 4 devices): XLA's CPU collectives time out waiting for a device thread
    # while another program compiles (seen here)
    ref_program = jax.jit(jax.value_and_grad(reference, has_aux=True)).lower(params).compile()
    args = (params, stats, sharded, widths, fns.no_teacher(sharded), 1.0, 0.0)
    grad_program = fns.grad_program(16, args)
    state = {"step": jnp.int32(0), "params": params, "batch_stats": stats,
             "opt_state": fns.tx.init(params)}
    update = fns.update_program((state, (grad_program.out_info[0],) * 3,
                                 grad_program.out_info[1]))
    grads, new_stats, probs, metrics = jax.device_get(grad_program(*args))
    (loss, ref_stats), ref_grads = jax.device_get(ref_program(params))
    error = lambda a, b: (max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
                              for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))) /
                          max(float(np.abs(np.asarray(y)).max()) for y in jax.tree.leaves(b)))
    program_bytes = lambda fn: collectives(fn.as_text()).get("all-reduce", {}).get("bytes", 0)
    out[group] = {"grad_error": error(fns.total_gradient([grads]), ref_grads),
                  "stats_error": error(new_stats, ref_stats),
                  "loss_error": abs(float(metrics["ce"]) - float(loss)),
                  "partials_shape": list(jax.tree.leaves(grads)[0].shape[:1]),
                  "param_bytes": sum(x.nbytes for x in jax.tree.leaves(params)),
                  "grad_program_all_reduce_bytes": program_bytes(grad_program),
                  "update_all_reduce_bytes": program_bytes(update),
                  # the pinned shardings: state out replicated, partials split per device
                  "update_out_replicated": all(
                      sh.is_fully_replicated for sh in jax.tree.leaves(update.output_shardings)),
                  "partials_spec": {str(sh.spec) for sh in jax.tree.leaves(
                      grad_program.output_shardings[0])} == {str(P("data"))}}
print("SHARDED", json.dumps(out))
"""


def test_sharded_subnet_gradient_equals_the_whole_batch_one_and_is_all_reduced_once():
    """The PSS-Net gradient under shard_map on 4 CPU devices (16 images, 4 each; float64), for BN
    statistics over the whole batch, per group of 2 (within a device) and of 8 (spanning two
    devices): the per-device partial gradients sum to the gradient of the whole batch in one
    program, the BN running statistics and the loss equal it too (normwise over each tree); the gradient program
    all-reduces only BN statistics (under a tenth of the parameter bytes) and the update
    all-reduces the summed gradient once (exactly the parameter bytes; issue #27 part 3); the
    programs' pinned shardings hold (the update's state replicated, the partials split).
    Planted defects that fail it: the weights not cast to device-varying (the gradient is
    all-reduced in every subnet's program and the partials sum to 4x), spanning groups
    taken per device, the running statistics of per-device groups not averaged."""
    out = python_on_devices(SHARDED_GRADIENT, devices=4)
    found = json.loads(out.split("SHARDED ", 1)[1])
    for group, case in found.items():
        assert case["partials_shape"] == [4], group
        assert case["grad_error"] < 1e-10 and case["stats_error"] < 1e-10, (group, case)
        assert case["loss_error"] < 1e-10, (group, case)
        assert case["grad_program_all_reduce_bytes"] < 0.1 * case["param_bytes"], (group, case)
        assert case["update_all_reduce_bytes"] == case["param_bytes"], (group, case)
        assert case["update_out_replicated"] and case["partials_spec"], (group, case)


def test_batch_norm_without_groups_uses_whole_batch_statistics_and_zeroes_masked_channels():
    bn = supernet.MaskedBatchNorm(momentum=0.9)
    x = jax.random.normal(jax.random.key(0), (4, 3, 3, 3)) * jnp.array([1.0, 3.0, 2.0]) + 5
    variables = bn.init(jax.random.key(1), x, jnp.ones(3), True)
    variables = {"params": {"scale": jnp.array([2.0, 0.5, 3.0]),
                            "bias": jnp.array([0.1, -1.0, 4.0])},
                 "batch_stats": variables["batch_stats"]}
    y, updates = bn.apply(variables, x, jnp.array([1.0, 1.0, 0.0]), True,
                          mutable=["batch_stats"])
    mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
    expected = (x - mean) / jnp.sqrt(var + 1e-5) * variables["params"]["scale"] + \
        variables["params"]["bias"]
    np.testing.assert_allclose(y[..., :2], expected[..., :2], rtol=1e-4, atol=1e-4)
    assert not np.any(y[..., 2])  # masked channel: zero, not its bias
    np.testing.assert_allclose(updates["batch_stats"]["mean"], 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(updates["batch_stats"]["var"], 0.9 + 0.1 * var, rtol=1e-5)
