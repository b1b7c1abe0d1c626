"""What a network family provides, so that the baselines, PSS-Net and the profile work from
its description alone (docs/architecture.md, "adding a network").

A family is a module (or any object) with these attributes:

* ``build(arch, dtype=..., **layers) -> flax module``: the plain network of a description
  (a JSON-serialisable dict whose ``family`` names it).
* ``layers(arch, image_size) -> list[Layer]``: every counted conv / BN / linear / pool layer
  by its parameter name (``common_jax.profile``), for FLOPs and params; it must accept
  NumPy arrays of widths (many subnets at once) and traced scalars.
* ``forward(x, arch, *, conv, norm, depthwise, dtype)``: the network on NHWC ``x`` inside a
  flax compact method, with the layers injected: ``conv(features, kernel, strides, name=)``,
  ``norm(name)`` (a plain BatchNorm, or PSS-Net's masked one for that layer) and
  ``depthwise(strides=, name=)``; layer names are those of ``layers``. A name may be a path
  'scope/layer': ``forward`` then runs that part inside ``ops.Scope(body, name='scope')``
  and the factories name the module by the last part (``ops.leaf_name``), so parameter
  trees nest as the names say (the ResNets' 'stage1_block0/conv1').

For PSS-Net (../shared/papers/pssnet.md §2-3) a family also provides:

* ``width_groups(arch) -> tuple[WidthGroup, ...]``: one width multiplier per group of layers
  whose widths must move together (a residual add ties its inputs' widths), with the
  group's full width; a subnet's width of a group is ``make_divisible(base * multiplier)``.
* ``with_group_widths(arch, widths, make_divisible) -> dict``: the description with one
  width per group (integers, or arrays of many subnets) and every width derived from them
  (e.g. an expansion width) computed with ``make_divisible``.

Optionally, ``forward`` may take ``active``: in the masked supernet ``active(bn_name)`` is
the traced active width of that layer's output (the CIFAR ResNets' option-A shortcut places
its input's channels by it); a ``forward`` without that parameter is called without it.
``CONV_INIT`` (optional) is the kernel init of the supernet's convs (default He fan-out).

Optionally, ``active_widths(arch)`` and ``with_active_widths(full_arch, widths)``: a compact
encoding of a subnet's widths for the compiled step and its inverse (traced), for families
whose layers share widths (MobileNet: ``stem``, ``out`` and ``expand`` arrays); without them
the step takes one width per BatchNorm layer.

The masked supernet, slicing a subnet's variables, FLOPs of many subnets, the sampler and
the pools then work from these alone (``pssnet_jax.space``, ``pssnet_jax.supernet``).
"""

from __future__ import annotations

from typing import NamedTuple


class WidthGroup(NamedTuple):
    """One PSS-Net width multiplier: a name, the full width it scales, and whether it is
    inert (drawn by the sampler but leaving the network unchanged, as MobileNetV2's tail in
    the official code; inert groups are not part of a subnet's identity)."""

    name: str
    base: int
    inert: bool = False


def has_width_groups(family) -> bool:
    """Whether a family provides PSS-Net's width groups."""
    return hasattr(family, "width_groups") and hasattr(family, "with_group_widths")
