"""The PSS-Net training step and the DCFF fusion update against the PyTorch reference, value
by value, in float64 (issue #17 part 1). The DCFF tests are at the end of the file.

JAX runs in a subprocess with x64 enabled (the step's code unchanged: every "at least
float32" cast keeps float64); the reference (``benchmarks/torch_reference.py``: the sliced
supernet and ``pss_reference_step``, written from pssnet.md §7, with its four forwards) runs
here in double from the same weights and the same normalised batch (the step's own
``images``, in float64 under x64). At test sizes float32 results of the same formula differ
by up to 1e-3, so only float64 can tell a bug from rounding; the comparison is normwise
relative, 1e-7.

Compared: the three loss terms and the middle subnet's score, the summed gradients of step 1
(every tensor), the change of the parameters over 3 steps of Nesterov SGD with weight decay on kernels
only and the cosine schedule with linear warm-up of the config, and BN running statistics after step 1 under
the stated rule (``check_running_stats``): PyTorch keeps the unbiased batch variance, JAX the
biased one; PyTorch's step has a fourth BN update (the score forward); channels a subnet
does not use are updated by the JAX masked BN (with the statistics of the masked conv's
output) and not by PyTorch, so they are not compared (recalibration before any evaluation
overwrites them).

Mutants tried (each failed here): KL(student || teacher) instead of KL(teacher || student)
(kl_mid, 1e-2 off), the three gradients averaged instead of summed in the update (the change
of the parameters, 0.68 off), the score's sign flipped (score), weight decay on every
parameter (0.24 off), Nesterov off (0.32 off), the warm-up ramp (0.5 + step) / warm-up steps
instead of (1 + step) / warm-up steps (learning rate, 0.5 off).
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, require

torch = require("torch")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import torch_reference  # noqa: E402
from test_benchmarks import _load, sliced_mobilenet_tensors  # noqa: E402
from pssnet_jax.space import make_space, resolution_range, stage_choices  # noqa: E402

# 32 images: on 8 (late layers see 1 x 1 maps, BN over 8 values) the first steps are chaotic
# enough that 1e-12 differences after step 1 grow to 1e-6 by step 3; on 32, to 3e-9.
STEPS, TOTAL_STEPS, BATCH = 3, 10, 32
JAX_STEPS = f"""
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from common_jax import data, optim
from pssnet_dcff import api
from pssnet_jax import supernet
from pssnet_jax.space import Subnet, space_from_config
from pssnet_jax.step import StepFunctions

config = api.load_config("configs/pssnet/embedded.py")
info = data.dataset_info("embedded")
space = space_from_config(config, info)
full, low, high = space.full_arch, space.min_subnet(), space.max_subnet()
mid = Subnet(20, tuple(h if i % 2 else lo for i, (lo, h) in
                       enumerate(zip(low.channels, high.channels))))
model = supernet.build_supernet(full, dtype=jnp.float64, depthwise_impl="conv")
rng = np.random.default_rng(0)
images = rng.integers(0, 256, ({BATCH}, 28, 28, 1), dtype=np.uint8)
labels = rng.integers(0, 10, {BATCH}).astype(np.int32)
variables = model.init(jax.random.key(1), jnp.zeros((1, 28, 28, 1)),
                       supernet.widths_of(full), 28, train=False)
variables = jax.tree.map(lambda v: np.asarray(v, np.float64), variables)
schedule = optim.learning_rate_schedule(config.optimizer, {TOTAL_STEPS // 2}, {TOTAL_STEPS})
tx = optim.sgd(config.optimizer, schedule)
fns = StepFunctions(model, tx, schedule, info, jnp.float64, 28)
state = dict(step=jnp.int32(0), params=variables["params"],
             batch_stats=variables["batch_stats"], opt_state=tx.init(variables["params"]))
batch = dict(image=images, label=labels)
nets = ((supernet.widths_of(full), 28),
        (supernet.widths_of(space.arch(mid)), mid.resolution),
        (supernet.widths_of(space.arch(low)), low.resolution))
grads, stats, _ = jax.jit(lambda s: fns._three(fns.subnet_grad, s, batch, nets))(state)
out = dict(initial=variables["params"], grads=fns.total_gradient(grads),
           stats=stats)
metrics = []
for _ in range({STEPS}):
    state, m = fns.step(state, batch, nets[0][0], nets[1], nets[2], mode="single")
    metrics.append({{k: float(v) for k, v in m.items()}})
out["final"] = state["params"]
arrays = {{f"{{part}}/{{k}}": np.asarray(v) for part, tree in out.items()
          for k, v in traverse_util.flatten_dict(tree, sep="/").items()}}
normalized = np.asarray(jax.jit(fns.images)(batch))  # the step's own input, float64
np.savez(sys.argv[1], images=images, normalized=normalized, labels=labels, **arrays)
print(json.dumps(dict(metrics=metrics, full=full, mid=space.arch(mid),
                      mid_resolution=mid.resolution, low=space.arch(low),
                      low_resolution=low.resolution, mean=list(info.mean),
                      std=list(info.std), lr=config.optimizer.learning_rate,
                      warmup_epochs=config.optimizer.warmup_epochs,
                      weight_decay=config.optimizer.weight_decay)))
"""


def unflatten(arrays, part: str) -> dict:
    tree: dict = {}
    for key in arrays.files:
        if key.startswith(part + "/"):
            node = tree
            *parents, leaf = key[len(part) + 1:].split("/")
            for name in parents:
                node = node.setdefault(name, {})
            node[leaf] = arrays[key]
    return tree


def assert_close(ours, theirs, what: str, tol: float = 1e-7, floor: float = 1e-300) -> None:
    """Normwise relative agreement: |ours - theirs| <= tol * max(max|theirs|, floor)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    scale = max(np.abs(theirs).max(), floor)
    error = np.abs(ours - theirs).max() / scale
    assert error <= tol, f"{what}: relative error {error:.3g} > {tol:g}"


def run_x64(script: str, path: str) -> str:
    """Runs ``script`` (which enables x64 and writes ``path``) in a fresh CPU process from
    the checkout; its last line of output."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", script, path], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return (result.stdout.strip().splitlines() or [""])[-1]


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("x64") / "jax.npz")
    return json.loads(run_x64(JAX_STEPS, path)), np.load(path)


def reference(info: dict, arrays):
    """The sliced double-precision supernet loaded with JAX's initial weights, its SGD
    (PSS-Net's decay groups, Nesterov), the normalised batch and the three nets."""
    torch.manual_seed(0)
    model = torch_reference.SlicedMobileNet(info["full"]).double().train()
    _load(model, {k: v.double() for k, v in sliced_mobilenet_tensors(
        unflatten(arrays, "initial"), info["full"]).items()})
    optimizer = torch.optim.SGD(torch_reference.pss_param_groups(model, info["weight_decay"]),
                                lr=info["lr"], momentum=0.9, nesterov=True)
    x = torch.from_numpy(arrays["normalized"].transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(arrays["labels"].astype(np.int64))
    nets = ({"arch": info["mid"], "resolution": info["mid_resolution"]},
            {"arch": info["low"], "resolution": info["low_resolution"]})
    return model, optimizer, x, y, nets


def scheduled_lr(info: dict, step: int) -> float:
    """The config's rule (common_jax/optim.py docstring): per-step cosine over the run, times
    (1 + step) / warm-up steps during the warm-up."""
    lr = 0.5 * info["lr"] * (1 + math.cos(math.pi * step / TOTAL_STEPS))
    warmup_steps = round(info["warmup_epochs"] * (TOTAL_STEPS // 2))
    return lr * (1 + step) / warmup_steps if step < warmup_steps else lr


def test_pss_step_losses_score_gradients_and_three_updates_match_the_reference(jax_run):
    info, arrays = jax_run
    model, optimizer, x, y, (mid, low) = reference(info, arrays)
    first = torch_reference.pss_reference_step(model, None, x, y, info["full"], mid, low)
    ours = info["metrics"][0]
    for key, theirs in (("loss", first["ce_max"]), ("score", first["score"]),
                        ("kl_mid", first["kl_mid"]), ("kl_min", first["kl_min"])):
        assert_close(ours[key], float(theirs), key)
    grads = sliced_mobilenet_tensors(unflatten(arrays, "grads"), info["full"])
    named = dict(model.named_parameters())
    # A bias right before a BatchNorm has a gradient of exactly 0 in exact arithmetic (its
    # rounding noise is all there is to compare): such tensors are held to 1e-7 of 1e-6 of
    # the largest gradient instead of their own scale.
    largest = max(float(p.grad.abs().max()) for p in named.values())
    for name, grad in grads.items():
        assert_close(grad, named[name].grad.numpy(), f"summed gradient of {name}",
                     floor=1e-6 * largest)
    check_running_stats(unflatten(arrays, "stats"), info, arrays, x)
    for step in range(STEPS):
        for group in optimizer.param_groups:
            group["lr"] = scheduled_lr(info, step)
        if step == 0:
            optimizer.step()
        else:
            torch_reference.pss_reference_step(model, optimizer, x, y, info["full"], mid, low)
        assert_close(info["metrics"][step]["learning_rate"], scheduled_lr(info, step),
                     "learning rate", tol=1e-7)
    # The change of every parameter over the 3 steps (not the parameter itself, which would
    # hide a wrong update behind a large initial value).
    initial = sliced_mobilenet_tensors(unflatten(arrays, "initial"), info["full"])
    final = sliced_mobilenet_tensors(unflatten(arrays, "final"), info["full"])
    for name, value in final.items():
        theirs = named[name].detach().numpy() - np.asarray(initial[name])
        assert np.abs(theirs).max() > 0, name
        assert_close(np.asarray(value) - np.asarray(initial[name]), theirs,
                     f"the change of {name} over {STEPS} steps", floor=1e-6 * largest)


def reference_batch_stats(info: dict, arrays, net: dict, x) -> dict:
    """{bn name: (batch mean, unbiased batch variance)} of one forward of ``net`` in a fresh
    reference model (its running statistics start at 0 and 1, momentum 0.1)."""
    model, _, _, _, _ = reference(info, arrays)
    with torch.no_grad():
        model(x, net["arch"], net["resolution"])
    return {name: ((m.running_mean.numpy() - 0.0) / 0.1, (m.running_var.numpy() - 0.9) / 0.1)
            for name, m in model.named_modules() if name in ("stem_bn", "tail_bn")}


def check_running_stats(stats: dict, info: dict, arrays, x) -> None:
    """BN running statistics after step 1, for the stem and tail BN channels all three nets
    use: JAX updates them with the max, middle and min nets' batch statistics in that order
    (mean 0.9^3 r0 + 0.9^2 0.1 s_max + 0.9 0.1 s_mid + 0.1 s_min), each biased variance being
    the reference's unbiased one times (n - 1) / n for that net's n = batch x H x W. (PyTorch's
    own step adds a fourth update, the score forward; channels a subnet does not use get the
    statistics of the masked conv's output in JAX and nothing in PyTorch: not compared.)"""
    nets = [{"arch": info["full"], "resolution": 28},
            {"arch": info["mid"], "resolution": info["mid_resolution"]},
            {"arch": info["low"], "resolution": info["low_resolution"]}]
    per_net = [reference_batch_stats(info, arrays, net, x) for net in nets]
    weights = (0.9 * 0.9 * 0.1, 0.9 * 0.1, 0.1)
    for name, (width, stride) in {"stem_bn": (info["low"]["stem"], 2),
                                  "tail_bn": (info["low"]["tail"], 32)}.items():
        mean, var = 0.0, 0.9 ** 3
        for weight, net, batch_stats in zip(weights, nets, per_net):
            n = BATCH * math.ceil(net["resolution"] / stride) ** 2
            mean = mean + weight * batch_stats[name][0][:width]
            var = var + weight * batch_stats[name][1][:width] * (n - 1) / n
        # The tail's input is BatchNorm output at 1 x 1, so its batch means are 0 up to
        # rounding: its means are held to 1e-7 of its variances' scale.
        assert_close(stats[name]["mean"][:width], mean, f"{name} running mean",
                     floor=float(np.abs(var).max()))
        assert_close(stats[name]["var"][:width], var, f"{name} running var")


# The DCFF fusion update of one layer (dcff_jax.fusion.update_layer) under x64 for the cases
# below; the kernel of "moved" is "start" with one kept filter made a near-copy of another
# and one dropped filter pushed far away, so that the stable selection must change.
JAX_FUSION = """
import sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from dcff_jax import fusion
rng = np.random.default_rng(0)
start = rng.normal(size=(3, 3, 8, 16))
out = {"start": start}
for mode in ("faithful", "stable"):
    kernel = start.astype(np.float32) if mode == "faithful" else start
    zeros, ident = np.zeros(16, kernel.dtype), np.arange(6, dtype=np.int32)
    rows, scores, sel = fusion.update_layer(kernel, zeros, ident, True, 1.0, 1.0, mode=mode)
    out.update({f"{mode}_first_rows": rows, f"{mode}_first_scores": scores,
                f"{mode}_first_sel": sel})
    later = start.copy()
    if mode == "stable":
        kept, dropped = np.asarray(sel), [i for i in range(16) if i not in np.asarray(sel)]
        later[..., kept[0]] = later[..., kept[1]] + 1e-3 * later[..., kept[0]]
        later[..., dropped[0]] *= 5.0
        out["moved"] = later
    temp = float(np.float32(fusion.temperature(1, 10)))
    rows, scores2, sel2 = fusion.update_layer(
        later.astype(kernel.dtype), scores, sel, False, temp, 1.0 / temp, mode=mode)
    out.update({f"{mode}_later_rows": rows, f"{mode}_later_scores": scores2,
                f"{mode}_later_sel": sel2, "later_temperature": temp})
np.savez(sys.argv[1], **{k: np.asarray(v) for k, v in out.items()})
"""


@pytest.fixture(scope="module")
def fusion_run(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("fusion") / "fusion.npz")
    run_x64(JAX_FUSION, path)
    return np.load(path)


def _bank(kernel, dtype):
    """flax (k, k, c_in, n) kernel -> the reference's (n, c_in, k, k) filter bank."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)).astype(dtype))


def test_dcff_stable_fusion_update_matches_the_reference_in_float64(fusion_run):
    """Stable mode in float64: the first update at T = 1 and, after the weights moved so that
    the selection must change, the update at T(1) = 4,622 with slot keeping: proxies, scores
    to 1e-7, the same selection. (Mutants tried: never re-select, re-select without keeping
    slots, KL(P_k || P_j): each failed here.)"""
    run = fusion_run
    first = torch_reference.dcff_fusion_update(_bank(run["start"], np.float64), 1.0, None,
                                               list(range(6)), True, "stable")
    assert run["stable_first_sel"].tolist() == first[2].tolist()
    assert_close(run["stable_first_scores"], first[1].numpy(), "stable scores, T = 1")
    assert_close(run["stable_first_rows"], first[0].numpy(), "stable proxy rows, T = 1")
    later = torch_reference.dcff_fusion_update(
        _bank(run["moved"], np.float64), float(run["later_temperature"]), first[1],
        first[2].tolist(), False, "stable")
    assert run["stable_later_sel"].tolist() == later[2].tolist()
    assert later[2].tolist() != first[2].tolist()  # the moved weights changed the selection
    assert_close(run["stable_later_scores"], later[1].numpy(), "stable scores, T(1)")
    assert_close(run["stable_later_rows"], later[0].numpy(), "stable proxy rows, T(1)",
                 floor=1e-12)


def test_dcff_faithful_fusion_update_matches_the_float32_reference(fusion_run):
    """Faithful mode computes in float32 as the official code (its NaN freeze depends on it),
    so it is held to the reference's own float32 noise (10 x the gap between the reference
    in float32 and in float64): the same selection at T = 1, and at T(1) the non-finite
    scores keep the epoch-0 ones and their selection, on both sides. (Mutant tried: always
    replacing the scores, NaN included: failed here.)"""
    run = fusion_run
    exact = torch_reference.dcff_fusion_update(_bank(run["start"], np.float64), 1.0, None,
                                               list(range(6)), True, "faithful")
    single = torch_reference.dcff_fusion_update(_bank(run["start"], np.float32), 1.0, None,
                                                list(range(6)), True, "faithful")
    assert run["faithful_first_sel"].tolist() == single[2].tolist() == exact[2].tolist()
    for index, key, what in ((1, "scores", "scores"), (0, "rows", "proxy rows")):
        noise = np.abs(single[index].double().numpy() - exact[index].numpy()).max()
        error = np.abs(run[f"faithful_first_{key}"] - exact[index].numpy()).max()
        assert error <= 10 * noise + 1e-12, f"faithful {what}: {error:.3g} vs noise {noise:.3g}"
    temp = float(run["later_temperature"])
    later = torch_reference.dcff_fusion_update(_bank(run["start"], np.float32), temp,
                                               single[1], single[2].tolist(), False,
                                               "faithful")
    assert np.array_equal(later[1].numpy(), single[1].numpy())  # non-finite: kept
    assert np.array_equal(run["faithful_later_scores"], run["faithful_first_scores"])
    assert run["faithful_later_sel"].tolist() == later[2].tolist() == single[2].tolist()
    assert set(np.unique(run["faithful_later_rows"])) <= {0.0, 1.0}  # one-hot rows


# Three DCFF training steps of the fused ResNet-20 of configs/dcff/embedded.py (stable mode,
# fusion matrices of the first update at T = 1, so every kept filter mixes the whole bank)
# through the trainer's own compiled step (make_train_step with fused_variables), the model
# built in float64.
JAX_DCFF_STEPS = """
import functools, sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from common_jax import models, run as run_lib
from common_jax.models import resnet_cifar
from common_jax.plain_step import make_train_step
from dcff_jax import fusion_state, train as dcff_train
from dcff_jax.model import FusedConv
from pssnet_dcff import api

config = api.load_config("configs/dcff/embedded.py", "stable")
arch, banks = dcff_train.compact(config)
run = run_lib.setup(config, arch)
# the step's input in float64 too (config checks allow only float32/bfloat16; test-only entry)
models.DTYPES["float64"] = jnp.float64
run.config.compute_dtype = "float64"
model = resnet_cifar.build(arch, dtype=jnp.float64,
                           conv=functools.partial(FusedConv, full_widths=banks))
variables = jax.jit(lambda key: model.init(key, jnp.zeros((1, 28, 28, 1)), train=False))(
    jax.random.key(0))
variables = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), variables)
params = variables["params"]
state = dict(step=jnp.int32(0), params=params, batch_stats=variables["batch_stats"],
             opt_state=run.tx.init(params), **fusion_state.initial(variables))
state = fusion_state.updated(state, 0, 10, config.dcff)
rng = np.random.default_rng(0)
batch = dict(image=rng.integers(0, 256, (32, 28, 28, 1), dtype=np.uint8),
             label=rng.integers(0, 10, 32).astype(np.int32))
step = make_train_step(run, model, fusion_state.fused_variables)
matrices, initial = jax.device_get((state["fusion"]["matrix"], params))  # the step donates
metrics = []
for _ in range(3):
    state, m = step(state, batch)
    metrics.append({k: float(v) for k, v in m.items()})
normalized = np.asarray(run.normalize(batch["image"], jnp.float64))
flat = lambda tree: traverse_util.flatten_dict(jax.device_get(tree), sep="/")
arrays = {**{"initial/" + k: v for k, v in flat(initial).items()},
          **{"final/" + k: v for k, v in flat(state["params"]).items()},
          **{"fusion/" + k: v for k, v in flat(matrices).items()}}
np.savez(sys.argv[1], normalized=normalized, labels=batch["label"], **arrays)
import json
print(json.dumps(dict(metrics=metrics, arch=arch, full=dcff_train.models.arch_for(
    "resnet20", num_classes=10, in_channels=1), optimizer=config.optimizer.to_dict())))
"""


def test_dcff_fused_training_steps_match_the_reference_in_float64(tmp_path):
    """Losses of 3 steps and the change of every parameter (banks included: the gradient
    reaches every filter through P^T) agree to 1e-7 with the reference FusedResNetCifar
    (conv with P @ W, option-A shortcuts, CE, torch SGD with the config's momentum, Nesterov
    and weight decay on every parameter). (Mutants tried: no gradient into the bank through
    the fusion, failed at step 2's loss; the fusion matrix's rows reversed, failed at step 1's
    loss.)"""
    from test_benchmarks import fused_resnet_tensors
    path = str(tmp_path / "dcff.npz")
    info = json.loads(run_x64(JAX_DCFF_STEPS, path))
    arrays = np.load(path)
    fusion = unflatten(arrays, "fusion")
    reference_model = torch_reference.FusedResNetCifar(info["arch"], info["full"]).double()
    _load(reference_model, {k: v.double() for k, v in fused_resnet_tensors(
        unflatten(arrays, "initial"), fusion, info["arch"]).items()})
    opt = info["optimizer"]
    optimizer = torch.optim.SGD(reference_model.parameters(), lr=opt["learning_rate"],
                                momentum=opt["momentum"], nesterov=opt["nesterov"],
                                weight_decay=opt["weight_decay"])
    x = torch.from_numpy(arrays["normalized"].transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(arrays["labels"].astype(np.int64))
    for step, ours in enumerate(info["metrics"]):
        for group in optimizer.param_groups:
            group["lr"] = ours["learning_rate"]
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(reference_model(x), y)
        loss.backward()
        optimizer.step()
        assert_close(ours["loss"], loss.item(), f"loss at step {step + 1}")
    initial = fused_resnet_tensors(unflatten(arrays, "initial"), fusion, info["arch"])
    final = fused_resnet_tensors(unflatten(arrays, "final"), fusion, info["arch"])
    named = dict(reference_model.named_parameters())
    largest = max(float((named[k].detach() - initial[k].double()).abs().max()) for k in named)
    for name in named:
        theirs = named[name].detach().numpy() - initial[name].double().numpy()
        ours = final[name].double().numpy() - initial[name].double().numpy()
        assert_close(ours, theirs, f"the change of {name} over 3 steps", floor=1e-6 * largest)


def spec_mismatches(space, count: int = 60) -> list:
    """Subnets (min, max and ``count`` random ones) whose project description differs from
    the one the reference derives from the spec's tables, and stages whose width choices
    differ."""
    family = space.model
    found = [f"stage {i} choices {sorted(ours)} vs {sorted(spec)}" for i, (ours, spec) in
             enumerate(zip(stage_choices(space), torch_reference.spec_stage_choices(family)))
             if ours != spec]
    rng = np.random.default_rng(0)
    subnets = [space.min_subnet(), space.max_subnet()] + [
        space.subnet(*space.random(rng)) for _ in range(count)]
    for subnet in subnets:
        ours = space.arch(subnet)
        spec = torch_reference.spec_mobilenet_arch(family, subnet.channels)
        if json.dumps(ours, sort_keys=True) != json.dumps(spec, sort_keys=True):
            found.append(f"{subnet}: {ours} vs {spec}")
    return found


@pytest.mark.parametrize("family", ["mobilenet_v1", "mobilenet_v2"])
def test_project_supernets_match_the_spec_tables_derived_by_the_reference(family):
    """The ImageNet structure spaces (widths, strides, expansions, residual flags, stage
    width choices) equal ``torch_reference``'s own derivation from pssnet.md §2.1-2.3, which
    shares no code with the project. Planted defects that fail it: block 4's stride (below, both
    families), residual flags set on every stride-1 block, the 10% rule of make_divisible
    dropped in the project (fails MBV1)."""
    space = make_space(family, num_classes=1000, in_channels=3,
                       resolutions=resolution_range(128, 224, 8))
    assert spec_mismatches(space) == []
    space.full_arch["blocks"][4]["stride"] = 2  # a wrong stride planted in the project
    assert spec_mismatches(space, count=2)


@pytest.mark.parametrize("depth", [56, 110])
def test_dcff_compact_resnets_match_the_spec_rules_derived_by_the_reference(depth):
    """The compact CIFAR ResNets of the published cprate strings: the project's widths equal
    ``torch_reference``'s derivation from dcff.md §4.1 (its own rate parser and width rule).
    Planted defects that fail it: the stem at stage 3's rate (ResNet-110), rounding instead
    of int() (both)."""
    from dcff_jax import architectures
    from test_dcff import RATE_STRINGS
    name = f"resnet{depth}"
    compact, _ = architectures.compact_arch(name, RATE_STRINGS[name], num_classes=10,
                                            in_channels=3)
    spec = torch_reference.spec_resnet_cifar_compact(
        depth, torch_reference.spec_rates(RATE_STRINGS[name]))
    assert {"stem": compact["stem"], "stages": compact["stages"]} == spec
