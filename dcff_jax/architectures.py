"""Compact DCFF architectures from rate strings (../shared/papers/dcff.md §4.1, §4.3, §2.9).

``compact_arch(model, rates, ...)`` expands a rate list to one rate per fused conv and returns
``(arch, fused)``: ``arch`` is the plain-width description of the compact network in the
baseline family's format (what export writes), and ``fused`` maps every fused conv's flax
path to its original filter count ``n_l`` (the size of its filter bank). Layers not in
``fused`` (ResNet-50's downsample convs, the classifier) are ordinary layers at compact width.

Expansion rules (§4.1):
* VGG-16: 13 rates, one per conv.
* CIFAR ResNet-20/32/44/56/110: 3N per-block conv1 rates, then 3 per-stage rates for conv2 (the
  residual width); the stem takes stage 1's residual rate.
* GoogLeNet: the pre-layer, then per inception (b1, b2_1x1, b2_3x3, b3_1x1, b3_3x3a,
  b3_3x3b, b4_1x1) for a3, b3, a4, b4, c4, d4, e4, a5, b5.
* ResNet-50: stem, 16 conv1 rates, 16 conv2 rates, 4 per-stage conv3 rates (the residual
  width, also the downsample conv's output).
* A user family (``--config.model.name=package.module:NAME``, docs/architecture.md): one
  rate per width group, in ``width_groups`` order; the group's convs are fused.
"""

from __future__ import annotations

from common_jax import models
from common_jax.models import family as family_lib, googlenet_cifar, ops
from dcff_jax.rates import kept, parse_rates

DCFF_MODELS = ("vgg16", "googlenet", "resnet50") + tuple(models.CIFAR_RESNET_DEPTHS)
PROBE_SIZE = 224  # layer lists are read at this input size (only channel counts matter)


def is_dcff_model(name: str) -> bool:
    """A built-in DCFF model, or a user family's import path whose family has width groups
    (one rate per group: ``user_compact_arch``)."""
    if models.is_import_path(name):
        return family_lib.has_width_groups(models.family_of(name))
    return name in DCFF_MODELS


def group_convs(full: dict) -> list[list[str]]:
    """The convs each (not inert) width group of ``full``'s family sets: those whose output
    width changes when only that group's width does."""
    family = models.arch_family(full)
    groups = family.width_groups(full)

    def conv_widths(widths):
        arch = family.with_group_widths(full, widths, ops.make_divisible)
        return {layer.name: layer.out_ch for layer in models.arch_layers(arch, PROBE_SIZE)
                if layer.kind == "conv"}
    base = [g.base for g in groups]
    reference, out = conv_widths(base), []
    for index, group in enumerate(groups):
        if group.inert:
            continue
        changed = conv_widths([w + 1 if i == index else w for i, w in enumerate(base)])
        convs = [name for name, width in reference.items() if changed[name] != width]
        if not convs:
            raise ValueError(f"width group {group.name!r} of {full['family']!r} sets no conv "
                             f"layer's width")
        out.append(convs)
    return out


def user_compact_arch(model: str, rate_string: str, *, num_classes: int,
                      in_channels: int) -> tuple[dict, dict[str, int]]:
    """``compact_arch`` of a user family: one rate per (not inert) width group, every conv
    the group sets fused at the group's kept width."""
    full = models.arch_for(model, num_classes=num_classes, in_channels=in_channels)
    family = models.family_of(model)
    groups = family.width_groups(full)
    convs = group_convs(full)
    active = [g for g in groups if not g.inert]
    rates = iter(parse_rates(rate_string, len(active)))
    widths = [g.base if g.inert else kept(g.base, next(rates)) for g in groups]
    full_out = {layer.name: layer.out_ch for layer in models.arch_layers(full, PROBE_SIZE)}
    fused = {name: full_out[name] for names in convs for name in names}
    return family.with_group_widths(full, widths, ops.make_divisible), fused


def expected_length(model: str) -> int:
    if model == "vgg16":
        return 13
    if model in models.CIFAR_RESNET_DEPTHS:
        return 3 * (models.CIFAR_RESNET_DEPTHS[model] - 2) // 6 + 3
    if model == "googlenet":
        return 1 + 7 * len(googlenet_cifar.INCEPTION_NAMES)
    if model == "resnet50":
        return 1 + 16 + 16 + 4
    raise ValueError(f"model.name={model!r} has no DCFF architecture; expected one of "
                     f"{list(DCFF_MODELS)}")


def compact_arch(model: str, rate_string: str, *, num_classes: int,
                 in_channels: int) -> tuple[dict, dict[str, int]]:
    """(compact description, {fused conv path: original filter count})."""
    if models.is_import_path(model):
        return user_compact_arch(model, rate_string, num_classes=num_classes,
                                 in_channels=in_channels)
    rates = parse_rates(rate_string, expected_length(model))
    full = models.arch_for(model, num_classes=num_classes, in_channels=in_channels)
    fused: dict[str, int] = {}

    def keep(path: str, width: int, rate: float) -> int:
        fused[path] = width
        return kept(width, rate)

    arch = dict(full)
    if model == "vgg16":
        rate_iter = iter(rates)
        features, index = [], 0
        for value in full["features"]:
            if value == "M":
                features.append(value)
                continue
            features.append(keep(f"conv{index}", value, next(rate_iter)))
            index += 1
        arch["features"] = features
    elif model in models.CIFAR_RESNET_DEPTHS:
        n = len(full["stages"][0])
        conv1, stage = rates[:3 * n], rates[3 * n:]
        arch["stem"] = keep("stem_conv", full["stem"], stage[0])
        arch["stages"] = [[[keep(f"stage{s + 1}_block{b}/conv1", mid, conv1[s * n + b]),
                            keep(f"stage{s + 1}_block{b}/conv2", out, stage[s])]
                           for b, (mid, out) in enumerate(blocks)]
                          for s, blocks in enumerate(full["stages"])]
        arch["thop_pool"] = "adaptive"  # DCFF's compact ResNet uses nn.AdaptiveAvgPool2d(1)
    elif model == "googlenet":
        arch["pre"] = keep("pre_conv", full["pre"], rates[0])
        arch["inceptions"] = [
            [keep(f"{name}/{conv}_conv", width, rate) for conv, width, rate in
             zip(googlenet_cifar.BRANCH_CONVS, widths, rates[1 + 7 * i:8 + 7 * i])]
            for i, (name, widths) in enumerate(zip(googlenet_cifar.INCEPTION_NAMES,
                                                   full["inceptions"]))]
    else:
        conv1, conv2, conv3 = rates[1:17], rates[17:33], rates[33:]
        arch["stem"] = keep("stem_conv", full["stem"], rates[0])
        stages, b = [], 0
        for s, blocks in enumerate(full["stages"]):
            stage = []
            for i, (c1, c2, c3) in enumerate(blocks):
                prefix = f"stage{s + 1}_block{i}/"
                stage.append([keep(prefix + "conv1", c1, conv1[b]),
                              keep(prefix + "conv2", c2, conv2[b]),
                              keep(prefix + "conv3", c3, conv3[s])])
                b += 1
            stages.append(stage)
        arch["stages"] = stages
    return arch, fused

