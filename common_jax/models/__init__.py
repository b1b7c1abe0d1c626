"""Baseline architectures: name -> plain-width description -> flax module / counted layers.

An architecture description is a JSON-serialisable dict (``family`` plus plain widths); it
is what exports store, and ``build_model`` / ``arch_layers`` turn it back into a flax module
or a list of counted layers without any method-specific code.
"""

from __future__ import annotations

import functools
import importlib

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
MODEL_FAMILIES = {**{name: "resnet_cifar" for name in CIFAR_RESNET_DEPTHS}, "vgg16": "vgg_cifar",
                  "googlenet": "googlenet_cifar", "resnet50": "resnet_imagenet",
                  "mobilenet_v1": "mobilenet_v1", "mobilenet_v2": "mobilenet_v2"}
MODEL_NAMES = tuple(MODEL_FAMILIES)
FAMILY_FUNCTIONS = ("full_arch", "build", "layers", "forward")  # what a user family provides
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def is_import_path(name: str) -> bool:
    """Whether a model or family name is a user family's import path 'package.module:NAME'."""
    return isinstance(name, str) and ":" in name


def family_of(name: str):
    """The family of a family name: a built-in one (``FAMILIES``) or a user family given by
    its import path 'package.module:NAME' (imported once, then kept in ``FAMILIES``)."""
    if name in FAMILIES:
        return FAMILIES[name]
    if not is_import_path(name):
        raise ValueError(f"architecture family {name!r}: expected one of {sorted(FAMILIES)} "
                         f"or a user family's import path 'package.module:NAME'")
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"family {name!r}: cannot import {module_name!r} ({error})") from None
    if not hasattr(module, attribute):
        raise ValueError(f"family {name!r}: module {module_name!r} has no {attribute!r}")
    found = getattr(module, attribute)
    missing = [f for f in FAMILY_FUNCTIONS if not callable(getattr(found, f, None))]
    if missing:
        raise ValueError(f"family {name!r} lacks {', '.join(missing)} (a family provides "
                         f"{', '.join(FAMILY_FUNCTIONS)}: common_jax/models/family.py)")
    FAMILIES[name] = found
    return found


def model_family(name: str):
    """The family of a model name (``MODEL_NAMES`` or a user family's import path)."""
    return family_of(name if is_import_path(name) else MODEL_FAMILIES[name])


def arch_for(name: str, *, num_classes: int, in_channels: int, width_mult: float = 1.0,
             small_input: bool = False) -> dict:
    """The full-width description of model ``name`` (optionally scaled by ``width_mult``);
    a user family's description names its import path as its family."""
    if is_import_path(name):
        arch = family_of(name).full_arch(num_classes=num_classes, in_channels=in_channels,
                                      width_mult=width_mult, small_input=small_input)
        return dict(arch, family=name)
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


def arch_family(arch: dict):
    """The family of a description, which may come from a file (an export's model.json):
    a user family is used only when this process resolved it (``family_of``, from its own
    config); a description never makes the project import code."""
    name = arch.get("family")
    if name in FAMILIES:
        return FAMILIES[name]
    if is_import_path(name):
        raise ValueError(f"architecture family {name!r} is a user family this process has not "
                         f"imported: call common_jax.models.family_of({name!r}) first")
    raise ValueError(f"architecture family {name!r}: expected one of {sorted(FAMILIES)}")


def build_model(arch: dict, dtype: str = "float32", depthwise_impl: str = "auto", **kwargs):
    """The flax module of a description; ``dtype`` is the compute dtype (params stay f32)."""
    module = arch_family(arch)
    if module is mobilenet:
        kwargs.setdefault("depthwise", functools.partial(ops.DepthwiseConv, impl=depthwise_impl))
    return module.build(arch, dtype=DTYPES[dtype], **kwargs)


def arch_layers(arch: dict, image_size: int) -> list[Layer]:
    """The counted layers of a description at ``image_size`` x ``image_size`` input."""
    return arch_family(arch).layers(arch, image_size)


def model_costs(arch: dict, image_size: int) -> dict:
    """Analytic ``flops``, ``flops_thop`` and ``params`` (integers) of a description."""
    return totals(arch_layers(arch, image_size))
