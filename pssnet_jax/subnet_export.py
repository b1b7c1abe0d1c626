"""Export of a kept PSS-Net subnet as a plain MobileNet (sliced params, its recalibrated BN
statistics), loadable with ``common_jax.export.load_exported`` without supernet code."""

from __future__ import annotations

import logging

import jax

from common_jax import export as export_lib
from pssnet_jax import constraints as constraints_lib, supernet, switch
from pssnet_jax.space import Subnet
from pssnet_jax.supernet_run import SupernetRun

log = logging.getLogger(__name__)


def export_for_budget(pss: SupernetRun, state, workdir: str, directory: str) -> str:
    """Exports the best kept subnet under ``config.export.flops`` (MFLOPs) or
    ``config.export.latency_ms`` (predicted ms); both 0 = the max net."""
    document = switch.load_subnets(workdir)
    budgets = pss.config.export
    if budgets.latency_ms:
        budget, metric = budgets.latency_ms, "latency"
    else:
        budget, metric = budgets.flops or document["max"]["flops"] / 1e6, "flops"
    entry = switch.best_for_budget(document, budget, metric)
    log.info("exporting %s (%.2f MFLOPs) for a budget of %g %s", entry["channels"],
             entry["flops"] / 1e6, budget, constraints_lib.UNITS[metric])
    return export_subnet(pss, state, entry, directory)


def export_subnet(pss: SupernetRun, state, entry: dict, directory: str) -> str:
    """Exports the subnet of a subnets.json ``entry`` as a plain MobileNet with its
    recalibrated BN statistics, in ``config.export.format``."""
    subnet = Subnet.from_json(entry)
    pss.space.check(subnet)
    arch = pss.space.arch(subnet)
    stats = pss.recalibrated_stats(state, subnet)
    variables = supernet.slice_variables(
        {"params": state["params"], "batch_stats": jax.device_get(stats)}, arch)
    return export_lib.export_model(
        directory, arch, variables, image_size=subnet.resolution, info=pss.run.input.info,
        export_format=pss.config.export.format,
        extra={"input_size": pss.space.resolutions[-1], "subnet": subnet.to_json(),
               "flops": entry["flops"], "params": entry["params"],
               "latency_ms": entry.get("latency_ms"), "target": entry["target"],
               "constraint": entry.get("constraint")})
