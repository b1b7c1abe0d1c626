"""Latency tables measured on the current JAX device, and the latency predictor
(../shared/papers/pssnet.md §3.2; the official tables were measured once on the authors' GPU).

A subnet runs as a chain of units. MobileNet's are its own blocks: the stem conv, every block
(MBV1: depthwise + pointwise; MBV2: [expand] + depthwise + project [+ residual]), the MBV2
tail conv, and the head (average pool + classifier). Every other family (the ResNets, a
user's) is cut into the layers its ``layers`` lists: every conv with a BatchNorm and ReLU
after it, the average pool and the classifier (residual adds, shortcuts and max-pools are
left to the calibration below). A unit's latency depends only on its key: kind, input size,
input, middle and output widths, stride (and the residual). The table maps keys to the
median latency of
that unit alone (jitted, eval-mode BatchNorm, warmed up, synchronised, repeated) minus the
cost of an empty jitted call; the raw prediction sums a subnet's units and adds the empty
call once, since a whole exported model is one call too. A chain of separately called units
costs more than the same layers compiled as one model (XLA fuses across units and pays the
per-executable overheads once), most at batch 1 on a CPU, so the table also holds a linear
calibration ``measured = scale * raw + offset`` fitted by least squares on whole subnets
measured end to end (the min and max net and ``calibration_subnets`` random ones, seeded);
``predict_*`` apply it.

Which units are measured (``units_to_measure``): every distinct unit of the space when there
are at most ``max_units`` (the embedded space); otherwise a grid (the lowest, middle and
highest width of every width group at every resolution; ImageNet spaces have thousands of
units and every new shape is one compile). Either way each unit position takes every
combination of the widths of the groups it depends on (found by changing one group at a
time), the other groups at their widest. The predictor interpolates a unit missing from a
grid table multilinearly: MobileNet's in its widths between the neighbouring measured ones, a
layer-timed family's in the widths of the groups the unit depends on, between the grid
widths of each (its layers' widths must be its groups' widths; a family whose are not needs
every unit measured).

The table is JSON (``FORMAT``, ``VERSION``) with the device, JAX version, batch size, dtype and
date; it is rewritten atomically every few units, and a run with the same path and settings
continues where an interrupted one stopped.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import json
import logging
import statistics
import time
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from common_jax import models, paths, storage
from common_jax.models import mobilenet, ops
from pssnet_jax.space import Space, Subnet, stage_choices

log = logging.getLogger(__name__)
FORMAT = "pssnet-latency-table"
VERSION = 1


MOBILENET_KINDS = ("stem", "block", "block_v1", "tail", "head")


def timed_by_layers(arch: dict) -> bool:
    """Whether a description's family is timed layer by layer (every family but MobileNet,
    whose units are its blocks)."""
    return arch["family"] not in mobilenet.VERSIONS


def arch_units(arch: dict, resolution: int) -> list[tuple]:
    """The unit keys of a plain description at an input size, in order: MobileNet's blocks
    (``mobilenet_units``), any other family's layers (``layer_units``)."""
    if timed_by_layers(arch):
        return layer_units(arch, resolution)
    return mobilenet_units(arch, resolution)


def layer_units(arch: dict, resolution: int) -> list[tuple]:
    """Units of any family from its ``layers``: ('conv', size, in, out, kernel, stride,
    depthwise) for every conv (with a BatchNorm and ReLU after it), ('pool', size, width) and
    ('linear', 1, in, classes)."""
    units = []
    for layer in models.arch_layers(arch, resolution):
        if layer.kind == "conv":
            units.append(("conv", layer.in_hw, layer.in_ch, layer.out_ch, layer.kernel,
                          layer.stride, int(layer.groups > 1)))
        elif layer.kind == "avgpool":
            units.append(("pool", layer.in_hw, layer.in_ch))
        elif layer.kind == "linear":
            units.append(("linear", 1, layer.in_ch, layer.out_ch))
    return units


def mobilenet_units(arch: dict, resolution: int) -> list[tuple]:
    """The unit keys of a plain MobileNet description at an input size, in order."""
    v2 = arch["family"] == "mobilenet_v2"
    units = [("stem", resolution, arch["in_channels"], arch["stem"], arch["stem_stride"])]
    blocks = mobilenet.blocks(arch, resolution)
    for b in blocks:
        units.append(("block" if v2 else "block_v1", b.in_hw, b.cin, b.mid if b.expand else 0,
                      b.out, b.stride, int(b.residual)))
    hw, cin = blocks[-1].out_hw, blocks[-1].out
    if v2:
        units.append(("tail", hw, cin, arch["tail"]))
        cin = arch["tail"]
    units.append(("head", hw, cin, arch["num_classes"]))
    return units


def key_of(unit: tuple) -> str:
    return ":".join(str(v) for v in unit)


def unit_of(key: str) -> tuple:
    kind, *values = key.split(":")
    return (kind, *(int(v) for v in values))


def subnet_units(space: Space, subnet: Subnet) -> list[tuple]:
    return arch_units(space.arch(subnet), subnet.resolution)


def _stage_grid(space: Space, dense: bool) -> list[list[int]]:
    choices = [sorted(c) for c in stage_choices(space)]
    if dense:
        return choices
    return [sorted({c[0], c[len(c) // 2], c[-1]}) for c in choices]


def units_to_measure(space: Space, max_units: int = 3000) -> tuple[list[tuple], bool]:
    """(sorted distinct units, dense): every unit of the space if at most ``max_units``,
    else the units of the width grid (lowest, middle, highest per width group)."""
    units = _grid_units(space, _stage_grid(space, dense=True), limit=max_units)
    if units is not None:
        return sorted(units), True
    if timed_by_layers(space.full_arch):
        _check_group_widths(space)
    return sorted(_grid_units(space, _stage_grid(space, dense=False))), False


def _check_group_widths(space: Space) -> None:
    """ValueError unless every width slot of a layer unit is its group's width (what the
    interpolation of a grid table by groups needs)."""
    widest = [max(c) for c in stage_choices(space)]
    for resolution in space.resolutions:
        base = subnet_units(space, Subnet(resolution, tuple(widest)))
        for unit, found in zip(base, unit_slots(space, resolution)):
            for group, slots in found:
                if not slots or any(unit[i] != widest[group] for i in slots):
                    raise ValueError(
                        f"model.name={space.model!r}: its unit {key_of(unit)} changes with "
                        f"width group {space.groups[space.identity[group]].name!r} but not "
                        f"as that group's width, so a grid table cannot be interpolated; "
                        f"raise config.latency.max_units above the space's unit count or "
                        f"use FLOPs pools")


def unit_slots(space: Space, resolution: int) -> list[tuple]:
    """For every unit position of a subnet, ((group, slots), ...): the ``Subnet.channels``
    indices (width groups) whose width changes that unit, each with the slots of the unit key
    it changes; found by narrowing one group of the widest subnet at a time (cached)."""
    key = (_space_key(space), int(resolution))
    if key not in _SLOTS:
        widest = [max(c) for c in stage_choices(space)]
        base = subnet_units(space, Subnet(resolution, tuple(widest)))
        found = [[] for _ in base]
        for group, choices in enumerate(stage_choices(space)):
            channels = list(widest)
            channels[group] = min(choices)
            narrowed = subnet_units(space, Subnet(resolution, tuple(channels)))
            for position, (old, new) in enumerate(zip(base, narrowed)):
                slots = tuple(i for i in range(1, len(old)) if old[i] != new[i])
                if old != new:
                    found[position].append((group, slots))
        _SLOTS[key] = [tuple(f) for f in found]
    return _SLOTS[key]


_SLOTS: dict = {}  # unit_slots of a space at a resolution; the grid of a space


def _space_key(space: Space) -> tuple:
    return (space.model, json.dumps(space.full_arch, sort_keys=True, default=str),
            space.mult_low, space.mult_high)


def _cached_grid(space: Space) -> list[list[int]]:
    key = (_space_key(space), "grid")
    if key not in _SLOTS:
        _SLOTS[key] = _stage_grid(space, dense=False)
    return _SLOTS[key]


def unit_dependencies(space: Space, resolution: int) -> list[tuple]:
    """For every unit position of a subnet, the width groups (``Subnet.channels`` indices)
    whose width changes that unit."""
    return [tuple(group for group, _ in found) for found in unit_slots(space, resolution)]


def _grid_units(space: Space, grid: list[list[int]], limit: int | None = None) -> set | None:
    """Every unit whose widths come from ``grid``, at every resolution: each unit position
    takes every combination of its groups' grid widths (``unit_dependencies``), the other
    groups at their widest. None as soon as there are more than ``limit``."""
    units = set()
    widest = [g[-1] for g in grid]
    for resolution in space.resolutions:
        positions = {}  # the positions that depend on the same groups share their subnets
        for position, groups in enumerate(unit_dependencies(space, resolution)):
            positions.setdefault(groups, []).append(position)
        for groups, where in positions.items():
            for values in itertools.product(*(grid[g] for g in groups)):
                channels = list(widest)
                for group, value in zip(groups, values):
                    channels[group] = value
                chain = subnet_units(space, Subnet(resolution, tuple(channels)))
                units.update(chain[p] for p in where)
                if limit is not None and len(units) > limit:
                    return None
    return units


class UnitModule(nn.Module):
    """One unit, built like the exported network's layers (eval-mode BatchNorm)."""

    unit: tuple
    depthwise_impl: str = "auto"

    @nn.compact
    def __call__(self, x):
        kind, *v = self.unit
        conv = ops.torch_conv(nn.Conv, kernel_init=ops.he_normal_fan_out, dtype=jnp.float32)
        norm = ops.batch_norm(False, jnp.float32)
        act = nn.relu6
        if kind == "stem":
            _, _, cout, stride = v
            return act(norm()(conv(cout, 3, stride)(x)))
        if kind in ("block", "block_v1"):
            _, _, mid, cout, stride, residual = v
            y = act(norm()(conv(mid, 1)(x))) if mid else x
            y = act(norm()(ops.DepthwiseConv(strides=stride, impl=self.depthwise_impl)(y)))
            y = norm()(conv(cout, 1)(y))
            if kind == "block_v1":
                return act(y)
            return y + x if residual else y
        if kind == "tail":
            return act(norm()(conv(v[2], 1)(x)))
        if kind == "head":
            return ops.classifier(x, v[2], kernel_init=nn.initializers.normal(0.01),
                                  dtype=jnp.float32, torch_bias=False)
        if kind == "conv":
            _, _, cout, kernel, stride, depthwise = v
            y = (ops.DepthwiseConv(kernel, stride, self.depthwise_impl)(x) if depthwise
                 else conv(cout, kernel, stride)(x))
            return nn.relu(norm()(y))
        if kind == "pool":
            return ops.global_avg_pool(x)
        if kind == "linear":
            return nn.Dense(v[2])(x.reshape(x.shape[0], -1))
        raise ValueError(f"unknown latency unit kind {kind!r}")


def time_call(fn: Callable, args, repeats: int, warmup: int = 3) -> float:
    """Median wall time (ms) of ``fn(*args)`` until its result is ready, after warm-up."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def measure_unit(unit: tuple, batch: int, repeats: int, depthwise_impl: str = "auto") -> float:
    kind, hw, cin = unit[:3]
    module = UnitModule(unit, depthwise_impl)
    x = jax.random.normal(jax.random.key(0), (batch, hw, hw, cin))
    variables = module.init(jax.random.key(1), x)
    return time_call(jax.jit(functools.partial(module.apply, variables)), (x,), repeats)


def measure_subnet_ms(space: Space, subnet: Subnet, batch: int, repeats: int,
                      depthwise_impl: str = "auto") -> float:
    """Measured latency (ms) of the plain subnet, as exported, at its resolution."""
    arch = space.arch(subnet)
    model = models.build_model(arch, depthwise_impl=depthwise_impl)
    x = jax.random.normal(jax.random.key(0), (batch, subnet.resolution, subnet.resolution,
                                              arch["in_channels"]))
    variables = model.init(jax.random.key(1), x, train=False)
    return time_call(jax.jit(functools.partial(model.apply, variables, train=False)), (x,),
                     repeats)


def empty_call_ms(batch: int, repeats: int) -> float:
    """The cost of a jitted call that does (almost) nothing on a small input."""
    x = jnp.zeros((batch, 4))
    return time_call(jax.jit(lambda a: a + 1), (x,), repeats)


def device_description() -> dict:
    device = jax.devices()[0]
    return {"device": device.device_kind, "platform": device.platform,
            "jax": jax.__version__}


def _write(path: str, table: dict) -> None:
    paths.write_text(path, json.dumps(table, indent=1, sort_keys=True))


def new_table(space: Space, batch: int, repeats: int) -> dict:
    return {"format": FORMAT, "version": VERSION, **device_description(), "batch_size": batch,
            "dtype": "float32", "repeats": repeats, "model": space.model,
            "resolutions": list(space.resolutions), "in_channels":
            space.full_arch["in_channels"], "num_classes": space.full_arch["num_classes"],
            "date": datetime.date.today().isoformat(), "complete": False, "dense": None,
            "empty_call_ms": None, "units": {}, "calibration": None}


def load_table(path: str) -> dict:
    """A table file, checked for its format and version."""
    if not storage.exists(path):
        raise ValueError(f"latency table {path!r} does not exist; build it with "
                         f"--mode=latency_table")
    table = json.loads(paths.read_text(path))
    if table.get("format") != FORMAT or table.get("version") != VERSION:
        raise ValueError(f"{path!r} is not a version-{VERSION} {FORMAT} file (format "
                         f"{table.get('format')!r}, version {table.get('version')!r})")
    return table


def _resumable(table: dict, fresh: dict) -> bool:
    same = ("device", "platform", "jax", "batch_size", "dtype", "model", "resolutions",
            "in_channels", "num_classes")
    return all(table.get(k) == fresh[k] for k in same)


def build_table(space: Space, path: str, *, batch: int = 1, repeats: int = 30,
                max_units: int = 3000, stop_after: int | None = None,
                save_every: int = 10, depthwise_impl: str = "auto",
                calibration_subnets: int = 10) -> dict:
    """Measures the units of ``space`` into the table at ``path``, continuing a partial table
    of the same device and settings, then fits the calibration; ``stop_after`` measures at
    most that many new units (tests). Progress is logged; the file is complete when
    ``table['complete']``."""
    fresh = new_table(space, batch, repeats)
    table = fresh
    if paths.exists(path):
        old = load_table(path)
        if _resumable(old, fresh):
            table = old
            log.info("latency table %s: resuming with %d units measured", path,
                     len(old["units"]))
        else:
            raise ValueError(f"latency table {path!r} was measured with other settings or on "
                             f"another device ({old.get('device')}, batch "
                             f"{old.get('batch_size')}, jax {old.get('jax')}); use a new path")
    units, dense = units_to_measure(space, max_units)
    table["dense"] = dense
    if table["empty_call_ms"] is None:
        table["empty_call_ms"] = empty_call_ms(batch, repeats)
    todo = [u for u in units if key_of(u) not in table["units"]]
    start, done = time.perf_counter(), 0
    for unit in todo:
        if stop_after is not None and done >= stop_after:
            break
        table["units"][key_of(unit)] = max(
            0.0, measure_unit(unit, batch, repeats, depthwise_impl) - table["empty_call_ms"])
        done += 1
        if done % save_every == 0:
            _write(path, table)
            elapsed = time.perf_counter() - start
            log.info("latency table: %d/%d units (%.0f s, about %.0f s left)",
                     len(table["units"]), len(units), elapsed,
                     elapsed / done * (len(todo) - done))
    table["complete"] = all(key_of(u) in table["units"] for u in units)
    if table["complete"] and table.get("calibration") is None and calibration_subnets >= 0:
        table["calibration"] = calibrate(table, space, batch, repeats, calibration_subnets,
                                         depthwise_impl)
    _write(path, table)
    return table


def calibration_set(space: Space, count: int, seed: int = 0x1A7) -> list[Subnet]:
    """The min and max net and ``count`` distinct random subnets (seeded)."""
    rng = np.random.default_rng(seed)
    subnets = [space.min_subnet(), space.max_subnet()]
    for _ in range(50 * (count + 1)):
        if len(subnets) >= count + 2:
            break
        subnet = space.subnet(*space.random(rng))
        if subnet not in subnets:
            subnets.append(subnet)
    return subnets


def calibrate(table: dict, space: Space, batch: int, repeats: int, count: int,
              depthwise_impl: str = "auto") -> dict:
    """Least-squares ``measured = scale * raw + offset`` over whole measured subnets."""
    raw, measured = [], []
    for subnet in calibration_set(space, count):
        raw.append(predict_subnet_ms(table, space, subnet, calibrated=False))
        measured.append(measure_subnet_ms(space, subnet, batch, repeats, depthwise_impl))
    scale, offset = np.polyfit(raw, measured, 1)
    log.info("latency table calibration: measured = %.3f * raw + %.4f ms (%d subnets)", scale,
             offset, len(raw))
    return {"scale": float(scale), "offset": float(offset), "subnets": len(raw)}


def _free_widths(unit: tuple) -> list[tuple]:
    """The width slots of a unit that vary independently (tied slots grouped)."""
    kind = unit[0]
    if kind == "conv":  # a depthwise conv's input and output widths are one
        return [(2, 3)] if unit[6] else [(2,), (3,)]
    if kind == "stem":
        return [(3,)]
    if kind == "block":
        return [(2, 4)] if unit[6] else [(2,), (4,)]
    if kind == "block_v1":
        return [(2,), (4,)]
    return [(2,)]


def _with_widths(unit: tuple, groups: list[tuple], values: tuple) -> tuple:
    corner = list(unit)
    for slots, value in zip(groups, values):
        for slot in slots:
            corner[slot] = value
    if corner[0] == "block" and corner[3]:
        corner[3] = ops.make_divisible(corner[2] * 6)  # MBV2 expansion follows the input
    return tuple(corner)


def _interpolated(table: dict, unit: tuple) -> float:
    """A unit missing from a grid table: multilinear in its free widths between the nearest
    measured widths below and above (same kind, size, stride and residual)."""
    groups = _free_widths(unit)
    derived = (3,) if unit[0] in MOBILENET_KINDS else ()  # MBV2: follows the input width
    fixed = [i for i in range(1, len(unit))
             if not any(i in g for g in groups) and i not in derived]
    known = [unit_of(k) for k in table["units"]]
    same = [u for u in known if u[0] == unit[0] and len(u) == len(unit)
            and all(u[i] == unit[i] for i in fixed)
            and all(bool(u[i]) == bool(unit[i]) for i in derived)]
    corners = []
    for slots in groups:
        values = sorted({u[slots[0]] for u in same})
        if not values:
            raise ValueError(f"latency table has no unit like {key_of(unit)} to interpolate "
                             f"from; measure it with --mode=latency_table")
        target = unit[slots[0]]
        below = max([v for v in values if v <= target], default=values[0])
        above = min([v for v in values if v >= target], default=values[-1])
        weight = 0.0 if above == below else (target - below) / (above - below)
        corners.append(((below, 1 - weight), (above, weight)))
    total = 0.0
    for choice in itertools.product(*corners):
        weight = float(np.prod([w for _, w in choice]))
        if weight == 0:
            continue
        key = key_of(_with_widths(unit, groups, tuple(v for v, _ in choice)))
        if key not in table["units"]:
            raise ValueError(f"latency table lacks {key}, needed to interpolate {key_of(unit)}")
        total += weight * table["units"][key]
    return total


def predict_ms(table: dict, units: Sequence[tuple], calibrated: bool = True,
               interpolate=None) -> float:
    """Predicted latency (ms) of a chain of units: the table's entries (missing ones from
    ``interpolate(position, unit)``, by default between the measured widths of like units)
    plus one empty call, then the table's calibration (if any and ``calibrated``)."""
    interpolate = interpolate or (lambda position, unit: _interpolated(table, unit))
    total = table["empty_call_ms"]
    for position, unit in enumerate(units):
        key = key_of(unit)
        total += table["units"][key] if key in table["units"] else interpolate(position, unit)
    calibration = table.get("calibration")
    if calibrated and calibration:
        total = calibration["scale"] * total + calibration["offset"]
    return total


def _interpolated_by_groups(table: dict, grid: list, slots_of: list, subnet: Subnet,
                            position: int, unit: tuple) -> float:
    """A layer unit missing from a grid table: multilinear in the widths of the groups it
    depends on (``slots_of``: ``unit_slots``), between the ``grid`` widths of each group
    below and above the subnet's (the corners are the units the grid measured there)."""
    corners = []
    for group, slots in slots_of[position]:
        width = subnet.channels[group]
        below = max(v for v in grid[group] if v <= width)
        above = min(v for v in grid[group] if v >= width)
        weight = 0.0 if above == below else (width - below) / (above - below)
        corners.append([(slots, below, 1 - weight), (slots, above, weight)])
    total = 0.0
    for choice in itertools.product(*corners):
        weight = float(np.prod([w for _, _, w in choice]))
        if weight == 0:
            continue
        corner = list(unit)
        for slots, value, _ in choice:
            for slot in slots:
                corner[slot] = value
        key = key_of(tuple(corner))
        if key not in table["units"]:
            raise ValueError(f"latency table lacks {key}, needed to interpolate {key_of(unit)}")
        total += weight * table["units"][key]
    return total


def predict_subnet_ms(table: dict, space: Space, subnet: Subnet,
                      calibrated: bool = True) -> float:
    """Predicted latency (ms) of a subnet (``predict_ms``); a family timed layer by layer
    interpolates missing units by its width groups (``_interpolated_by_groups``)."""
    interpolate = None
    if timed_by_layers(space.full_arch):
        interpolate = functools.partial(_interpolated_by_groups, table, _cached_grid(space),
                                        unit_slots(space, subnet.resolution), subnet)
    return predict_ms(table, subnet_units(space, subnet), calibrated, interpolate)


def check_table_matches(table: dict, space: Space, path: str) -> None:
    """ValueError when the table was measured for another model or space."""
    wanted = {"model": space.model, "in_channels": space.full_arch["in_channels"],
              "num_classes": space.full_arch["num_classes"]}
    for key, value in wanted.items():
        if table.get(key) != value:
            raise ValueError(f"latency table {path!r} has {key}={table.get(key)!r}, the "
                             f"config's supernet needs {value!r}")
    missing = sorted(set(space.resolutions) - set(table.get("resolutions", [])))
    if missing:
        raise ValueError(f"latency table {path!r} lacks the resolutions {missing}")
