"""Importing published CIFAR ResNets, VGG-16s, GoogLeNets, ResNet-50s and MobileNetV2s
(``--mode=import``, common_jax/torch_import.py) gives the logits of the PyTorch model, in
float64 to 1e-10.

The PyTorch modules here are written for the test from the official DCFF code's layout
(``CompactResNet``: ``conv1``/``bn1``, ``layer{s}.{b}.conv{1,2}``/``bn{1,2}``, option-A
shortcuts that subsample and zero-pad (front (out - in) // 2), global average pool, ``fc``;
the ``OriginResNet`` baseline names its classifier ``linear``; ``Compact_VGG``:
``features.{i}`` conv with bias + BN + ReLU or a max-pool, ``classifier``; GoogLeNet:
``pre_layers``, inceptions ``a3``-``b5`` whose branches ``b1``-``b4`` are Sequentials of conv,
BN, ReLU (``b4`` after a max-pool), ``linear``), with random weights and non-trivial BN
statistics; their key lists are pinned (ResNet-56 332 keys, ResNet-110 656, VGG-16 93,
GoogLeNet 450, ResNet-50 in torchvision's layout 320 keys and 25,557,032 parameters (also
the official DCFF ImageNet ``CompactResNet``'s layout), torchvision's MobileNetV2 314 keys and
3,504,872 parameters).
The widths of the DCFF file are those of the config's rate string (what the import checks);
the mapping of every tensor is what the logits test.

Shown to fail during development: the conv kernels transposed to (3, 2, 1, 0) instead of
(2, 3, 1, 0) (relative error 0.022), and the BN running mean and variance swapped (NaN:
negative variances).
"""

import importlib
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


def add_stages(net, cin, stages, strides, make_block):
    """Sets ``net.layer{s}`` to the Sequential of ``make_block(cin, widths, stride, first)``
    blocks (whose ``out`` is the next input width); returns the last width."""
    for s, blocks in enumerate(stages):
        layer = []
        for b, widths in enumerate(blocks):
            layer.append(make_block(cin, widths, strides[s] if b == 0 else 1, b == 0))
            cin = layer[-1].out
        setattr(net, f"layer{s + 1}", nn.Sequential(*layer))
    return cin


class CifarResNet(nn.Module):
    """``stages``: per stage, per block (conv1 width, conv2 width)."""

    def __init__(self, stem, stages, num_classes=10, head="fc"):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        cin = add_stages(self, stem, stages, STRIDES,
                         lambda cin, widths, stride, _: Block(cin, *widths, stride))
        self.head = head
        setattr(self, head, nn.Linear(cin, num_classes))

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return getattr(self, self.head)(x.mean((2, 3)))


class CifarVGG(nn.Module):
    """``features``: VGG-16's sequence with each conv's width ('M': a 2x2 max-pool)."""

    def __init__(self, features, num_classes=10):
        super().__init__()
        layers, cin = [], 3
        for value in features:
            if value == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers += [nn.Conv2d(cin, value, 3, padding=1), nn.BatchNorm2d(value),
                       nn.ReLU(inplace=True)]
            cin = value
        self.features = nn.Sequential(*layers, nn.AvgPool2d(1))
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def conv_bn_relu(cin, cout, kernel):
    return [nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.BatchNorm2d(cout),
            nn.ReLU(True)]


class Inception(nn.Module):
    """``widths``: b1, b2 reduce, b2 3x3, b3 reduce, b3 first and second 3x3, b4."""

    def __init__(self, cin, widths):
        super().__init__()
        b1, r2, b2, r3, b3a, b3b, b4 = widths
        self.b1 = nn.Sequential(*conv_bn_relu(cin, b1, 1))
        self.b2 = nn.Sequential(*conv_bn_relu(cin, r2, 1), *conv_bn_relu(r2, b2, 3))
        self.b3 = nn.Sequential(*conv_bn_relu(cin, r3, 1), *conv_bn_relu(r3, b3a, 3),
                                *conv_bn_relu(b3a, b3b, 3))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), *conv_bn_relu(cin, b4, 1))
        self.out = b1 + b2 + b3b + b4

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class CifarGoogLeNet(nn.Module):
    NAMES = ("a3", "b3", "a4", "b4", "c4", "d4", "e4", "a5", "b5")

    def __init__(self, pre, inceptions, num_classes=10):
        super().__init__()
        self.pre_layers = nn.Sequential(*conv_bn_relu(3, pre, 3))
        cin = pre
        for name, widths in zip(self.NAMES, inceptions):
            setattr(self, name, Inception(cin, widths))
            cin = getattr(self, name).out
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.avgpool = nn.AvgPool2d(8, 1)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.pre_layers(x)
        for name in self.NAMES:
            x = getattr(self, name)(x)
            if name in ("b3", "e4"):
                x = self.maxpool(x)
        return self.linear(self.avgpool(x).flatten(1))


class Bottleneck(nn.Module):
    def __init__(self, cin, widths, stride, project):
        super().__init__()
        c1, c2, c3 = widths
        self.conv1, self.bn1 = nn.Conv2d(cin, c1, 1, bias=False), nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.conv3, self.bn3 = nn.Conv2d(c2, c3, 1, bias=False), nn.BatchNorm2d(c3)
        self.downsample = nn.Sequential(nn.Conv2d(cin, c3, 1, stride, bias=False),
                                        nn.BatchNorm2d(c3)) if project else None
        self.out = c3

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(y)))))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ImagenetResNet(nn.Module):
    """torchvision's ResNet-50 layout (v1.5) for per-block widths (c1, c2, c3)."""

    def __init__(self, stem, stages, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        cin = add_stages(self, stem, stages, (1, 2, 2, 2), Bottleneck)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        for s in range(4):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(x.mean((2, 3)))


def conv_bn_relu6(cin, cout, kernel, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups,
                                   bias=False), nn.BatchNorm2d(cout), nn.ReLU6(True))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expansion):
        super().__init__()
        hidden = cin * expansion
        layers = [conv_bn_relu6(cin, hidden, 1)] if expansion != 1 else []
        self.conv = nn.Sequential(*layers, conv_bn_relu6(hidden, hidden, 3, stride, hidden),
                                  nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class TorchvisionMobileNetV2(nn.Module):
    """torchvision's mobilenet_v2 layout, written for the test."""

    def __init__(self, num_classes=1000):
        super().__init__()
        layers, cin = [conv_bn_relu6(3, 32, 3, 2)], 32
        for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                           (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.features = nn.Sequential(*layers, conv_bn_relu6(cin, 1280, 1))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


RESNET50 = [[[w, w, 4 * w]] * n for w, n in ((64, 3), (128, 4), (256, 6), (512, 3))]
GOOGLENET = [[64, 96, 128, 16, 32, 32, 32], [128, 128, 192, 32, 96, 96, 64],
             [192, 96, 208, 16, 48, 48, 64], [160, 112, 224, 24, 64, 64, 64],
             [128, 128, 256, 24, 64, 64, 64], [112, 144, 288, 32, 64, 64, 64],
             [256, 160, 320, 32, 128, 128, 128], [256, 160, 320, 32, 128, 128, 128],
             [384, 192, 384, 48, 128, 128, 128]]
VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


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
    vgg = list(CifarVGG(VGG16).state_dict())
    assert len(vgg) == 93 and vgg[:3] == ["features.0.weight", "features.0.bias",
                                          "features.1.weight"]
    assert vgg[7:9] == ["features.3.weight", "features.3.bias"]  # after conv, BN, ReLU
    assert vgg[-4:] == ["features.41.running_var", "features.41.num_batches_tracked",
                        "classifier.weight", "classifier.bias"]
    googlenet = list(CifarGoogLeNet(192, GOOGLENET).state_dict())
    assert len(googlenet) == 450 and googlenet[:2] == ["pre_layers.0.weight", "pre_layers.0.bias"]
    assert [k for k in googlenet if k.startswith("a3.b4.")][:2] == ["a3.b4.1.weight",
                                                                   "a3.b4.1.bias"]
    assert googlenet[-2:] == ["linear.weight", "linear.bias"]
    resnet50 = ImagenetResNet(64, RESNET50).state_dict()
    assert len(resnet50) == 320 and "layer3.0.downsample.1.running_var" in resnet50
    assert sum(v.numel() for k, v in resnet50.items() if "running" not in k
               and "num_batches" not in k) == 25_557_032  # torchvision's resnet50
    mobilenet = TorchvisionMobileNetV2().state_dict()
    assert len(mobilenet) == 314 and list(mobilenet)[-2:] == ["classifier.1.weight",
                                                              "classifier.1.bias"]
    assert "features.1.conv.0.0.weight" in mobilenet and "features.2.conv.3.weight" in mobilenet
    assert sum(v.numel() for k, v in mobilenet.items() if "running" not in k
               and "num_batches" not in k) == 3_504_872  # torchvision's mobilenet_v2


JAX_LOGITS = r"""
import sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
from common_jax import export, models
models.DTYPES.setdefault("float64", jnp.float64)  # this process only: compute in float64
x = np.load(sys.argv[1])["x"]
out = []
for name in sys.argv[2:]:
    _, variables, meta = export.load_exported(name)
    model = models.build_model(meta["arch"], dtype="float64")
    variables = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), variables)
    out.append(np.asarray(model.apply(variables, jnp.asarray(x), train=False)))
np.savez(sys.argv[1] + ".out.npz", *out)
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


def config_rates(module: str) -> str:
    return importlib.import_module(f"configs.dcff.{module}").RATES


def compact_features(arch: dict) -> list:
    widths = iter(v for v in arch["features"] if v != "M")
    return [v if v == "M" else next(widths) for v in VGG16]


@pytest.mark.slow
def test_imported_cifar_models_give_the_pytorch_logits_in_float64(tmp_path):
    resnet, _ = architectures.compact_arch("resnet56", config_rates("resnet56_cifar10"),
                                           num_classes=10, in_channels=3)
    vgg, _ = architectures.compact_arch("vgg16", config_rates("vgg16_cifar10"), num_classes=10,
                                        in_channels=3)
    googlenet, _ = architectures.compact_arch("googlenet", config_rates("googlenet_cifar10"),
                                              num_classes=10, in_channels=3)
    resnet50, _ = architectures.compact_arch(
        "resnet50", config_rates("resnet50_imagenet_cos1023m"), num_classes=1000, in_channels=3)
    cases = [  # name, network (None: the previous one), legacy format, config
        ("dcff_resnet56_zip", CifarResNet(resnet["stem"], resnet["stages"]), False,
         "configs/dcff/resnet56_cifar10.py"),
        ("dcff_resnet56_legacy", None, True, "configs/dcff/resnet56_cifar10.py"),
        ("resnet56", CifarResNet(*full_widths(56), head="linear"), False,
         "configs/baselines/resnet56_cifar10.py"),
        ("dcff_vgg16_legacy", CifarVGG(compact_features(vgg)), True,
         "configs/dcff/vgg16_cifar10.py"),
        ("vgg16", CifarVGG(VGG16), False, "configs/baselines/vgg16_cifar10.py"),
        ("dcff_googlenet", CifarGoogLeNet(googlenet["pre"], googlenet["inceptions"]), False,
         "configs/dcff/googlenet_cifar10.py"),
        ("googlenet", CifarGoogLeNet(192, GOOGLENET), True,
         "configs/baselines/googlenet_cifar10.py"),
        ("dcff_resnet50", ImagenetResNet(resnet50["stem"], resnet50["stages"]), False,
         "configs/dcff/resnet50_imagenet_cos1023m.py"),
        ("mobilenet_v2", TorchvisionMobileNetV2(), True,
         "configs/baselines/mobilenet_v2_imagenet.py")]
    nets, directories, previous = {}, [], None
    for seed, (name, net, legacy, config) in enumerate(cases):
        net = previous = randomized(net, seed) if net is not None else previous
        nets[name] = net
        path = str(tmp_path / f"{name}.pt")
        torch.save(net.state_dict(), path, _use_new_zipfile_serialization=not legacy)
        directory = str(tmp_path / f"export_{name}")
        result = launch(f"--config={config}", "--mode=import", f"--import_from={path}",
                        f"--export_dir={directory}", f"--workdir={tmp_path / 'unused'}")
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip().splitlines()[-1] == directory
        directories.append(directory)
    with open(os.path.join(directories[0], "model.json")) as f:
        meta = json.load(f)
    assert meta["arch"]["stages"] == resnet["stages"]
    assert round(meta["params"] / 1e6, 4) == 0.3843  # the published compact ResNet-56
    assert round(meta["flops_thop"] / 1e6, 2) == 55.84
    x = np.random.default_rng(0).normal(size=(3, 3, 32, 32))
    for (name, *_), ours in zip(cases, jax_logits(x.transpose(0, 2, 3, 1), directories,
                                                  tmp_path)):
        with torch.no_grad():
            theirs = nets[name].double()(torch.from_numpy(x)).numpy()
        error = np.abs(ours - theirs).max() / np.abs(theirs).max()
        assert error < 1e-10, f"{name}: relative error {error:.3g}"


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
              "(the file has stage2_block0/conv1 where the config's architecture has "
              "stage1_block9/conv1)"),
             ("configs/pssnet/embedded.py", "full.pt", "key 'conv1.weight' fits no PSS-Net "
              "supernet layout")]
    for config, name, message in cases:
        result = launch(f"--config={config}", "--mode=import",
                        f"--import_from={tmp_path / name}", f"--workdir={tmp_path / 'w'}")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (name, lines)
        assert "compiled" not in result.stdout
    assert not (tmp_path / "w" / "export").exists()
