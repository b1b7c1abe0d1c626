"""One-line ValueErrors for a bad ``config.dcff`` (before anything is compiled)."""

from __future__ import annotations

import ml_collections

from common_jax import data
from dcff_jax import architectures, fusion
from dcff_jax.rates import RateStringError


def validate(config: ml_collections.ConfigDict, need_latency_table: bool = True) -> None:
    """Checks ``config.dcff`` and the keys DCFF restricts (``need_latency_table`` is unused:
    the registry passes it to every method)."""
    if "dcff" not in config:
        raise ValueError("config.method='dcff' needs a config.dcff section (see "
                         "configs/dcff/*.py)")
    if config.dcff.mode not in fusion.MODES:
        raise ValueError(f"config.dcff.mode={config.dcff.mode!r}: expected one of "
                         f"{list(fusion.MODES)}")
    if not architectures.is_dcff_model(config.model.name):
        raise ValueError(f"config.model.name={config.model.name!r} has no DCFF architecture; "
                         f"expected one of {list(architectures.DCFF_MODELS)} or a user family "
                         f"with width groups")
    if config.model.width_mult != 1.0:
        raise ValueError(f"config.model.width_mult={config.model.width_mult}: DCFF widths come "
                         f"from config.dcff.rates; use 1.0")
    if not 0 < config.dcff.t_start < config.dcff.t_end or config.dcff.k <= 0:
        raise ValueError(f"config.dcff: need 0 < t_start < t_end and k > 0, got t_start="
                         f"{config.dcff.t_start}, t_end={config.dcff.t_end}, k={config.dcff.k}")
    _validate_schedule(config.dcff)
    if config.init_from and config.dcff.mode != "scratch":
        raise ValueError(f"config.init_from={config.init_from!r}: only plain models (baseline, "
                         f"DCFF scratch) start from an exported model, not DCFF mode "
                         f"{config.dcff.mode!r}")
    info = data.dataset_info(config.dataset.name)
    try:
        architectures.compact_arch(config.model.name, config.dcff.rates,
                                   num_classes=info.num_classes, in_channels=info.channels)
    except RateStringError as e:
        raise ValueError(f"config.dcff.rates: {e}") from None


def _validate_schedule(cfg) -> None:
    if cfg.schedule not in ("epoch", "progress"):
        raise ValueError(f"config.dcff.schedule={cfg.schedule!r}: expected 'epoch' or "
                         f"'progress'")
    for key in ("paper_epochs", "update_every_steps"):
        value = cfg[key]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"config.dcff.{key}={value!r} must be a positive integer")
