"""Importing official PSS-Net checkpoints (``--mode=import`` with a PSS-Net config,
pssnet_jax/torch_import.py): equal logits in float64, the pools under the stated merge rule,
and an imported workdir that eval, export (the whole ladder as ONNX, a named subnet with the
stored BN statistics), train and ``init_from`` use.

The PyTorch supernets here are written for the test from the official checkpoint layout
(chenbong/PSS-Net: ``features.0`` stem, MobileNetV1 ``features.{i}`` = depthwise conv, BN,
ReLU6, pointwise conv, BN, ReLU6; MobileNetV2 ``features.{i}.body`` = [expansion conv, BN,
ReLU6], depthwise conv, BN, ReLU6, projection conv, BN, and ``features.18`` tail;
``classifier.0``; slimmable BNs with ``weight``/``bias`` and the statistics under ``bn``;
a subnet slices the first channels, its expansion is 6x its actual input, inputs are resized
with align-corners bilinear interpolation). Their key lists are pinned (164 and 314 keys).

Shown to fail during development: the depthwise kernel read as (k, k, C, 1) instead of
(k, k, 1, C) and the linear layer not transposed (shape errors in the float64 test), the BN
mean and variance swapped (NaN: negative variances), the ``module.`` prefix not stripped
(key 'module.features.0.0.weight' fits no PSS-Net supernet layout), and the merge rule
keeping the first score of a duplicate instead of the highest (the imported pools differ).
"""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, launch, require

torch = require("torch")
nn, F = torch.nn, torch.nn.functional
V1_POINTWISE = (64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)
V1_STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)
V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(value, divisor=8):
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


class SlimConv(nn.Conv2d):
    def forward(self, x, out=None):
        cin = x.shape[1]
        if self.groups > 1:  # depthwise: as many filters as input channels
            return F.conv2d(x, self.weight[:cin], None, self.stride, self.padding, 1, cin)
        return F.conv2d(x, self.weight[:out, :cin], None, self.stride, self.padding)


class SlimBN(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.bn = nn.BatchNorm2d(channels, affine=False)

    def forward(self, x):
        c = x.shape[1]
        return F.batch_norm(x, self.bn.running_mean[:c], self.bn.running_var[:c],
                            self.weight[:c], self.bias[:c], False, 0.0, self.bn.eps)


def unit(cin, cout, kernel, stride=1, depthwise=False):
    return [SlimConv(cin, cout, kernel, stride, kernel // 2, groups=cin if depthwise else 1,
                     bias=False), SlimBN(cout), nn.ReLU6()]


class OfficialSupernet(nn.Module):
    """The official MobileNetV1 (``version=1``) or V2 supernet of base widths ``width`` x the
    ImageNet ones; ``forward(x, resolution, stage_channels)`` runs one subnet."""

    def __init__(self, version, width=1.0, num_classes=1000, in_channels=3):
        super().__init__()
        self.version, stem = version, make_divisible(32 * width)
        features, cin, self.plan = [nn.Sequential(*unit(in_channels, stem, 3, 2))], stem, []
        if version == 1:
            for out, stride in zip(V1_POINTWISE, V1_STRIDES):
                out = make_divisible(out * width)
                features.append(nn.Sequential(*unit(cin, cin, 3, stride, True),
                                              *unit(cin, out, 1)))
                cin = out
        else:
            for stage, (t, c, n, s) in enumerate(V2_STAGES):
                out = make_divisible(c * width)
                for i in range(n):
                    mid, stride = make_divisible(cin * t), s if i == 0 else 1
                    body = (unit(cin, mid, 1) if t != 1 else []) + unit(
                        mid, mid, 3, stride, True) + unit(mid, out, 1)[:2]
                    block = nn.Module()
                    block.body = nn.Sequential(*body)
                    features.append(block)
                    self.plan.append((stage + 1, t, stride == 1 and cin == out))
                    cin = out
            features.append(nn.Sequential(*unit(cin, 1280, 1)))
            cin = 1280
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Linear(cin, num_classes))

    def forward(self, x, resolution, channels):
        if x.shape[-1] != resolution:
            x = F.interpolate(x, (resolution, resolution), mode="bilinear", align_corners=True)
        stem = self.features[0]
        x = F.relu6(stem[1](stem[0](x, channels[0])))
        for i, block in enumerate(self.features[1:len(self.features) - (self.version == 2)]):
            if self.version == 1:
                x = F.relu6(block[1](block[0](x)))
                x = F.relu6(block[4](block[3](x, channels[i + 1])))
                continue
            stage, t, residual = self.plan[i]
            y, layers = x, list(block.body)
            if t != 1:
                y = F.relu6(layers[1](layers[0](y, make_divisible(x.shape[1] * 6))))
                layers = layers[3:]
            y = F.relu6(layers[1](layers[0](y)))
            y = layers[4](layers[3](y, channels[stage]))
            x = y + x if residual else y
        if self.version == 2:
            tail = self.features[-1]
            x = F.relu6(tail[1](tail[0](x, 1280)))
        x = x.mean((2, 3))
        linear = self.classifier[0]
        return F.linear(x, linear.weight[:, :x.shape[1]], linear.bias)

    def base_channels(self):
        """Full width of every stage (V1: 14, V2: the 8 of the subnets' channel lists)."""
        if self.version == 1:
            return [self.features[0][0].out_channels] + [b[3].out_channels
                                                         for b in self.features[1:]]
        outs = {stage: block.body[-2].out_channels
                for (stage, _, _), block in zip(self.plan, self.features[1:])}
        return [self.features[0][0].out_channels] + [outs[s] for s in sorted(outs)]


def randomized(net, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, SlimBN):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.bn.running_mean.normal_(0, 0.2)
                module.bn.running_var.uniform_(0.5, 2.0)
                module.bn.num_batches_tracked.fill_(7)
    return net.eval()


def channels_of(net, mults):
    return [make_divisible(b * m) for b, m in zip(net.base_channels(), mults)]


def official_file(path, net, arch_pools=None, last_epoch=249):
    """Saves ``net`` as train.py's checkpoint: DataParallel keys, optimizer and scheduler
    state, arch_pools and the Python, NumPy and torch RNG states."""
    model = {f"module.{k}": v for k, v in net.state_dict().items()}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    torch.save({"model": model, "optimizer": optimizer.state_dict(),
                "lr_scheduler": {"last_epoch": last_epoch, "base_lrs": [0.1]},
                "last_epoch": last_epoch, "arch_pools": arch_pools or {"pools": {}},
                "rng_state": {"python": random.getstate(), "numpy": np.random.get_state(),
                              "torch": torch.get_rng_state()}}, path)


def test_reference_supernets_have_the_official_key_layout():
    v1 = list(OfficialSupernet(1).state_dict())
    assert len(v1) == 164
    assert v1[:7] == ["features.0.0.weight", "features.0.1.weight", "features.0.1.bias",
                      "features.0.1.bn.running_mean", "features.0.1.bn.running_var",
                      "features.0.1.bn.num_batches_tracked", "features.1.0.weight"]
    assert "features.13.4.bn.running_var" in v1 and v1[-2:] == ["classifier.0.weight",
                                                                "classifier.0.bias"]
    v2 = OfficialSupernet(2).state_dict()
    assert len(v2) == 314 and list(v2)[-2:] == ["classifier.0.weight", "classifier.0.bias"]
    assert "features.1.body.3.weight" in v2 and "features.1.body.6.weight" not in v2
    assert v2["features.2.body.6.weight"].shape == (24, 96, 1, 1)
    assert v2["features.18.0.weight"].shape == (1280, 320, 1, 1)


def test_checkpoints_that_do_not_fit_are_refused_before_anything_is_written(tmp_path):
    from common_jax.torch_import import ImportMismatch
    from configs.pssnet.embedded import get_config
    from conftest import override
    from pssnet_dcff import api
    config = override(get_config(), **{"model.width_mult": 0.35, "pssnet.targets": (0.3, 1.1, 0.1),
                                       "pssnet.map_samples": 2000})
    v1, wide = str(tmp_path / "v1.pt"), str(tmp_path / "wide.pt")
    official_file(v1, OfficialSupernet(1, 0.35, num_classes=10, in_channels=1))
    official_file(wide, OfficialSupernet(2, 0.5, num_classes=10, in_channels=1))
    workdir = str(tmp_path / "w")
    for source, message in (
            (v1, "a PSS-Net mobilenet_v1 checkpoint, but config.model.name='mobilenet_v2'"),
            (wide, r"features.2.body.6.weight has shape \(16, 48, 1, 1\), the config's "
                   r"supernet needs \(8, 48, 1, 1\)")):
        with pytest.raises(ImportMismatch, match=message):
            api.import_published(config, workdir, source)
        assert not os.path.exists(workdir)
    os.makedirs(os.path.join(workdir, "checkpoints"))
    with pytest.raises(ValueError, match="already holds checkpoints/; import into a new"):
        api.import_published(config, workdir, wide)
    assert os.listdir(workdir) == ["checkpoints"]


JAX_LOGITS = r"""
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from common_jax import torch_files
from common_jax.torch_import import state_dict_of
from pssnet_jax import space as space_lib, supernet, torch_import
from pssnet_jax.space import Subnet
x = np.load(sys.argv[1])["x"]
out = []
for case in json.loads(sys.argv[2]):
    space = space_lib.make_space(case["model"], num_classes=1000, in_channels=3,
                                 resolutions=case["resolutions"])
    state = state_dict_of(torch_files.load(case["path"]), case["path"])
    variables = torch_import.supernet_variables(state, case["path"], space)
    variables = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), variables)
    model = supernet.build_supernet(space.full_arch, dtype=jnp.float64)
    for resolution, channels in case["subnets"]:
        widths = supernet.widths_of(space.arch(Subnet(resolution, tuple(channels))))
        out.append(np.asarray(model.apply(variables, jnp.asarray(x), widths, resolution,
                                          train=False)))
np.savez(sys.argv[1] + ".out.npz", *out)
"""


@pytest.mark.slow
def test_imported_supernets_give_the_pytorch_logits_in_float64(tmp_path):
    """Max net, min net and a random middle subnet of both versions, on 96 px inputs
    resized inside the model to 96, 64 and 80 px."""
    rng = np.random.default_rng(0)
    cases, expected = [], []
    x = rng.normal(size=(2, 3, 96, 96))
    for version, stages in ((1, 14), (2, 8)):
        net = randomized(OfficialSupernet(version), version).double()
        path = str(tmp_path / f"pss_mbv{version}.pt")
        official_file(path, net)
        middle = np.round(rng.uniform(0.75, 1.0, stages), 3)
        subnets = [(96, channels_of(net, [1.0] * stages)),
                   (64, channels_of(net, [0.75] * stages)), (80, channels_of(net, middle))]
        cases.append({"path": path, "model": f"mobilenet_v{version}",
                      "resolutions": [64, 80, 96], "subnets": subnets})
        with torch.no_grad():
            expected += [net(torch.from_numpy(x), r, c).numpy() for r, c in subnets]
    data = str(tmp_path / "x.npz")
    np.savez(data, x=x.transpose(0, 2, 3, 1))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", JAX_LOGITS, data, json.dumps(cases)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = np.load(data + ".out.npz")
    for i, theirs in enumerate(expected):
        error = np.abs(saved[f"arr_{i}"] - theirs).max() / np.abs(theirs).max()
        assert error < 1e-10, f"case {i}: relative error {error:.3g}"


SMALL = ["--config=configs/pssnet/embedded.py", "--config.dataset.synthetic=True",
         "--config.dataset.num_train_examples=256", "--config.dataset.holdout_examples=64",
         "--config.dataset.num_eval_examples=64", "--config.batch_size=64",
         "--config.num_epochs=2", "--config.async_checkpoints=False",
         "--config.model.width_mult=0.35", "--config.pssnet.resolutions=(20,28,4)",
         "--config.pssnet.targets=(0.3,1.1,0.1)", "--config.pssnet.map_samples=4000",
         "--config.pssnet.topk=1", "--config.pssnet.recal_batches=1",
         "--config.export.latency_runs=1", "--config.export.latency_batches=(1,)"]


POOL_SIZE = 10  # configs/pssnet/embedded.py


def official_pools(net, space):
    """arch_pools of three FLOPs targets (at these small widths many keys share a subnet;
    one subnet is added under another key with other float multipliers), one member filed
    under the wrong target, and a latency pool; and the pools the import must make of them:
    one entry per subnet with the highest score of its keys, at the place of its first key,
    the best ``POOL_SIZE`` of them; and the number of keys merged."""
    from pssnet_jax import sampler, space as space_lib
    rng = np.random.default_rng(1)
    resolutions = rng.choice([20, 24, 28], 60)
    mults = np.round(rng.uniform(0.75, 1.0, (60, 9)), 3)
    flops_m = space_lib.flops(space, resolutions, mults) / 1e6
    targets = sampler.target_of(flops_m, 0.3, 0.1)
    chosen = [t for t in sorted(set(targets.tolist())) if np.sum(targets == t) >= 3][:3]

    def key(i, m=None):
        m = mults[i] if m is None else m
        return str({"model_name": "mobilenet_v2", "infer_metric_type": "flops",
                    "resolution": int(resolutions[i]), "stage_cout_mults": [float(v) for v in m],
                    "infer_metric": float(flops_m[i]), "infer_metric_target": float(targets[i])})

    pools, members = {}, {}
    for target in chosen:
        rows = np.flatnonzero(targets == target)
        pools[target] = {key(i): float(-rng.uniform(1, 3)) for i in rows}
        members[target] = [((int(resolutions[i]), tuple(channels_of(net, mults[i]))),
                            pools[target][key(i)]) for i in rows]
    first = np.flatnonzero(targets == chosen[0])[0]
    for stage in range(9):  # the same subnet under another key, with a higher score
        twin = mults[first].copy()
        twin[stage] = np.round(twin[stage] + (0.001 if twin[stage] < 1 else -0.001), 3)
        if channels_of(net, twin) == channels_of(net, mults[first]):
            break
    assert channels_of(net, twin) == channels_of(net, mults[first])
    pools[chosen[0]][key(first, twin)] = 0.0
    members[chosen[0]].append((members[chosen[0]][0][0], 0.0))
    stray = np.flatnonzero(targets == chosen[1])[0]
    pools[chosen[2]][key(stray)] = -0.5  # FLOPs of chosen[1]: not kept
    expected, merged = {}, 0
    for target, entries in members.items():
        best = {}
        for subnet, score in entries:
            merged += subnet in best
            best[subnet] = max(score, best.get(subnet, -np.inf))
        kept = sorted(best.values(), reverse=True)[:POOL_SIZE]  # the config's pool size
        expected[target] = [(r, list(c), v) for (r, c), v in best.items() if v in kept]
    return {"max_size": 50, "infer_metric_target_list": {"flops": chosen},
            "pools": {"flops": pools, "latency_gpu": {100: {key(first): -1.0}}}}, expected, merged


def host_pools(workdir, step):
    with open(os.path.join(workdir, "checkpoints", str(step), "host", "metadata")) as f:
        pools = json.load(f)["method"]["pools"]["flops"]["pools"]
    return {float(t): [(e["resolution"], e["channels"], e["score"]) for e in entries]
            for t, entries in pools.items() if entries}


def run_ok(*args):
    result = launch(*SMALL, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_imported_workdir_evaluates_exports_trains_and_fine_tunes(tmp_path):
    from common_jax import export
    from pssnet_jax import space as space_lib
    net = randomized(OfficialSupernet(2, width=0.35, num_classes=10, in_channels=1), 3)
    space = space_lib.make_space("mobilenet_v2", num_classes=10, in_channels=1,
                                 resolutions=(20, 24, 28), width_mult=0.35)
    arch_pools, expected, merged = official_pools(net, space)
    source, workdir = str(tmp_path / "checkpoint_000.pt"), str(tmp_path / "imported")
    official_file(source, net, arch_pools, last_epoch=0)
    imported = run_ok("--mode=import", f"--import_from={source}", f"--workdir={workdir}")
    assert imported.stdout.strip().splitlines()[-1] == workdir
    assert "left out the 1 latency_gpu pools" in imported.stdout
    with open(os.path.join(workdir, "import.json")) as f:
        report = json.load(f)
    assert (report["step"], report["epochs_done"]) == (3, 1)  # 192 training images / 64
    counts = report["flops_pools"]
    assert (counts["merged"], counts["off_target"], counts["kept"]) == (
        merged, 1, sum(len(v) for v in expected.values()))
    assert merged > 1 and counts["evicted"] > 0
    assert counts["max_flops_difference_m"] < 1e-9
    assert host_pools(workdir, 3) == expected
    with open(os.path.join(workdir, "subnets.json")) as f:
        kept = json.load(f)
    assert kept["selected"] is False and len(kept["subnets"]) == len(expected)
    assert [e["score"] for e in kept["subnets"]] == [max(s for *_, s in v)
                                                     for _, v in sorted(expected.items())]

    ladder_dir = str(tmp_path / "ladder")
    run_ok("--mode=export", f"--workdir={workdir}", "--config.export.all=True",
           "--config.export.format=onnx", f"--export_dir={ladder_dir}")
    with open(os.path.join(ladder_dir, "ladder.json")) as f:
        rungs = json.load(f)["rungs"]
    assert len(rungs) == len(expected) + 2
    assert all(os.path.getsize(os.path.join(ladder_dir, r["directory"], r["artifact"])) > 1000
               for r in rungs)

    # the min net with the file's stored statistics gives the PyTorch logits
    low = channels_of(net, [0.75] * 9)
    named = str(tmp_path / "min_net")
    run_ok("--mode=export", f"--workdir={workdir}", "--config.export.recalibrate=False",
           f"--config.export.subnet={json.dumps({'resolution': 20, 'channels': low})}",
           f"--export_dir={named}")
    model, variables, meta = export.load_exported(named)
    assert meta["bn_recalibrated"] is False and meta["subnet"]["channels"] == low
    x = torch.from_numpy(np.random.default_rng(2).normal(size=(2, 1, 28, 28)).astype(np.float32))
    with torch.no_grad():
        theirs = net(x, 20, low).numpy()
        small = F.interpolate(x, (20, 20), mode="bilinear", align_corners=True).numpy()
    ours = np.asarray(model.apply(variables, small.transpose(0, 2, 3, 1), train=False))
    assert np.abs(ours - theirs).max() / np.abs(theirs).max() < 1e-4

    run_ok("--mode=eval", f"--workdir={workdir}")
    with open(os.path.join(workdir, "subnets.json")) as f:
        selected = json.load(f)
    assert "selected" not in selected and selected["min"]["test_accuracy"] is not None
    resumed = run_ok("--mode=train", f"--workdir={workdir}", "--stop_after=4")
    assert "resumed from checkpoint at step 3" in resumed.stdout
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "4"))
    tuned = run_ok("--mode=train", f"--workdir={tmp_path / 'tuned'}", "--stop_after=1",
                   f"--config.init_from={workdir}")
    assert "initialised the supernet and its pools" in tuned.stdout
    assert host_pools(str(tmp_path / "tuned"), 1)  # the pools came along (and were updated)
