"""Checks of a PSS-Net config (one-line ValueErrors, before anything is compiled)."""

from __future__ import annotations

import numpy as np

from common_jax import checkpoint, data, models, paths
from pssnet_jax import constraints as constraints_lib, latency, report, space as space_lib
from pssnet_jax import subnet_export

SELECTIONS = ("holdout", "rank1", "official")
SAMPLINGS = ("prioritized", "uniform")
STEP_MODES = ("split", "single")


def validate(config, need_latency_table: bool = True) -> None:
    """One-line ValueErrors for a bad ``config.pssnet`` (before anything is compiled); a
    latency table the config uses must exist unless ``need_latency_table`` is False."""
    if "pssnet" not in config:
        raise ValueError("config.method='pssnet' needs a config.pssnet section (see "
                         "configs/pssnet/*.py)")
    cfg = config.pssnet
    for key, names in (("resolutions", "(lowest, highest, step)"), ("targets",
                       "(start, stop, step) in MFLOPs"), ("mult_range", "(low, high)"),
                       ("p_range", "(start, end)"), ("t_range", "(start, end)")):
        if len(cfg[key]) != len(names.split(",")):
            raise ValueError(f"config.pssnet.{key}={tuple(cfg[key])}: expected {names}")
    if not space_lib.is_pss_model(config.model.name):
        raise ValueError(f"config.model.name={config.model.name!r}: PSS-Net supernets are "
                         f"{list(space_lib.MODELS)} or a user family with width groups "
                         f"(common_jax/models/family.py)")
    lo, hi, step = cfg.resolutions
    space_lib.resolution_range(lo, hi, step)
    size = data.image_size(config.dataset)
    if hi != size:
        raise ValueError(f"config.pssnet.resolutions={tuple(cfg.resolutions)}: the highest "
                         f"resolution must equal the crop size {size} (config.dataset.image_size)")
    if not 0 < cfg.mult_range[0] <= cfg.mult_range[1] <= 1:
        raise ValueError(f"config.pssnet.mult_range={tuple(cfg.mult_range)}: need 0 < low <= "
                         f"high <= 1")
    space = space_lib.space_from_config(config, data.dataset_info(config.dataset.name))
    if models.is_import_path(config.model.name):
        space_lib.check_user_family(space)
    names = tuple(cfg.constraints)
    if not names or len(set(names)) != len(names) or not set(names) <= set(
            constraints_lib.CONSTRAINTS):
        raise ValueError(f"config.pssnet.constraints={names}: expected one or more distinct of "
                         f"{list(constraints_lib.CONSTRAINTS)}")
    if "flops" in names:
        _check_targets("config.pssnet.targets", cfg.targets, "MFLOPs",
                       [report.costs(space, s)["flops"] / 1e6
                        for s in (space.min_subnet(), space.max_subnet())])
    for key, allowed in (("selection", SELECTIONS), ("step_mode", STEP_MODES),
                         ("sampling", SAMPLINGS)):
        if cfg[key] not in allowed:
            raise ValueError(f"config.pssnet.{key}={cfg[key]!r}: expected one of "
                             f"{list(allowed)}")
    if cfg.selection == "holdout" and not config.dataset.holdout_examples:
        raise ValueError("config.pssnet.selection='holdout' needs config.dataset."
                         "holdout_examples > 0 (or selection 'rank1' / 'official')")
    for key in ("pool_size", "topk", "recal_batches", "map_samples"):
        if cfg[key] < 1:
            raise ValueError(f"config.pssnet.{key}={cfg[key]!r} must be at least 1")
    if not 0 <= cfg.ema < 1:
        raise ValueError(f"config.pssnet.ema={cfg.ema!r} must be in [0, 1)")
    if cfg.bn_group_size and (cfg.bn_group_size < 0 or config.batch_size % cfg.bn_group_size):
        raise ValueError(f"config.pssnet.bn_group_size={cfg.bn_group_size} must divide "
                         f"config.batch_size={config.batch_size}")
    _validate_export(config, space)
    _validate_latency(config, space, need_latency_table)


def _validate_export(config, space) -> None:
    if config.init_from and not paths.isdir(checkpoint.checkpoint_dir(config.init_from)):
        raise ValueError(f"config.init_from={config.init_from!r}: a PSS-Net run starts from "
                         f"a PSS-Net workdir (its {checkpoint.CHECKPOINTS}/ and pools, e.g. "
                         f"one written by --mode=import), not from an exported model")
    export = config.export
    if export.subnet:
        subnet_export.parse_subnet(export.subnet, space)
        if export.all or export.flops or export.latency_ms:
            raise ValueError("config.export.subnet names one subnet: leave export.all, "
                             "export.flops and export.latency_ms unset")
    if config.export.flops < 0 or config.export.latency_ms < 0:
        raise ValueError(f"config.export.flops={config.export.flops!r} and latency_ms="
                         f"{config.export.latency_ms!r} must be >= 0")
    if config.export.flops and config.export.latency_ms:
        raise ValueError("config.export: give flops or latency_ms, not both")
    runs, batches = config.export.latency_runs, tuple(config.export.latency_batches)
    if not (isinstance(runs, int) and runs > 0 and batches
            and all(isinstance(b, int) and b > 0 for b in batches)):
        raise ValueError(f"config.export.latency_runs={runs!r} and latency_batches={batches!r}"
                         f": expected a positive int and a tuple of positive ints")


def _check_targets(name: str, targets, unit: str, span: list) -> None:
    """ValueError unless (start, stop, step) is a grid with a target within ``span``."""
    start, stop, step = targets
    if not 0 <= start < stop or step <= 0:
        raise ValueError(f"{name}={tuple(targets)}: need 0 <= start < stop and step > 0 "
                         f"({unit})")
    low, high = span
    grid = np.arange(start + step, stop - step / 2, step)
    if not np.any((grid >= low - step / 2) & (grid < high + step / 2)):
        digits = 2 if unit == "MFLOPs" else 3
        raise ValueError(f"{name}={tuple(targets)}: no target on this grid lies within the "
                         f"structure space's {low:.{digits}f}..{high:.{digits}f} {unit}")


def _validate_latency(config, space, need_table: bool) -> None:
    """The latency table exists and fits the supernet wherever the config needs it."""
    needs = "latency" in config.pssnet.constraints or config.export.latency_ms > 0
    if "latency" not in config:
        if needs:
            raise ValueError("latency pools or export.latency_ms need a config.latency section "
                             "(configs/pssnet/common.py latency_section)")
        return
    lat = config.latency
    if len(lat.targets) != 3:
        raise ValueError(f"config.latency.targets={tuple(lat.targets)}: expected (start, stop, "
                         f"step) in ms, or zeros for automatic targets")
    for key in ("num_pools", "batch_size", "repeats"):
        if lat[key] < 1:
            raise ValueError(f"config.latency.{key}={lat[key]!r} must be at least 1")
    if needs and need_table and not lat.table:
        raise ValueError("latency pools or export.latency_ms need config.latency.table (build "
                         "one with --mode=latency_table)")
    if needs and need_table:
        table = latency.load_table(lat.table)
        latency.check_table_matches(table, space, lat.table)
        if any(lat.targets) and "latency" in config.pssnet.constraints:
            _check_targets("config.latency.targets", lat.targets, "ms", [
                latency.predict_subnet_ms(table, space, s)
                for s in (space.min_subnet(), space.max_subnet())])
