"""Method name (``config.method``) -> the module that trains it.

Each module provides ``validate(config, need_latency_table)``, ``profiled_arch(config)``,
``train(config, workdir, stop_after)`` -> (summary, state), ``evaluate_checkpoint(config,
workdir)``, ``export_checkpoint(config, workdir, directory)`` and ``import_published(config,
source, workdir, directory)``; ``INIT_FROM = "workdir"`` when its ``config.init_from`` names a
workdir of the method rather than an exported model. A third method adds its
package and one line here; no file of ``common_jax`` changes (docs/architecture.md).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from common_jax import config_check

METHODS = {
    "baseline": "common_jax.train",
    "dcff": "dcff_jax.train",
    "pssnet": "pssnet_jax.train",
}


def method(name: str) -> ModuleType:
    """The trainer module of a method name; ValueError naming the allowed ones."""
    if name not in METHODS:
        raise ValueError(f"config.method={name!r}: expected one of {list(METHODS)}")
    return importlib.import_module(METHODS[name])


def validate(config, need_latency_table: bool = True) -> None:
    """Every check of a resolved config: the common keys, then the method's section (a PSS-Net
    latency table the config uses must exist unless ``need_latency_table`` is False)."""
    trainer = method(config.method)
    config_check.validate(config, init_from_export=getattr(trainer, "INIT_FROM", "export") ==
                          "export")
    if config.export.all and not hasattr(trainer, "export_ladder"):
        raise ValueError(f"config.export.all=True exports every kept subnet of a PSS-Net run; "
                         f"method {config.method!r} exports one model (leave it False)")
    trainer.validate(config, need_latency_table)
