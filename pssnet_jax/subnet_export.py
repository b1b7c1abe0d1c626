"""Export of a kept PSS-Net subnet as a plain MobileNet (sliced params, its recalibrated BN
statistics), loadable with ``common_jax.export.load_exported`` without supernet code."""

from __future__ import annotations

import json
import logging

import jax

from common_jax import export as export_lib
from pssnet_jax import constraints as constraints_lib, report, supernet, switch
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


def parse_subnet(text: str, space) -> Subnet:
    """The subnet of ``config.export.subnet`` (JSON ``{"resolution": R, "channels": [...]}``,
    read with ``json.loads``); ValueError naming what does not fit the structure space."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"config.export.subnet={text!r} is not JSON ({error.msg}); expected "
                         f'{{"resolution": R, "channels": [...]}}') from None
    if not (isinstance(value, dict) and set(value) == {"resolution", "channels"}
            and isinstance(value["resolution"], int) and isinstance(value["channels"], list)
            and all(isinstance(c, int) for c in value["channels"])):
        raise ValueError(f"config.export.subnet={text!r}: expected exactly "
                         f'{{"resolution": R, "channels": [...]}} with integers')
    subnet = Subnet.from_json(value)
    try:
        space.check(subnet)
    except ValueError as error:
        raise ValueError(f"config.export.subnet={text!r}: {error}") from None
    return subnet


def export_named(pss: SupernetRun, state, text: str, directory: str) -> str:
    """Exports the subnet named by ``config.export.subnet`` (any subnet of the space)."""
    subnet = parse_subnet(text, pss.space)
    entry = report.entry(pss.space, subnet, target="named", test={"accuracy": None,
                                                                  "loss": None})
    log.info("exporting the named subnet %s at %d px (%.2f MFLOPs)", list(subnet.channels),
             subnet.resolution, entry["flops"] / 1e6)
    return export_subnet(pss, state, entry, directory)


def export_subnet(pss: SupernetRun, state, entry: dict, directory: str) -> str:
    """Exports the subnet of a subnets.json ``entry`` as a plain MobileNet with its
    recalibrated BN statistics (with ``config.export.recalibrate=False``: the checkpoint's
    stored ones, exact only for the subnet they were computed for), in
    ``config.export.format``."""
    subnet = Subnet.from_json(entry)
    pss.space.check(subnet)
    arch = pss.space.arch(subnet)
    recalibrate = pss.config.export.recalibrate
    stats = pss.recalibrated_stats(state, subnet) if recalibrate else state["batch_stats"]
    variables = supernet.slice_variables(
        {"params": state["params"], "batch_stats": jax.device_get(stats)}, arch)
    return export_lib.export_model(
        directory, arch, variables, image_size=subnet.resolution, info=pss.run.input.info,
        export_format=pss.config.export.format,
        extra={"input_size": pss.space.resolutions[-1], "subnet": subnet.to_json(),
               "flops": entry["flops"], "params": entry["params"],
               "latency_ms": entry.get("latency_ms"), "target": entry["target"],
               "constraint": entry.get("constraint"), "bn_recalibrated": bool(recalibrate)})
