"""PSS-Net structure space (../shared/papers/pssnet.md §2-3): subnets, widths and FLOPs.

A subnet is a resolution plus one width multiplier per width group of its family
(``common_jax.models.family``): MobileNetV1 has 14 (stem and the 13 pointwise convs),
MobileNetV2 9 (stem, the 7 stage outputs shared by all blocks of a stage, and the tail, whose
multiplier is sampled but inert: the tail always has its full width), a CIFAR ResNet-20 12
(three stage widths, nine block inner widths), ResNet-50 21. Group widths are
``make_divisible(base * m)`` (divisor 8, the 10% rule); derived widths (an MBV2 block's
expansion, ``make_divisible(6 * actual input width)``) come from the family. Multipliers
are drawn from U(0.75, 1.0) rounded to 3 decimals and resolutions from
``make_divisible(U(lo, hi), step, lo)``.

A subnet's identity (``Subnet``) is its resolution plus its stage channel counts, a plain
structured value: different multipliers that round to the same channels are the same subnet.
``flops(space, resolutions, multipliers)`` is vectorised over many subnets and equals the
official counter (conv and linear MACs plus one add per average-pooled input element).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import numpy as np

from common_jax import models, profile
from common_jax.models import family as family_lib, ops

MODELS = tuple(name for name in models.MODEL_NAMES  # built-in models with width groups
               if family_lib.has_width_groups(models.model_family(name)))


def is_pss_model(name: str) -> bool:
    """Whether PSS-Net can train model ``name``: a built-in one with width groups, or a user
    family's import path whose family has them (ValueError when it does not resolve)."""
    if models.is_import_path(name):
        return family_lib.has_width_groups(models.family_of(name))
    return name in MODELS


class Subnet(NamedTuple):
    """Resolution and per-stage channel counts (MBV1: 14; MBV2: 8, the inert tail left out)."""

    resolution: int
    channels: tuple

    def to_json(self) -> dict:
        return {"resolution": int(self.resolution), "channels": [int(c) for c in self.channels]}

    @staticmethod
    def from_json(value: dict) -> "Subnet":
        return Subnet(int(value["resolution"]), tuple(int(c) for c in value["channels"]))


@dataclasses.dataclass(frozen=True)
class Space:
    """The structure space of one supernet (its max net is ``full_arch``, whose family
    gives the width groups: ``common_jax.models.family``)."""

    model: str
    full_arch: dict
    resolutions: tuple  # allowed input sizes, ascending
    mult_low: float = 0.75
    mult_high: float = 1.0

    @property
    def family(self):
        return models.arch_family(self.full_arch)

    @property
    def groups(self) -> tuple:
        return self.family.width_groups(self.full_arch)

    @property
    def num_stages(self) -> int:
        """Width multipliers per subnet (one per width group)."""
        return len(self.groups)

    @property
    def base_widths(self) -> tuple:
        """Full width of every group (the multipliers' base)."""
        return tuple(g.base for g in self.groups)

    @property
    def identity(self) -> tuple:
        """The groups whose widths identify a subnet (all but the inert ones)."""
        return tuple(i for i, g in enumerate(self.groups) if not g.inert)

    def max_subnet(self) -> Subnet:
        return self.subnet(self.resolutions[-1], [self.mult_high] * self.num_stages)

    def min_subnet(self) -> Subnet:
        return self.subnet(self.resolutions[0], [self.mult_low] * self.num_stages)

    def subnet(self, resolution: int, multipliers: Sequence[float]) -> Subnet:
        """The subnet of a resolution and per-stage multipliers (validated)."""
        if resolution not in self.resolutions:
            raise ValueError(f"resolution {resolution} is outside the structure space; allowed: "
                             f"{list(self.resolutions)}")
        if len(multipliers) != self.num_stages:
            raise ValueError(f"{self.model} takes {self.num_stages} multipliers, got "
                             f"{len(multipliers)}")
        for m in multipliers:
            if not self.mult_low - 1e-9 <= m <= self.mult_high + 1e-9:
                raise ValueError(f"width multiplier {m} is outside [{self.mult_low}, "
                                 f"{self.mult_high}]")
        widths = [ops.make_divisible(b * m) for b, m in zip(self.base_widths, multipliers)]
        return Subnet(int(resolution), tuple(widths[i] for i in self.identity))

    def check(self, subnet: Subnet) -> None:
        """ValueError unless ``subnet`` lies in the space (resolution and every width)."""
        if subnet.resolution not in self.resolutions:
            raise ValueError(f"resolution {subnet.resolution} is outside the structure space; "
                             f"allowed: {list(self.resolutions)}")
        choices = stage_choices(self)
        if len(subnet.channels) != len(choices):
            raise ValueError(f"{self.model} subnets have {len(choices)} stage widths, got "
                             f"{len(subnet.channels)}")
        for stage, (width, allowed) in enumerate(zip(subnet.channels, choices)):
            if width not in allowed:
                raise ValueError(f"stage {stage} width {width} is outside the structure space; "
                                 f"allowed: {sorted(allowed)}")

    def arch(self, subnet: Subnet) -> dict:
        """The plain-width description of a subnet (the family's baseline format)."""
        widths = list(self.base_widths)
        for index, width in zip(self.identity, subnet.channels):
            widths[index] = width
        return self.arch_of(widths, ops.make_divisible)

    def arch_of(self, group_widths, make_divisible) -> dict:
        """The description with one width per group (integers, or arrays of many
        subnets), derived widths by ``make_divisible`` (``with_group_widths``)."""
        return self.family.with_group_widths(self.full_arch, group_widths, make_divisible)

    def random(self, rng: np.random.Generator) -> tuple[int, list]:
        """One uniform draw (resolution, 3-decimal multipliers), as the official sampler."""
        lo, hi = self.resolutions[0], self.resolutions[-1]
        step = self.resolutions[1] - lo if len(self.resolutions) > 1 else 8
        resolution = ops.make_divisible(rng.uniform(lo, hi), step, lo)
        mults = [float("%.3f" % rng.uniform(self.mult_low, self.mult_high))
                 for _ in range(self.num_stages)]
        return resolution, mults


def check_user_family(space: Space) -> None:
    """One-line ValueError when a user family's width group sets no layer's width, when its
    forward fails at a subnet whose width groups take different widths (a residual add or
    concatenation that joins two groups fails there), or when its ``layers`` miscount that
    forward (traced on abstract values, nothing compiled; common_jax/traced_flops.py)."""
    from common_jax import traced_flops

    def widths(arch):
        return [(layer.name, layer.in_ch, layer.out_ch) for layer in
                space.family.layers(arch, space.resolutions[-1])]
    full = widths(space.arch_of(list(space.base_widths), ops.make_divisible))
    for index, group in enumerate(space.groups):
        wider = list(space.base_widths)
        wider[index] += 8
        if not group.inert and widths(space.arch_of(wider, ops.make_divisible)) == full:
            raise ValueError(f"width group {group.name!r} of family {space.model!r} sets no "
                             f"layer's width (its with_group_widths ignores it)")
    mixed = [space.mult_low if i % 2 else space.mult_high for i in range(space.num_stages)]
    for subnet in (space.max_subnet(), space.subnet(space.resolutions[0], mixed)):
        arch = space.arch(subnet)
        try:
            traced_flops.traced_macs(arch, subnet.resolution)
        except Exception as error:  # the family's own code: whatever it raises, one line
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ValueError(f"family {space.model!r}: its forward fails at the subnet "
                             f"{subnet.to_json()}, whose width groups differ ({first}); does a "
                             f"residual add join layers of different width groups?") from None
        traced_flops.check_layers(arch, subnet.resolution)


def resolution_range(lo: int, hi: int, step: int) -> tuple:
    if lo <= 0 or hi < lo or step <= 0 or (hi - lo) % step:
        raise ValueError(f"resolutions ({lo}, {hi}, {step}): need 0 < lo <= hi with hi - lo a "
                         f"multiple of step")
    return tuple(range(lo, hi + 1, step))


def stage_choices(space: Space) -> list[set]:
    """The widths each stage can take (for validation and for the tests)."""
    mults = np.round(np.arange(round(space.mult_low * 1000), round(space.mult_high * 1000) + 1)
                     / 1000, 3)
    widths = [{ops.make_divisible(b * m) for m in mults} for b in space.base_widths]
    return [widths[i] for i in space.identity]


def _make_divisible_np(values: np.ndarray, divisor: int = 8) -> np.ndarray:
    """Vectorised ``ops.make_divisible`` (min value = divisor)."""
    new = np.maximum(divisor, (values + divisor / 2).astype(np.int64) // divisor * divisor)
    return np.where(new < 0.9 * values, new + divisor, new)


def stage_widths(space: Space, multipliers: np.ndarray) -> np.ndarray:
    """(N, stages) multipliers -> the ``Subnet.channels`` of each row (inert groups left
    out)."""
    mults = np.asarray(multipliers, np.float64).reshape(-1, space.num_stages)
    widths = _make_divisible_np(np.asarray(space.base_widths, np.float64) * mults)
    return widths[:, list(space.identity)]


def flops(space: Space, resolutions: Sequence[int], multipliers: np.ndarray) -> np.ndarray:
    """FLOPs (MACs, integer) of many subnets at once: (N,) resolutions, (N, stages) mults;
    the family's layer list evaluated on arrays of widths and sizes."""
    resolutions = np.asarray(resolutions, np.int64)
    mults = np.asarray(multipliers, np.float64).reshape(len(resolutions), space.num_stages)
    widths = _make_divisible_np(np.asarray(space.base_widths, np.float64) * mults)
    arch = space.arch_of(list(widths.T), lambda w: _make_divisible_np(w.astype(np.float64)))
    return sum(profile.layer_flops(layer)
               for layer in space.family.layers(arch, resolutions))


def subnet_flops(model: str, resolution: int, multipliers: Sequence[float], *,
                 num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                 width_mult: float = 1.0) -> int:
    """FLOPs of one subnet of the ImageNet (or scaled) MobileNet supernet: the official
    counter, e.g. ``subnet_flops('mobilenet_v2', 224, [1.0] * 9) == 300_836_992``."""
    space = make_space(model, num_classes=num_classes, in_channels=in_channels,
                       small_input=small_input, width_mult=width_mult,
                       resolutions=(resolution,))
    return int(flops(space, [resolution], np.asarray([multipliers]))[0])


def make_space(model: str, *, num_classes: int, in_channels: int, resolutions: Sequence[int],
               small_input: bool = False, width_mult: float = 1.0, mult_low: float = 0.75,
               mult_high: float = 1.0) -> Space:
    if not is_pss_model(model):
        raise ValueError(f"model.name={model!r}: PSS-Net supernets are {list(MODELS)} or a "
                         f"user family with width groups (common_jax/models/family.py)")
    full = models.arch_for(model, num_classes=num_classes, in_channels=in_channels,
                           width_mult=width_mult, small_input=small_input)
    space = Space(model, full, tuple(sorted(resolutions)), mult_low, mult_high)
    for group in space.groups:
        widest = ops.make_divisible(group.base * mult_high)
        if widest > group.base and not group.inert:
            raise ValueError(f"width group {group.name!r} of {model!r}: its full width "
                             f"{group.base} rounds to {widest} at multiplier {mult_high} (widths "
                             f"are multiples of 8), wider than the supernet; use a "
                             f"model.width_mult whose widths are multiples of 8")
    return space


def space_from_config(config, info) -> Space:
    """The structure space of a PSS-Net config (``config.model``, ``config.pssnet``) for a
    dataset's ``info`` (classes, channels)."""
    cfg = config.pssnet
    return make_space(config.model.name, num_classes=info.num_classes,
                      in_channels=info.channels,
                      resolutions=resolution_range(*cfg.resolutions),
                      small_input=config.model.small_input, width_mult=config.model.width_mult,
                      mult_low=cfg.mult_range[0], mult_high=cfg.mult_range[1])
