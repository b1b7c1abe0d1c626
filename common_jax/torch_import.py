"""Published PyTorch weights -> this project's architecture descriptions and variables.

A torch file is read by ``common_jax.torch_files`` (no torch, allowlisted unpickling); its
state dict is then mapped layer by layer: convolutions OIHW -> HWIO, linear layers
transposed, BatchNorm ``weight``/``bias``/``running_mean``/``running_var`` -> ``scale``/
``bias`` and ``mean``/``var`` (``num_batches_tracked`` is dropped). Widths are read from the
tensor shapes, so a compact model needs no rate string. Every key of the file must be used
and every parameter of the description filled, else ``ImportMismatch`` names the first key
that does not fit.

Layouts read so far (``LAYOUTS``):

- ``resnet_cifar``: the CIFAR ResNets of the official DCFF code (``CompactResNet``: ``conv1``,
  ``bn1``, ``layer{1,2,3}.{b}.conv{1,2}`` / ``bn{1,2}``, ``fc``; option-A shortcuts without
  parameters) and its ``OriginResNet`` baseline (the classifier named ``linear``);
- ``vgg_cifar``: the official DCFF VGG-16 (``Compact_VGG`` / ``OriginVGG``: ``features.{i}``
  conv + BN in VGG-16's order, ``classifier``);
- ``googlenet_cifar``: the official DCFF GoogLeNet (``CompactGoogLeNet`` /
  ``OriginGoogLeNet``: ``pre_layers``, inceptions ``a3`` ... ``b5`` with branches ``b1``-``b4``
  as ``nn.Sequential`` of conv, BN, ReLU, ``linear``);
- ``resnet_imagenet``: ResNet-50 in torchvision's layout (torchvision's ``resnet50`` and the
  official DCFF ImageNet ``CompactResNet``: bottlenecks ``conv1``-``conv3``, projection
  shortcuts ``downsample.{0,1}``, ``fc``);
- ``mobilenet_v2``: torchvision's ``mobilenet_v2`` (``features.{i}`` inverted residuals,
  ``classifier.1``).
"""

from __future__ import annotations

import collections
import re

import numpy as np

from common_jax import data, export, models, storage, torch_files
from common_jax.models import googlenet_cifar as googlenet_lib, mobilenet as mobilenet_lib
from common_jax.models import vgg_cifar as vgg_lib


class ImportMismatch(ValueError):
    """The file's keys or shapes fit no supported layout, or not the config's architecture."""


def state_dict_of(obj, source: str) -> dict:
    """The tensor dict of a loaded torch file: the file itself, or its ``state_dict`` /
    ``model`` entry; a DataParallel ``module.`` prefix is removed."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(v, np.ndarray) for v in obj.values()):
        raise ImportMismatch(f"{source}: holds no state dict of tensors")
    if all(k.startswith("module.") for k in obj):
        obj = collections.OrderedDict((k[len("module."):], v) for k, v in obj.items())
    return dict(obj)


class Reader:
    """Takes tensors out of a state dict by key, so that leftovers can be reported."""

    def __init__(self, state: dict, source: str):
        self.state, self.source, self.used = state, source, set()

    def take(self, key: str, ndim: int | None = None) -> np.ndarray:
        if key not in self.state:
            raise ImportMismatch(f"{self.source}: key {key!r} is missing for this layout")
        value = self.state[key]
        if ndim is not None and value.ndim != ndim:
            raise ImportMismatch(f"{self.source}: {key} has shape {value.shape}; expected "
                                 f"{ndim} dimensions")
        self.used.add(key)
        return value

    def conv(self, prefix: str) -> dict:
        return {"kernel": np.transpose(self.take(prefix + ".weight", 4), (2, 3, 1, 0))}

    def bn(self, prefix: str, stats_prefix: str | None = None) -> tuple[dict, dict]:
        """(scale/bias, mean/var) of a BatchNorm; ``stats_prefix``: where its statistics are
        stored when not beside the affine parameters (a slimmable BN's ``X.bn``)."""
        params = {"scale": self.take(prefix + ".weight", 1), "bias": self.take(prefix + ".bias", 1)}
        stats_prefix = stats_prefix or prefix
        stats = {"mean": self.take(stats_prefix + ".running_mean", 1),
                 "var": self.take(stats_prefix + ".running_var", 1)}
        if stats_prefix + ".num_batches_tracked" in self.state:
            self.used.add(stats_prefix + ".num_batches_tracked")
        return params, stats

    def conv_bn(self, params: dict, stats: dict, names: tuple[str, str], conv_key: str,
                bn_key: str, bias: bool = False) -> int:
        """Fills ``params``/``stats`` with one conv (``names[0]``; with ``bias`` its bias too)
        and its BN (``names[1]``); returns the conv's width."""
        conv, norm = names
        params[conv] = self.conv(conv_key)
        if bias:
            params[conv]["bias"] = self.take(conv_key + ".bias", 1)
        params[norm], stats[norm] = self.bn(bn_key)
        return int(params[conv]["kernel"].shape[-1])

    def stages(self, params: dict, stats: dict, count: int, read_block, layout: str) -> list:
        """The ``layer{1..count}.{b}`` blocks of a ResNet: ``read_block(block_params,
        block_stats, prefix, b)`` fills one block and returns its widths."""
        stages = []
        for s in range(1, count + 1):
            blocks, b = [], 0
            while f"layer{s}.{b}.conv1.weight" in self.state:
                name = f"stage{s}_block{b}"
                params[name], stats[name] = {}, {}
                blocks.append(read_block(params[name], stats[name], f"layer{s}.{b}", b))
                b += 1
            if not blocks:
                raise ImportMismatch(f"{self.source}: key 'layer{s}.0.conv1.weight' is missing "
                                     f"for the {layout} layout")
            stages.append(blocks)
        return stages

    def linear(self, prefix: str) -> dict:
        return {"kernel": self.take(prefix + ".weight", 2).T,
                "bias": self.take(prefix + ".bias", 1)}

    def finish(self) -> None:
        unused = [k for k in self.state if k not in self.used]
        if unused:
            raise ImportMismatch(f"{self.source}: key {unused[0]!r} fits no layer of this "
                                 f"layout ({len(unused)} keys left over)")


def cast(tree):
    """float32 copies (the project keeps params and statistics in float32)."""
    if isinstance(tree, dict):
        return {k: cast(v) for k, v in tree.items()}
    return np.ascontiguousarray(tree, dtype=np.float32)


def resnet_cifar(state: dict, source: str, thop_pool: str = "adaptive") -> tuple[dict, dict]:
    """(description, variables) of an official DCFF/HRank CIFAR ResNet state dict."""
    reader, params, stats = Reader(state, source), {}, {}
    stem = reader.conv_bn(params, stats, ("stem_conv", "stem_bn"), "conv1", "bn1")

    def block(block_params, block_stats, prefix, _):
        return [reader.conv_bn(block_params, block_stats, (f"conv{i}", f"bn{i}"),
                               f"{prefix}.conv{i}", f"{prefix}.bn{i}") for i in (1, 2)]

    stages = reader.stages(params, stats, 3, block, "CIFAR ResNet")
    params["fc"] = reader.linear("fc" if "fc.weight" in state else "linear")
    reader.finish()
    arch = {"family": "resnet_cifar", "num_classes": int(params["fc"]["kernel"].shape[1]),
            "in_channels": int(params["stem_conv"]["kernel"].shape[2]), "stem": stem,
            "stages": stages, "thop_pool": thop_pool}
    return arch, {"params": cast(params), "batch_stats": cast(stats)}


def vgg_cifar(state: dict, source: str, thop_pool: str = "adaptive") -> tuple[dict, dict]:
    """(description, variables) of the official DCFF VGG-16 (``Compact_VGG``): ``features.{i}``
    conv (with bias) + BN + ReLU, or a max-pool, in VGG-16's order; ``classifier``."""
    reader, params, stats, features = Reader(state, source), {}, {}, []
    index = conv = 0
    for value in vgg_lib.VGG16:
        if value == "M":
            features.append("M")
            index += 1
            continue
        features.append(reader.conv_bn(params, stats, (f"conv{conv}", f"bn{conv}"),
                                       f"features.{index}", f"features.{index + 1}", bias=True))
        index, conv = index + 3, conv + 1
    params["fc"] = reader.linear("classifier")
    reader.finish()
    arch = {"family": "vgg_cifar", "num_classes": int(params["fc"]["kernel"].shape[1]),
            "in_channels": int(params["conv0"]["kernel"].shape[2]), "features": features}
    return arch, {"params": cast(params), "batch_stats": cast(stats)}


def googlenet_cifar(state: dict, source: str, thop_pool: str = "adaptive") -> tuple[dict, dict]:
    """(description, variables) of the official DCFF GoogLeNet (``CompactGoogLeNet`` /
    ``OriginGoogLeNet``): ``pre_layers.{0,1}``, per inception ``b1.{0,1}``,
    ``b2.{0,1,3,4}``, ``b3.{0,1,3,4,6,7}``, ``b4.{1,2}`` (conv with bias, BN), ``linear``."""
    reader, params, stats = Reader(state, source), {}, {}
    pre = reader.conv_bn(params, stats, ("pre_conv", "pre_bn"), "pre_layers.0", "pre_layers.1",
                         bias=True)
    inceptions = []
    for name in googlenet_lib.INCEPTION_NAMES:
        params[name], stats[name] = {}, {}
        inceptions.append([reader.conv_bn(
            params[name], stats[name], (f"{conv}_conv", f"{conv}_bn"),
            f"{name}.{sequence}.{index}", f"{name}.{sequence}.{index + 1}", bias=True)
            for conv, (sequence, index) in zip(googlenet_lib.BRANCH_CONVS,
                                               GOOGLENET_BRANCH_KEYS)])
    params["fc"] = reader.linear("linear")
    reader.finish()
    arch = {"family": "googlenet_cifar", "num_classes": int(params["fc"]["kernel"].shape[1]),
            "in_channels": int(params["pre_conv"]["kernel"].shape[2]), "pre": pre,
            "inceptions": inceptions}
    return arch, {"params": cast(params), "batch_stats": cast(stats)}


def resnet_imagenet(state: dict, source: str, thop_pool: str = "adaptive") -> tuple[dict, dict]:
    """(description, variables) of a torchvision-layout ResNet-50 (torchvision's
    ``resnet50`` and the official DCFF ImageNet ``CompactResNet``): ``conv1``/``bn1``,
    ``layer{1..4}.{b}.conv{1,2,3}``/``bn{1,2,3}``, ``layer{s}.0.downsample.{0,1}``, ``fc``."""
    reader, params, stats = Reader(state, source), {}, {}
    stem = reader.conv_bn(params, stats, ("stem_conv", "stem_bn"), "conv1", "bn1")

    def block(block_params, block_stats, prefix, b):
        widths = [reader.conv_bn(block_params, block_stats, (f"conv{i}", f"bn{i}"),
                                 f"{prefix}.conv{i}", f"{prefix}.bn{i}") for i in (1, 2, 3)]
        if b == 0:
            reader.conv_bn(block_params, block_stats, ("downsample_conv", "downsample_bn"),
                           f"{prefix}.downsample.0", f"{prefix}.downsample.1")
        return widths

    stages = reader.stages(params, stats, 4, block, "ResNet-50")
    params["fc"] = reader.linear("fc")
    reader.finish()
    arch = {"family": "resnet_imagenet", "num_classes": int(params["fc"]["kernel"].shape[1]),
            "in_channels": int(params["stem_conv"]["kernel"].shape[2]), "stem": stem,
            "stages": stages}
    return arch, {"params": cast(params), "batch_stats": cast(stats)}


def mobilenet_v2(state: dict, source: str, thop_pool: str = "adaptive") -> tuple[dict, dict]:
    """(description, variables) of torchvision's ``mobilenet_v2`` layout: ``features.0``
    stem (conv ``.0``, BN ``.1``), ``features.1`` (depthwise ``conv.0.{0,1}``, project
    ``conv.{1,2}``), ``features.2``-``17`` (expand ``conv.0.{0,1}``, depthwise ``conv.1.{0,1}``,
    project ``conv.{2,3}``), ``features.18`` tail, ``classifier.1``. Strides are not stored:
    those of the standard ImageNet network (``mobilenet.v2_arch``)."""
    reader, params, stats = Reader(state, source), {}, {}

    def unit(name, conv_key, bn_key):
        return reader.conv_bn(params, stats, (f"{name}_conv", f"{name}_bn"), conv_key, bn_key)

    template = mobilenet_lib.v2_arch()
    stem = cin = unit("stem", "features.0.0", "features.0.1")
    blocks = []
    for i, block in enumerate(template["blocks"]):
        prefix = f"features.{i + 1}.conv"
        if f"{prefix}.3.weight" in state:  # an expansion conv: the block's units shift by one
            expand = unit(f"block{i}_expand", f"{prefix}.0.0", f"{prefix}.0.1")
            unit(f"block{i}_dw", f"{prefix}.1.0", f"{prefix}.1.1")
            out = unit(f"block{i}_pw", f"{prefix}.2", f"{prefix}.3")
        else:
            expand = 0
            unit(f"block{i}_dw", f"{prefix}.0.0", f"{prefix}.0.1")
            out = unit(f"block{i}_pw", f"{prefix}.1", f"{prefix}.2")
        blocks.append({"expand": expand, "out": out, "stride": block["stride"],
                       "residual": block["stride"] == 1 and cin == out})
        cin = out
    tail = unit("tail", f"features.{len(blocks) + 1}.0", f"features.{len(blocks) + 1}.1")
    params["fc"] = reader.linear("classifier.1")
    reader.finish()
    arch = {**template, "num_classes": int(params["fc"]["kernel"].shape[1]),
            "in_channels": int(params["stem_conv"]["kernel"].shape[2]), "stem": stem,
            "tail": tail, "blocks": blocks}
    return arch, {"params": cast(params), "batch_stats": cast(stats)}


# (Sequential, index of the conv in it) of each branch conv, in BRANCH_CONVS' order
GOOGLENET_BRANCH_KEYS = (("b1", 0), ("b2", 0), ("b2", 3), ("b3", 0), ("b3", 3), ("b3", 6),
                         ("b4", 1))
LAYOUTS = {"resnet_cifar": resnet_cifar, "vgg_cifar": vgg_cifar,
           "googlenet_cifar": googlenet_cifar, "resnet_imagenet": resnet_imagenet,
           "mobilenet_v2": mobilenet_v2}


def detect_layout(state: dict, source: str) -> str:
    """The layout of a state dict's keys; ImportMismatch naming the first key otherwise."""
    keys = list(state)
    if "features.0.weight" in state and "classifier.weight" in state:
        return "vgg_cifar"
    if "features.0.0.weight" in state and "classifier.1.weight" in state:
        return "mobilenet_v2"
    if "pre_layers.0.weight" in state:
        return "googlenet_cifar"
    if "conv1.weight" in state and "layer4.0.conv3.weight" in state:
        return "resnet_imagenet"
    if "conv1.weight" in state and any(re.fullmatch(r"layer1\.0\.conv1\.weight", k)
                                       for k in keys) and not any(
            k.startswith("layer4.") for k in keys) and state["conv1.weight"].shape[-1] == 3:
        return "resnet_cifar"
    raise ImportMismatch(f"{source}: key {keys[0]!r} fits no supported layout "
                         f"({', '.join(LAYOUTS)})")


def read(path: str, thop_pool: str = "adaptive") -> tuple[dict, dict]:
    """(description, variables) of the torch file at ``path``."""
    source = str(path)
    state = state_dict_of(torch_files.load(path), source)
    return LAYOUTS[detect_layout(state, source)](state, source, thop_pool)


def first_difference(arch: dict, expected: dict, image_size: int = 32) -> str | None:
    """The first conv or linear layer whose width (or place) differs between two
    descriptions, as 'stage2_block3/conv1: 12 filters in the file, 16 expected'; None if
    they agree. Compares the counted layers (``models.arch_layers``), so it holds for every
    family."""
    def convs(a):
        return [(layer.name, layer.out_ch) for layer in models.arch_layers(a, image_size)
                if layer.kind in ("conv", "linear")]
    got, want = convs(arch), convs(expected)
    for (name, width), (expected_name, expected_width) in zip(got, want):
        if name != expected_name:
            return f"the file has {name} where the config's architecture has {expected_name}"
        if width != expected_width:
            unit = "classes" if name == "fc" else "filters"
            return f"{name}: {width} {unit} in the file, {expected_width} expected"
    if len(got) != len(want):
        return f"{len(got)} conv and linear layers in the file, {len(want)} expected"
    return None


def export_imported(config, source: str, expected: dict, directory: str,
                    thop_pool: str = "adaptive") -> str:
    """Reads the torch file ``source``, checks its widths against ``expected`` (the config's
    description) and writes it as an export (``model.json`` + variables, plus the artifact of
    ``config.export.format``) to ``directory``."""
    arch, variables = read(source, thop_pool)
    if arch["family"] != expected["family"]:
        raise ImportMismatch(f"{source}: a {arch['family']} file, but config.model.name="
                             f"{config.model.name!r} is a {expected['family']}")
    difference = first_difference(arch, expected)
    if difference:
        raise ImportMismatch(f"{source}: does not fit the config's architecture "
                             f"({difference})")
    storage.check_writable(directory)  # only now: a file that does not fit creates nothing
    size = data.image_size(config.dataset)
    return export.export_model(
        directory, arch, variables, image_size=size,
        info=data.dataset_info(config.dataset.name), export_format=config.export.format,
        extra={"imported_from": str(source), **models.model_costs(arch, size)})
