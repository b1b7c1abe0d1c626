"""Exported models: a plain-width architecture description plus its variables.

``export_model`` writes ``<dir>/model.json`` (the description, input size and normalisation)
and ``<dir>/variables/`` (an orbax checkpoint of ``{"params", "batch_stats"}``);
``load_exported`` rebuilds the flax module from the description alone, so an exported model
loads and runs without the code that trained it (no pickles).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from common_jax import artifacts, data, models, paths
from common_jax.models import ops

FORMAT_VERSION = 1


def export_model(directory: str, arch: dict, variables: dict, *, image_size: int,
                 info: data.DatasetInfo, extra: dict | None = None,
                 export_format: str = "orbax") -> str:
    """Writes the model to ``directory`` (replacing an older export there), with the
    deployable artifact of ``export_format`` (``common_jax.artifacts``) beside it."""
    artifacts.check_format(export_format)
    directory = paths.absolute(directory)
    paths.makedirs(directory)
    meta = {"format_version": FORMAT_VERSION, "arch": arch, "image_size": image_size,
            "mean": list(info.mean), "std": list(info.std), **(extra or {})}
    meta.update(artifacts.write(directory, export_format, arch, variables, meta))
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(paths.join(directory, "variables"), jax.device_get(variables), force=True)
    if jax.process_index() == 0:
        paths.write_text(paths.join(directory, "model.json"), json.dumps(meta, indent=2))
    return directory


def load_exported(directory: str, dtype: str = "float32"):
    """(module, variables, meta) of an exported model; ValueError naming what is missing or
    damaged."""
    path = paths.join(directory, "model.json")
    if not paths.exists(path):
        raise ValueError(f"{directory!r} is not an exported model: model.json is missing")
    try:
        meta = json.loads(paths.read_text(path))
        model = models.build_model(meta["arch"], dtype=dtype)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} is damaged ({type(error).__name__}: {error}); export the "
                         f"model again") from None
    variables_dir = paths.join(paths.absolute(directory), "variables")
    try:
        with ocp.StandardCheckpointer() as ckptr:
            variables = ckptr.restore(variables_dir)
    except Exception as error:  # noqa: BLE001 - any failure means an unusable export
        raise ValueError(f"{variables_dir} is missing or damaged ({type(error).__name__}); "
                         f"export the model again") from None
    return model, variables, meta


def predict(model, variables, meta: dict, images):
    """Logits for uint8 NHWC images, normalised as the model was trained and, when their size
    differs from the model's, resized with align-corners bilinear interpolation (PSS-Net
    subnets run at their own resolution on crops taken at the supernet's)."""
    x = data.normalize(images, meta["mean"], meta["std"], jnp.float32)
    x = ops.resize_align_corners(x, meta["image_size"]).astype(model.dtype)
    return model.apply(variables, x, train=False)


def export_trained(directory: str, arch: dict, variables: dict, run, step: int) -> str:
    """Exports a trained plain-width network of a ``common_jax.run.Run`` with its training
    step and analytic costs in ``model.json``, in ``config.export.format``."""
    return export_model(directory, arch, variables, image_size=run.input.image_size,
                        info=run.input.info, export_format=run.config.export.format,
                        extra={"step": int(step),
                               **models.model_costs(arch, run.input.image_size)})
