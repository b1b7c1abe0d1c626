"""The Python API: everything ``launch.py`` does, as functions for notebooks and scripts.

    from pssnet_dcff import api
    config = api.load_config("configs/pssnet/embedded.py", num_epochs=2)
    result = api.train(config, "runs/demo")           # summary + final train state
    api.kept_subnets("runs/demo")                      # PSS-Net: the kept subnet per target
    path = api.export(config, "runs/demo", flops=4.0)  # best subnet under 4 MFLOPs
    model, variables, meta = api.load_model(path)
    logits = api.predict(model, variables, meta, images_uint8)

The command line is a thin layer over these functions; each dispatches on ``config.method``
through the registry (``pssnet_dcff/registry.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import sys
from typing import Any

import ml_collections

from common_jax import (artifacts, config_check, data, export as export_lib, models, paths,
                        profile, storage)
from pssnet_dcff import config_files, locations, registry
from pssnet_jax.api import kept_subnets, latency_table, subnet_for_budget  # noqa: F401

def load_config(path: str, arg: str | None = None, *, need_latency_table: bool = True,
                validate: bool = True, **overrides) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of a config file, with dotted-key ``overrides``
    (``**{"optimizer.learning_rate": 0.05}`` or ``num_epochs=2``), locked and validated
    (``need_latency_table=False``: a PSS-Net latency table it names may not exist yet;
    ``validate=False``: not validated, e.g. to compare it with a recorded run's config before
    the export its ``init_from`` names exists).
    Relative paths are taken from the current directory, then from this checkout, then from
    the installed copy (``pssnet_dcff/config_files.py``)."""
    path = config_files.resolve(path)
    spec = importlib.util.spec_from_file_location("_config_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(arg) if arg is not None else module.get_config()
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        target = config
        for part in parents:
            if part not in target:
                raise ValueError(f"unknown config key {key!r}")
            target = target[part]
        if leaf not in target:
            raise ValueError(f"unknown config key {key!r}")
        try:
            target[leaf] = value
        except TypeError:
            raise ValueError(config_check.override_type_error(
                key, value, type(target[leaf]).__name__)) from None
    config.lock()
    if validate:
        registry.validate(config, need_latency_table)
    return config


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns: the summary written to ``summary.json`` and the final state."""

    summary: dict
    state: Any


def train(config, workdir: str, stop_after: int | None = None,
          verbose: bool = True) -> TrainResult:
    """Trains (resuming from ``workdir``'s newest checkpoint) and returns summary and state.
    ``verbose``: the log lines (step/total, loss, images/s, ETA, evaluations) go to stdout
    while it runs, e.g. in a notebook, unless the caller configured logging itself."""
    config_check.validate_workdir(workdir)
    locations.check(config, workdir, "train")
    with progress_lines(verbose):
        summary, state = registry.method(config.method).train(config, workdir, stop_after)
    return TrainResult(summary, state)


PROJECT_LOGGERS = ("common_jax", "pssnet_jax", "dcff_jax")


@contextlib.contextmanager
def progress_lines(verbose: bool = True):
    """Prints the project's INFO log lines to stdout inside the block, unless ``verbose`` is
    False or the root logger has handlers of the caller's (absl's default one aside)."""
    configured = [h for h in logging.getLogger().handlers
                  if type(h).__name__ != "ABSLHandler"]
    if not verbose or configured:
        yield
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    loggers = [logging.getLogger(name) for name in PROJECT_LOGGERS]
    saved = [(logger, logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # absl's root handler would print the lines again
    try:
        yield
    finally:
        for logger, level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


def evaluate(config, workdir: str) -> dict:
    """Evaluates the newest checkpoint (PSS-Net: also re-runs the selection)."""
    locations.check(config, workdir, "eval")
    return registry.method(config.method).evaluate_checkpoint(config, workdir)


def profile_report(config) -> str:
    """Per-group FLOPs/params table of the config's model; the last line is the JSON totals."""
    info = data.dataset_info(config.dataset.name)
    arch, extra = registry.method(config.method).profiled_arch(config)
    size = data.image_size(config.dataset)
    layers = models.arch_layers(arch, size)
    return "\n".join([f"{config.model.name} at {size}x{size}x{info.channels}, "
                      f"{info.num_classes} classes", profile.group_table(layers),
                      profile.profile_json(layers, **extra)])


def profile_totals(config) -> dict:
    """The integer totals of ``profile_report`` (flops, flops_thop, params, ...)."""
    return json.loads(profile_report(config).splitlines()[-1])


def export(config, workdir: str, directory: str | None = None, flops: float | None = None,
           latency_ms: float | None = None, export_format: str | None = None,
           all_subnets: bool | None = None) -> str:
    """Exports a plain model (default ``<workdir>/export``): the trained network, DCFF's
    compact model, or for PSS-Net the best kept subnet under ``flops`` MFLOPs or
    ``latency_ms`` predicted ms (defaults ``config.export.*``; both 0 = the max net).
    ``export_format`` ('orbax', 'stablehlo', 'onnx') and ``all_subnets`` (PSS-Net: every
    kept subnet and ladder.json) override ``config.export.format`` / ``.all``."""
    changes = {key: value for key, value in (("format", export_format), ("all", all_subnets))
               if value is not None}
    if flops is not None or latency_ms is not None:  # one budget given: the other is 0
        changes.update(flops=float(flops or 0.0), latency_ms=float(latency_ms or 0.0))
    if changes:
        config = ml_collections.ConfigDict(config.to_dict())
        config.export.update(changes)
        registry.validate(config)
    artifacts.check_format(config.export.format)  # before restoring anything
    locations.check(config, workdir, "export", directory)
    return registry.method(config.method).export_checkpoint(config, workdir, directory)


def import_published(config, workdir: str, source: str, directory: str | None = None) -> str:
    """Imports a published PyTorch file (``--mode=import --import_from=PATH``), read with an
    allowlist, no torch needed: a DCFF or baseline model as an export (default
    ``<workdir>/export``; ``common_jax.torch_import``), an official PSS-Net checkpoint as the
    workdir of a run (``pssnet_jax.torch_import``). Returns what was written."""
    trainer = registry.method(config.method)
    storage.check_readable(source, " (--import_from)")
    return trainer.import_published(config, source, workdir,
                                    directory or paths.join(workdir, "export"))


def load_model(directory: str):
    """(flax module, variables, meta) of an exported model; no training code needed."""
    return export_lib.load_exported(directory)


def predict(model, variables, meta: dict, images):
    """Logits of an exported model for a batch of uint8 NHWC images."""
    return export_lib.predict(model, variables, meta, images)
