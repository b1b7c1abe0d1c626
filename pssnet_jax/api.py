"""PSS-Net parts of the Python API (re-exported by ``pssnet_dcff.api``): kept subnets,
budget switching and latency tables."""

from __future__ import annotations

import os

from common_jax import data, paths
from pssnet_jax import latency, switch
from pssnet_jax.space import space_from_config


def latency_table(config, path: str | None = None, stop_after: int | None = None) -> dict:
    """Measures (or continues measuring) the latency table of the config's structure space on
    this device into ``path`` (default ``config.latency.table``); returns it."""
    path = path or config.latency.table
    if not path:
        raise ValueError("the latency table needs a path: config.latency.table or --workdir")
    space = space_from_config(config, data.dataset_info(config.dataset.name))
    paths.makedirs(os.path.dirname(paths.absolute(path)))
    lat = config.latency
    return latency.build_table(space, path, batch=lat.batch_size, repeats=lat.repeats,
                               max_units=lat.max_units, stop_after=stop_after,
                               depthwise_impl=config.model.depthwise_impl,
                               calibration_subnets=lat.calibration_subnets)


def kept_subnets(workdir: str) -> list[dict]:
    """The min net, the kept subnet of every target and the max net, by FLOPs."""
    return sorted(switch.candidates(switch.load_subnets(workdir)), key=lambda e: e["flops"])


def subnet_for_budget(workdir: str, flops: float | None = None,
                      latency_ms: float | None = None) -> dict:
    """The kept subnet to run under ``flops`` MFLOPs or ``latency_ms`` predicted ms
    (ValueError below the smallest)."""
    if (flops is None) == (latency_ms is None):
        raise ValueError("give one budget: flops (MFLOPs) or latency_ms")
    document = switch.load_subnets(workdir)
    if latency_ms is not None:
        return switch.best_for_budget(document, latency_ms, "latency")
    return switch.best_for_budget(document, flops)
