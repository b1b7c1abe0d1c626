"""Deployable artifacts of an exported model: its inference function as StableHLO or ONNX.

The inference function takes uint8 NHWC images at the export's input size (for a PSS-Net
subnet the supernet's crop size) and returns logits: normalisation, the resize to the model's
resolution (``export.predict``'s rule) and the network with its weights as constants.
Depthwise convolutions are grouped convolutions (the shifted form is a CPU training choice),
so one artifact is right on every platform. Neither artifact needs this project to run.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from common_jax import data, models, onnx_export, paths
from common_jax.models import ops

FORMATS = ("orbax", "stablehlo", "onnx")
FILES = {"stablehlo": "model.stablehlo", "onnx": "model.onnx"}
PLATFORMS = ("cpu", "cuda", "tpu")
WARMUP_CALLS = 20


def check_format(export_format: str) -> None:
    """ValueError for an unknown format or one whose package is missing (named)."""
    if export_format not in FORMATS:
        raise ValueError(f"config.export.format={export_format!r}: expected one of "
                         f"{list(FORMATS)}")
    if export_format == "onnx" and importlib.util.find_spec("onnx") is None:
        raise ValueError("config.export.format='onnx' needs the onnx package: pip install "
                          "onnx onnxruntime (or the project's [onnx] extra)")


def input_shape(meta: dict) -> tuple:
    """(1, size, size, channels) of the images the artifact takes (the batch is symbolic)."""
    size = meta.get("input_size") or meta["image_size"]
    return 1, size, size, len(meta["mean"])


def inference_function(arch: dict, variables: dict, meta: dict):
    """uint8 NHWC images -> float32 logits, the variables closed over as constants."""
    model = models.build_model(arch, depthwise_impl="conv")
    variables = jax.device_get(variables)

    def infer(images):
        x = data.normalize(images, meta["mean"], meta["std"], jnp.float32)
        x = ops.resize_align_corners(x, meta["image_size"])
        return model.apply(variables, x, train=False)

    return infer


def stablehlo_bytes(fn, shape: tuple) -> bytes:
    """``fn`` serialized with ``jax.export`` for ``PLATFORMS``, batch dimension symbolic."""
    spec = jax.ShapeDtypeStruct(
        jax.export.symbolic_shape(", ".join(["batch", *map(str, shape[1:])])), jnp.uint8)
    return bytes(jax.export.export(jax.jit(fn), platforms=PLATFORMS)(spec).serialize())


def onnx_bytes(fn, shape: tuple) -> bytes:
    return onnx_export.to_onnx(fn, shape, np.uint8).SerializeToString()


def write(directory: str, export_format: str, arch: dict, variables: dict,
          meta: dict) -> dict:
    """Writes the artifact of ``export_format`` (checked by the caller, ``check_format``) to
    ``directory``; the keys model.json records about it (none for 'orbax')."""
    if export_format == "orbax":
        return {}
    shape = input_shape(meta)
    fn = inference_function(arch, variables, meta)
    blob = (stablehlo_bytes if export_format == "stablehlo" else onnx_bytes)(fn, shape)
    if jax.process_index() == 0:
        paths.write_bytes(paths.join(directory, FILES[export_format]), blob)
    return {"artifact": {"format": export_format, "file": FILES[export_format],
                         "input": {"name": "images", "dtype": "uint8",
                                   "shape": ["batch", *shape[1:]]},
                         "output": {"name": "logits", "dtype": "float32"},
                         **({"platforms": list(PLATFORMS)} if export_format == "stablehlo"
                            else {"opset": onnx_export.OPSET})}}


def machine() -> str:
    """The CPU model, core count and onnxruntime version of this machine, in words."""
    import onnxruntime
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores, onnxruntime {onnxruntime.__version__} (CPU)"


def onnxruntime_latency_ms(path: str, shape: tuple, batch_sizes, runs: int) -> dict:
    """{batch: median ms of ``runs`` timed calls after ``WARMUP_CALLS`` untimed ones} of an
    ONNX artifact in onnxruntime's CPU provider (default threading), on random uint8 images."""
    import onnxruntime
    session = onnxruntime.InferenceSession(paths.read_bytes(path),
                                           providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    out = {}
    for batch in batch_sizes:
        images = rng.integers(0, 256, (batch, *shape[1:]), dtype=np.uint8)
        times = []
        for i in range(runs + WARMUP_CALLS):
            start = time.perf_counter()
            session.run(None, {"images": images})
            if i >= WARMUP_CALLS:
                times.append(1000 * (time.perf_counter() - start))
        out[str(batch)] = float(np.median(times))
    return out
