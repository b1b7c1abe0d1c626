"""Importing published CIFAR ResNets (``--mode=import``, common_jax/torch_import.py) gives
the logits of the PyTorch model, in float64 to 1e-10.

The PyTorch modules here are written for the test from the official DCFF code's layout
(``CompactResNet``: ``conv1``/``bn1``, ``layer{s}.{b}.conv{1,2}``/``bn{1,2}``, option-A
shortcuts that subsample and zero-pad (front (out - in) // 2), global average pool, ``fc``;
the ``OriginResNet`` baseline names its classifier ``linear``), with random weights and
non-trivial BN statistics; their key lists are pinned (ResNet-56 332 keys, ResNet-110 656).
The widths of the DCFF file are those of the config's rate string (what the import checks);
the mapping of every tensor is what the logits test.

Shown to fail during development: the conv kernels transposed to (3, 2, 1, 0) instead of
(2, 3, 1, 0) (relative error 0.022), and the BN running mean and variance swapped (NaN:
negative variances).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, launch, require
from dcff_jax import architectures

torch = require("torch")
nn, F = torch.nn, torch.nn.functional
STRIDES = (1, 2, 2)


class Block(nn.Module):
    def __init__(self, cin, mid, out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.stride, self.cin, self.out = stride, cin, out

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.stride != 1 or self.cin != self.out:
            x = x[:, :, ::self.stride, ::self.stride]
            pad = self.out - self.cin
            x = F.pad(x, (0, 0, 0, 0, pad // 2, pad - pad // 2))
        return F.relu(y + x)


class CifarResNet(nn.Module):
    """``stages``: per stage, per block (conv1 width, conv2 width)."""

    def __init__(self, stem, stages, num_classes=10, head="fc"):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        cin = stem
        for s, blocks in enumerate(stages):
            layer = []
            for b, (mid, out) in enumerate(blocks):
                layer.append(Block(cin, mid, out, STRIDES[s] if b == 0 else 1))
                cin = out
            setattr(self, f"layer{s + 1}", nn.Sequential(*layer))
        self.head = head
        setattr(self, head, nn.Linear(cin, num_classes))

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return getattr(self, self.head)(x.mean((2, 3)))


def full_widths(depth):
    n = (depth - 2) // 6
    return 16, [[[w, w]] * n for w in (16, 32, 64)]


def randomized(net, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(7)
    return net.eval()


@pytest.mark.parametrize("depth,count", [(56, 332), (110, 656)])
def test_reference_modules_have_the_official_key_layout(depth, count):
    keys = list(CifarResNet(*full_widths(depth)).state_dict())
    assert len(keys) == count
    assert keys[:6] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
                        "bn1.running_var", "bn1.num_batches_tracked"]
    assert keys[6:8] == ["layer1.0.conv1.weight", "layer1.0.bn1.weight"]
    assert keys[-2:] == ["fc.weight", "fc.bias"]


JAX_LOGITS = r"""
import sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from common_jax import export
from common_jax.models import resnet_cifar
x = np.load(sys.argv[1])["x"]
out = {}
for name in sys.argv[2:]:
    _, variables, meta = export.load_exported(name)
    model = resnet_cifar.build(meta["arch"], dtype=jnp.float64)
    variables = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), variables)
    out[name] = np.asarray(model.apply(variables, jnp.asarray(x), train=False))
np.savez(sys.argv[1] + ".out.npz", *[out[n] for n in sys.argv[2:]])
print("ok")
"""


def jax_logits(x_nhwc, directories, tmp_path):
    path = str(tmp_path / "x.npz")
    np.savez(path, x=x_nhwc)
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", JAX_LOGITS, path, *directories], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = np.load(path + ".out.npz")
    return [saved[f"arr_{i}"] for i in range(len(directories))]


def test_imported_cifar_resnets_give_the_pytorch_logits_in_float64(tmp_path):
    compact, _ = architectures.compact_arch("resnet56", _readme_rates(), num_classes=10,
                                            in_channels=3)
    dcff = randomized(CifarResNet(compact["stem"], compact["stages"]), 0)
    baseline = randomized(CifarResNet(*full_widths(56), head="linear"), 1)
    files = {"dcff_zip": (dcff, False), "dcff_legacy": (dcff, True),
             "baseline": (baseline, False)}
    for name, (net, legacy) in files.items():
        torch.save(net.state_dict(), str(tmp_path / f"{name}.pt"),
                   _use_new_zipfile_serialization=not legacy)
    configs = {"dcff_zip": "configs/dcff/resnet56_cifar10.py",
               "dcff_legacy": "configs/dcff/resnet56_cifar10.py",
               "baseline": "configs/baselines/resnet56_cifar10.py"}
    directories = []
    for name, config in configs.items():
        directory = str(tmp_path / f"export_{name}")
        result = launch(f"--config={config}", "--mode=import",
                        f"--import_from={tmp_path / f'{name}.pt'}", f"--export_dir={directory}",
                        f"--workdir={tmp_path / 'unused'}")
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip().splitlines()[-1] == directory
        directories.append(directory)
    with open(os.path.join(directories[0], "model.json")) as f:
        meta = json.load(f)
    assert meta["arch"]["stages"] == compact["stages"]
    assert round(meta["params"] / 1e6, 4) == 0.3843  # the published compact ResNet-56
    assert round(meta["flops_thop"] / 1e6, 2) == 55.84
    x = np.random.default_rng(0).normal(size=(3, 3, 32, 32))
    logits = jax_logits(x.transpose(0, 2, 3, 1), directories, tmp_path)
    for name, ours in zip(configs, logits):
        net = files[name][0]
        with torch.no_grad():
            theirs = net.double()(torch.from_numpy(x)).numpy()
        error = np.abs(ours - theirs).max() / np.abs(theirs).max()
        assert error < 1e-10, f"{name}: relative error {error:.3g}"


def _readme_rates():
    from configs.dcff.resnet56_cifar10 import RATES
    return RATES


def test_files_that_do_not_fit_are_one_line_errors(tmp_path):
    full = CifarResNet(*full_widths(56)).state_dict()
    torch.save(full, str(tmp_path / "full.pt"))
    extra = dict(full, **{"extra.weight": torch.ones(2)})
    torch.save(extra, str(tmp_path / "extra.pt"))
    (tmp_path / "notes.pt").write_text("not weights\n" * 5)
    cases = [("configs/dcff/resnet56_cifar10.py", "full.pt",
              "does not fit the config's architecture (stage1_block0/conv1: 16 filters in the "
              "file, "),
             ("configs/baselines/resnet56_cifar10.py", "extra.pt",
              "key 'extra.weight' fits no layer of this layout (1 keys left over)"),
             ("configs/baselines/resnet56_cifar10.py", "notes.pt", "not a torch file"),
             ("configs/baselines/resnet110_cifar10.py", "full.pt",
              "(stage1: 9 blocks in the file, 18 expected)"),
             ("configs/pssnet/embedded.py", "full.pt", "has no import yet")]
    for config, name, message in cases:
        result = launch(f"--config={config}", "--mode=import",
                        f"--import_from={tmp_path / name}", f"--workdir={tmp_path / 'w'}")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (name, lines)
        assert "compiled" not in result.stdout
    assert not (tmp_path / "w" / "export").exists()
