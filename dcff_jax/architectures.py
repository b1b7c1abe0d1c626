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
"""

from __future__ import annotations

from common_jax import models
from common_jax.models import googlenet_cifar
from dcff_jax.rates import kept, parse_rates

DCFF_MODELS = ("vgg16", "googlenet", "resnet50") + tuple(models.CIFAR_RESNET_DEPTHS)


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

