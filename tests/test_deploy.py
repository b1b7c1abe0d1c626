"""Deployable artifacts (issue #18): StableHLO and ONNX exports of every model family run
without this project and give the flax model's logits; the budget ladder's picker.

The PSS-Net ladder end to end (CLI flags, ladder.json, measured latency, the shipped picker
in a Python without site-packages) is in tests/test_pssnet.py, next to its trained run.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common_jax import artifacts, data, export, models
from conftest import launch, TINY_FLAGS
from test_dcff import R50, RATE_STRINGS
from dcff_jax import architectures
from pssnet_jax import ladder_pick

PROJECT_PACKAGES = ("common_jax", "pssnet_jax", "dcff_jax", "pssnet_dcff", "configs",
                    "evidence", "benchmarks")
# Loads every artifact under argv[1] with only jax / onnxruntime / numpy: the project's
# packages are unimportable (-I drops the checkout from sys.path; the finder refuses them
# even if installed) and the script reports any that got loaded anyway.
RUNNER = f"""
import importlib.abc, json, os, sys
BLOCKED = {PROJECT_PACKAGES!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import numpy as np, jax, onnxruntime
root = sys.argv[1]
out = {{}}
for family in sorted(os.listdir(root)):
    folder = os.path.join(root, family)
    images = np.load(os.path.join(folder, "images.npy"))
    with open(os.path.join(folder, "onnx", "model.onnx"), "rb") as f:
        session = onnxruntime.InferenceSession(f.read(), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(["logits"], {{"images": images}})[0]
    with open(os.path.join(folder, "stablehlo", "model.stablehlo"), "rb") as f:
        exported = jax.export.deserialize(bytearray(f.read()))
    np.save(os.path.join(folder, "onnx_logits.npy"), onnx_logits)
    np.save(os.path.join(folder, "stablehlo_logits.npy"), np.asarray(exported.call(images)))
    out[family] = exported.platforms
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({{"platforms": out, "project_modules": loaded}}))
"""


def _dcff(model: str, rates: str) -> dict:
    return architectures.compact_arch(model, rates, num_classes=10, in_channels=3)[0]


def _mobilenet_v2_subnet() -> dict:
    """A MobileNetV2 with non-uniform widths, as a PSS-Net subnet is."""
    arch = models.arch_for("mobilenet_v2", num_classes=10, in_channels=3)
    blocks = [dict(b, expand=b["expand"] // 8 * (6 if i % 2 else 5)) for i, b in
              enumerate(arch["blocks"])]
    return dict(arch, stem=24, tail=960, blocks=blocks)


# (family, description, input size, model resolution): DCFF's compact networks at the
# papers' rates, the baselines' MobileNetV1 and a non-uniform MobileNetV2 subnet run at a
# lower resolution than its input (as PSS-Net subnets are).
FAMILIES = {
    "mobilenet_v2_subnet": (_mobilenet_v2_subnet, 32, 24),
    "mobilenet_v1": (lambda: models.arch_for("mobilenet_v1", num_classes=10, in_channels=3,
                                             width_mult=0.5), 32, 32),
    "resnet56_dcff": (lambda: _dcff("resnet56", RATE_STRINGS["resnet56"]), 32, 32),
    "vgg16_dcff": (lambda: _dcff("vgg16", RATE_STRINGS["vgg16"]), 32, 32),
    "googlenet_dcff": (lambda: _dcff("googlenet", RATE_STRINGS["googlenet"]), 32, 32),
    "resnet50_dcff": (lambda: _dcff("resnet50", R50["cos1023m"]), 48, 48),
}


def trained_like(arch: dict, size: int, images) -> dict:
    """Random He-scaled weights (BN scale ~1, biases ~0.1) and the BN statistics of real
    activations (the batch statistics of ``images``), so logits vary with the input as a
    trained model's do. Shapes come from ``eval_shape``: no random-init compile."""
    model = models.build_model(arch)
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                               jnp.zeros((1, size, size, 3)), train=False))

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        noise = rng.standard_normal(leaf.shape).astype(np.float32)
        if len(leaf.shape) > 1:
            return noise * np.float32(np.sqrt(2.0 / np.prod(leaf.shape[:-1])))
        return 1.0 + 0.1 * noise if "scale" in name else 0.1 * noise

    params = jax.tree_util.tree_map_with_path(fill, shapes["params"])
    x = data.normalize(images, [0.5] * 3, [0.25] * 3, jnp.float32)
    zeros = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, np.float32),
                                   shapes["batch_stats"])
    _, new = jax.jit(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]))(
        {"params": params, "batch_stats": zeros})
    # running = 0.9 * old + 0.1 * batch (PyTorch momentum 0.1) with old = 0 -> batch stats
    return {"params": params,
            "batch_stats": jax.tree_util.tree_map(lambda n: np.asarray(n) / 0.1,
                                                  new["batch_stats"])}


def test_every_family_as_stablehlo_and_onnx_runs_without_the_project(tmp_path):
    info = data.DatasetInfo(num_classes=10, channels=3, image_size=32, mean=(0.5,) * 3,
                            std=(0.25,) * 3, source="memory")
    references = {}
    for family, (make_arch, input_size, size) in FAMILIES.items():
        arch = make_arch()
        rng = np.random.default_rng(1)
        images = rng.integers(0, 256, (5, input_size, input_size, 3), dtype=np.uint8)
        variables = trained_like(arch, size,
                                 rng.integers(0, 256, (16, size, size, 3), dtype=np.uint8))
        folder = tmp_path / family
        for fmt in ("onnx", "stablehlo"):
            export.export_model(str(folder / fmt), arch, variables, image_size=size,
                                info=info, export_format=fmt,
                                extra={"input_size": input_size})
        np.save(folder / "images.npy", images)
        _, loaded, meta = export.load_exported(str(folder / "onnx"))
        assert meta["artifact"]["file"] == "model.onnx" and meta["artifact"]["opset"] >= 17
        # the flax model of the export (grouped depthwise convs, as the artifacts have them)
        references[family] = np.asarray(
            jax.jit(artifacts.inference_function(arch, loaded, meta))(images))
    result = subprocess.run([sys.executable, "-I", "-c", RUNNER, str(tmp_path)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["project_modules"] == []
    for family, reference in references.items():
        assert report["platforms"][family] == ["cpu", "cuda", "tpu"]
        scale = np.abs(reference).max()
        assert np.std(reference, axis=0).mean() > 1e-3 * scale, family  # input-dependent
        for fmt, tol in (("onnx", 1e-4), ("stablehlo", 1e-5)):
            logits = np.load(tmp_path / family / f"{fmt}_logits.npy")
            np.testing.assert_allclose(logits, reference, rtol=tol, atol=tol * scale,
                                       err_msg=f"{family} {fmt}")


def test_onnx_graph_has_batchnorm_folded_and_grouped_depthwise(tmp_path):
    import onnx
    arch = models.arch_for("mobilenet_v2", num_classes=10, in_channels=1, width_mult=0.35)
    info = data.DatasetInfo(num_classes=10, channels=1, image_size=28, mean=(0.5,),
                            std=(0.25,), source="memory")
    variables = models.build_model(arch).init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)),
                                              train=False)
    export.export_model(str(tmp_path), arch, variables, image_size=28, info=info,
                        export_format="onnx")
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    ops = [node.op_type for node in graph.node]
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert "BatchNormalization" not in ops and "Mul" not in ops  # BN folded into the convs
    assert len(convs) == 52 and all(len(n.input) == 3 for n in convs)  # each with a bias
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1) for n in convs]
    assert sum(g > 1 for g in groups) == 17  # one grouped (depthwise) conv per block
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [28, 28, 1]


LADDER = {"rungs": [
    {"directory": "00_min", "artifact": "model.onnx", "flops": 2.0e6, "latency_ms": 1.0,
     "selection_accuracy": 0.60, "onnxruntime_ms": {"1": 0.5, "32": 4.0}},
    {"directory": "01_3", "artifact": "model.onnx", "flops": 3.0e6, "latency_ms": 1.5,
     "selection_accuracy": 0.72, "onnxruntime_ms": {"1": 0.8, "32": 6.0}},
    {"directory": "02_4", "artifact": "model.onnx", "flops": 4.0e6, "latency_ms": 2.0,
     "selection_accuracy": 0.70, "onnxruntime_ms": {"1": 0.7, "32": 9.0}},
    {"directory": "03_max", "artifact": "model.onnx", "flops": 5.0e6, "latency_ms": 2.5,
     "selection_accuracy": 0.72, "onnxruntime_ms": {"1": 1.2, "32": 12.0}},
]}


@pytest.mark.parametrize("budget, expected", [
    ({"flops": 2.0}, "00_min"), ({"flops": 3.5}, "01_3"),
    ({"flops": 4.5}, "01_3"),  # the 4-MFLOPs rung fits but is less accurate
    ({"flops": 9.0}, "03_max"),  # tie on accuracy: the larger subnet
    ({"latency_ms": 0.75}, "02_4"), ({"latency_ms": 0.9}, "01_3"),
    ({"latency_ms": 8.0, "batch": 32}, "01_3"), ({"predicted_ms": 1.9}, "01_3"),
])
def test_ladder_picker_chooses_the_most_accurate_rung_within_the_budget(budget, expected):
    rung = ladder_pick.pick(dict(LADDER, root="/deploy"), **budget)
    assert rung["directory"] == expected
    assert rung["path"] == os.path.join("/deploy", expected, "model.onnx")


def test_ladder_picker_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"flops budget 1.5 is below the smallest rung \(2\)"):
        ladder_pick.pick(LADDER, flops=1.5)
    with pytest.raises(ValueError, match="exactly one budget"):
        ladder_pick.pick(LADDER, flops=3.0, latency_ms=1.0)
    rungs = [dict(r, onnxruntime_ms=None) for r in LADDER["rungs"]]
    with pytest.raises(ValueError, match="no measured latency at batch 1"):
        ladder_pick.pick({"rungs": rungs}, latency_ms=5.0)


def test_bad_export_format_or_ladder_of_a_single_model_is_one_line_before_any_work(tmp_path):
    result = launch(*TINY_FLAGS, f"--workdir={tmp_path}", "--mode=export",
                    "--config.export.format=tflite")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: config.export.format='tflite': expected one of "
                                     "['orbax', 'stablehlo', 'onnx']")
    result = launch(*TINY_FLAGS, f"--workdir={tmp_path}", "--mode=export",
                    "--config.export.all=True")
    assert result.returncode == 2 and "method 'baseline' exports one model" in result.stderr
    assert not os.listdir(tmp_path)
