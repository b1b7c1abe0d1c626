"""Baseline architectures: name -> plain-width description -> flax module / counted layers.

An architecture description is a JSON-serialisable dict (``family`` plus plain widths); it
is what exports store, and ``build_model`` / ``arch_layers`` turn it back into a flax module
or a list of counted layers without any method-specific code.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

from common_jax.models import (googlenet_cifar, mobilenet, ops, resnet_cifar, resnet_imagenet,
                               vgg_cifar)
from common_jax.profile import Layer, totals

FAMILIES = {
    "resnet_cifar": resnet_cifar,
    "vgg_cifar": vgg_cifar,
    "googlenet_cifar": googlenet_cifar,
    "resnet_imagenet": resnet_imagenet,
    "mobilenet_v1": mobilenet,
    "mobilenet_v2": mobilenet,
}
CIFAR_RESNET_DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56,
                       "resnet110": 110}
MODEL_NAMES = tuple(CIFAR_RESNET_DEPTHS) + ("vgg16", "googlenet", "resnet50", "mobilenet_v1",
                                            "mobilenet_v2")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def arch_for(name: str, *, num_classes: int, in_channels: int, width_mult: float = 1.0,
             small_input: bool = False) -> dict:
    """The full-width description of model ``name`` (optionally scaled by ``width_mult``)."""
    if name in CIFAR_RESNET_DEPTHS:
        return resnet_cifar.full_arch(CIFAR_RESNET_DEPTHS[name], num_classes, in_channels,
                                      width=max(1, int(round(16 * width_mult))))
    if name == "vgg16":
        return vgg_cifar.full_arch(num_classes, in_channels, width_mult)
    if name == "googlenet":
        if width_mult != 1.0:
            raise ValueError("model.width_mult is not supported for googlenet; use 1.0")
        return googlenet_cifar.full_arch(num_classes, in_channels)
    if name == "resnet50":
        return resnet_imagenet.full_arch(num_classes, in_channels,
                                         width=max(1, int(round(64 * width_mult))))
    if name == "mobilenet_v1":
        return mobilenet.v1_arch(num_classes, in_channels, width_mult, small_input)
    if name == "mobilenet_v2":
        return mobilenet.v2_arch(num_classes, in_channels, width_mult, small_input)
    raise ValueError(f"model.name={name!r}: expected one of {list(MODEL_NAMES)}")


def arch_from_config(model_cfg, num_classes: int, in_channels: int) -> dict:
    return arch_for(model_cfg.name, num_classes=num_classes, in_channels=in_channels,
                    width_mult=model_cfg.width_mult, small_input=model_cfg.small_input)


def _family(arch: dict):
    if arch.get("family") not in FAMILIES:
        raise ValueError(f"architecture family {arch.get('family')!r}: expected one of "
                         f"{sorted(FAMILIES)}")
    return FAMILIES[arch["family"]]


def build_model(arch: dict, dtype: str = "float32", depthwise_impl: str = "auto", **kwargs):
    """The flax module of a description; ``dtype`` is the compute dtype (params stay f32)."""
    module = _family(arch)
    if module is mobilenet:
        kwargs.setdefault("depthwise", functools.partial(ops.DepthwiseConv, impl=depthwise_impl))
    return module.build(arch, dtype=DTYPES[dtype], **kwargs)


def arch_layers(arch: dict, image_size: int) -> list[Layer]:
    """The counted layers of a description at ``image_size`` x ``image_size`` input."""
    return _family(arch).layers(arch, image_size)


def model_costs(arch: dict, image_size: int) -> dict:
    """Analytic ``flops``, ``flops_thop`` and ``params`` (integers) of a description."""
    return totals(arch_layers(arch, image_size))
