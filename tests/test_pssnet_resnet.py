"""ResNet supernets (issue #29 part 2): a CIFAR ResNet-20 supernet trains on the embedded
data, resumes exactly, keeps a subnet per target and exports them as the ONNX ladder of plain
ResNets whose onnxruntime logits equal the flax model's. The masked-vs-sliced and
layers-vs-traced checks of the ResNet families are in test_pssnet_model.py and
test_profile.py; the configs' max/min FLOPs in test_profile.py."""

import json
import os

import numpy as np
import pytest

from common_jax import export
from conftest import require
from pssnet_dcff import api
from pssnet_jax import switch
from test_pssnet import pss_tiny


def resnet_tiny():
    """configs/pssnet/embedded_resnet.py's space on pss_tiny's data and schedule."""
    from configs.pssnet.embedded_resnet import get_config
    resnet = get_config()
    return pss_tiny(**{"model.name": resnet.model.name,
                       "pssnet.mult_range": resnet.pssnet.mult_range,
                       "pssnet.targets": (8.0, 28.0, 4.0)})


@pytest.mark.slow
def test_a_resnet_supernet_resumes_exactly_keeps_subnets_and_exports_its_onnx_ladder(tmp_path):
    onnxruntime = require("onnxruntime")
    config = resnet_tiny()
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    summary = api.train(config, straight).summary
    assert api.train(config, resumed, stop_after=5).summary["step"] == 5
    again = api.train(config, resumed).summary
    assert (again["train_loss"], again["eval_loss"]) == (summary["train_loss"],
                                                         summary["eval_loss"])
    document = switch.load_subnets(straight)
    assert document == switch.load_subnets(resumed)
    assert len(document["subnets"]) >= 3 and summary["flops"] == document["max"]["flops"]
    assert os.path.getsize(os.path.join(straight, "flops_accuracy.png")) > 1000
    for entry in document["subnets"]:
        assert abs(entry["flops"] / 1e6 - entry["target"]) <= 2.0 + 1e-9
    assert len({tuple(e["channels"][:3]) for e in document["subnets"]}) >= 2  # stage widths vary
    out = tmp_path / "ladder"
    api.export(config, straight, str(out), export_format="onnx", all_subnets=True)
    with open(out / "ladder.json") as f:
        rungs = json.load(f)["rungs"]
    assert len(rungs) == len(switch.candidates(document))
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    for rung in rungs:
        model, variables, meta = export.load_exported(str(out / rung["directory"]))
        assert type(model).__name__ == "ResNetCifar" and meta["flops"] == rung["flops"]
        reference = np.asarray(export.predict(model, variables, meta, images))
        session = onnxruntime.InferenceSession(str(out / rung["directory"] / "model.onnx"),
                                               providers=["CPUExecutionProvider"])
        logits = session.run(None, {"images": images})[0]
        np.testing.assert_allclose(logits, reference, rtol=1e-4,
                                   atol=1e-4 * np.abs(reference).max())
