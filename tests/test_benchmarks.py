"""The throughput benchmark and its PyTorch reference: the reference computes the same networks
as the JAX models (same weights -> same logits), and the benchmark runs in its smallest form."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from common_jax import data, models
from pssnet_dcff import api
from conftest import ROOT, require
from dcff_jax.model import FUSION
from dcff_jax.model import build_fused_model
from dcff_jax.train import compact
from pssnet_jax import supernet
from pssnet_jax.space import space_from_config
from pssnet_jax.space import Subnet

torch = require("torch")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import result_tables  # noqa: E402
import torch_reference  # noqa: E402


def _conv(kernel):
    """flax (kh, kw, in, out) kernel -> torch (out, in, kh, kw) weight."""
    return torch.tensor(np.asarray(kernel).transpose(3, 2, 0, 1))


def _load(module, tensors: dict) -> None:
    state = module.state_dict()
    missing = set(tensors) ^ {k for k in state if not k.endswith(("running_mean", "running_var",
                                                                  "num_batches_tracked"))}
    assert not missing, missing
    module.load_state_dict({**state, **tensors})


def _bn(params, flax_name, torch_name):
    return {f"{torch_name}.weight": torch.tensor(np.asarray(params[flax_name]["scale"])),
            f"{torch_name}.bias": torch.tensor(np.asarray(params[flax_name]["bias"]))}


def _fc(params):
    return {"fc.weight": torch.tensor(np.asarray(params["fc"]["kernel"]).T),
            "fc.bias": torch.tensor(np.asarray(params["fc"]["bias"]))}


def sliced_mobilenet_tensors(params, full: dict) -> dict:
    """The flax MobileNetV2 supernet's params (or any tree shaped like them, e.g. gradients)
    as the reference SlicedMobileNet's named tensors."""
    tensors = {"stem.weight": _conv(params["stem_conv"]["kernel"]),
               **_bn(params, "stem_bn", "stem_bn"), **_fc(params),
               "tail.weight": _conv(params["tail_conv"]["kernel"]),
               **_bn(params, "tail_bn", "tail_bn")}
    for i, block in enumerate(full["blocks"]):
        if block["expand"]:
            tensors[f"expand.{i}.weight"] = _conv(params[f"block{i}_expand_conv"]["kernel"])
            tensors.update(_bn(params, f"block{i}_expand_bn", f"expand_bn.{i}"))
        tensors[f"dw.{i}.weight"] = _conv(params[f"block{i}_dw_conv"]["kernel"])
        tensors.update(_bn(params, f"block{i}_dw_bn", f"dw_bn.{i}"))
        tensors[f"pw.{i}.weight"] = _conv(params[f"block{i}_pw_conv"]["kernel"])
        tensors.update(_bn(params, f"block{i}_pw_bn", f"pw_bn.{i}"))
    return tensors


def test_reference_supernet_equals_the_masked_jax_supernet():
    """A middle subnet at 20 px: the sliced PyTorch supernet (run in float64; its float32 CPU
    convs round ~10x more than XLA's here) and the masked flax supernet give the same
    training-mode logits from the same weights."""
    config = api.load_config("configs/pssnet/embedded.py")
    space = space_from_config(config, data.dataset_info("embedded"))
    low, high = space.min_subnet(), space.max_subnet()
    subnet = Subnet(20, tuple(h if i % 2 else lo for i, (lo, h) in enumerate(
        zip(low.channels, high.channels))))
    space.check(subnet)
    arch, full = space.arch(subnet), space.full_arch
    model = supernet.build_supernet(full)
    x = np.asarray(jax.random.normal(jax.random.key(0), (32, 28, 28, 1)))
    variables = model.init(jax.random.key(1), x, supernet.widths_of(full), 28, train=False)
    ours, _ = model.apply(variables, x, supernet.widths_of(arch), 20, train=True,
                          mutable=["batch_stats"])
    reference = torch_reference.SlicedMobileNet(full)
    _load(reference, sliced_mobilenet_tensors(variables["params"], full))
    theirs = reference.double().train()(
        torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float64)), arch, 20)
    np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), rtol=1e-4, atol=1e-4)


def fused_resnet_tensors(params, fusion, arch: dict) -> dict:
    """The fused flax ResNet's params (or a tree shaped like them) and its fusion matrices
    as the reference FusedResNetCifar's named tensors (P buffers included)."""
    tensors = {"stem.weight": _conv(params["stem_conv"]["kernel"]),
               "stem.P": torch.tensor(np.asarray(fusion["stem_conv"]["P"])),
               **_bn(params, "stem_bn", "stem_bn"), **_fc(params)}
    k = 0
    for s, blocks in enumerate(arch["stages"]):
        for b in range(len(blocks)):
            name, block = f"stage{s + 1}_block{b}", f"blocks.{k}"
            for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):
                tensors[f"{block}.{conv}.weight"] = _conv(params[name][conv]["kernel"])
                tensors[f"{block}.{conv}.P"] = torch.tensor(np.asarray(fusion[name][conv]["P"]))
                tensors.update(_bn(params[name], bn, f"{block}.{bn}"))
            k += 1
    return tensors


def test_reference_fused_resnet_equals_the_jax_fused_model():
    """DCFF's fused ResNet-20 (embedded rates) with the same banks and fusion matrices."""
    config = api.load_config("configs/dcff/embedded.py")
    arch, bank_widths = compact(config)
    model = build_fused_model(arch, bank_widths)
    x = np.asarray(jax.random.normal(jax.random.key(0), (4, 28, 28, 1)))
    variables = model.init(jax.random.key(1), x, train=False)
    full = models.arch_for("resnet20", num_classes=10, in_channels=1)
    reference = torch_reference.FusedResNetCifar(arch, full, seed=3)
    matrices = {name: module.P.numpy() for name, module in reference.named_modules()
                if isinstance(module, torch_reference.FuseConv)}
    fusion = {"stem_conv": {"P": matrices["stem"]}}
    for s, blocks in enumerate(arch["stages"]):
        for b in range(len(blocks)):
            k = sum(len(stage) for stage in arch["stages"][:s]) + b
            fusion[f"stage{s + 1}_block{b}"] = {conv: {"P": matrices[f"blocks.{k}.{conv}"]}
                                                for conv in ("conv1", "conv2")}
    _load(reference, fused_resnet_tensors(variables["params"], fusion, arch))
    ours, _ = model.apply({**variables, FUSION: fusion}, x, train=True,
                                     mutable=["batch_stats"])
    theirs = reference.train()(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_throughput_quick_runs_and_writes_the_table(tmp_path):
    out = tmp_path / "throughput.json"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "throughput.py"), "--quick",
         "--steps=2", "--warmup=1", f"--out={out}"], cwd=ROOT, capture_output=True, text=True,
        timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["results"]
    for name in ("pss_embedded_f32", "dcff_embedded", "dcff_resnet56", "fusion_resnet50",
                 "recal_eval_pss_embedded_f32", "infer_dcff_embedded_compact_b256"):
        assert np.isfinite(rows[name]["median_ms"]) and rows[name]["median_ms"] > 0, name
    assert rows["pss_embedded_f32"]["resolutions"] == 4  # 16, 20, 24, 28 px all compiled
    assert 0 < rows["pss_embedded_f32"]["torch_ratio"] and rows["torch_dcff_resnet56"]
    assert result.stdout.strip().splitlines()[-1].startswith("torch_dcff_resnet56")
    # benchmarks/RESULTS.md's tables render from a fresh output (the schema they read holds)
    assert "| `pss_embedded_f32` float32, batch 128 |" in result_tables.throughput_steps_table(
        report)
    assert "`fusion_resnet50`: all 49 fusion matrices" in result_tables.throughput_other_table(
        report)
    assert result_tables.machine_line(report).startswith("cpu, ")


def _probe(*args, timeout=600):
    return subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "compile_probe.py"),
                           "--config=configs/pssnet/embedded.py", "--batch=8", "--steps=1",
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_compile_probe_rejects_unknown_variants_before_compiling():
    result = _probe("--variants=f32,bf16_fast", timeout=60)
    assert result.returncode != 0
    assert "bf16_fast" in result.stderr and "bf16_autotune0" in result.stderr


@pytest.mark.slow
def test_compile_probe_compares_dtypes_forms_and_reports_timeouts(tmp_path):
    out = tmp_path / "probe.json"
    result = _probe("--variants=f32,bf16,f32_plain", "--resolutions=16", f"--out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    variants = report["variants"]
    # the parent records the date and the device its children compiled for
    assert result_tables.machine_line(report) == (
        f"{variants['f32']['device']}, {os.cpu_count()} CPUs, jax {jax.__version__}, "
        f"{report['date']}")
    assert "| bf16 |" in result_tables.compile_probe_table(report)
    for name in ("f32", "bf16", "f32_plain"):
        assert variants[name]["status"] == "ok", variants[name]
        assert variants[name]["compile_s"]["16"] > 0 and variants[name]["run_ms"] > 0
    ops = {name: variants[name]["hlo_ops"] for name in variants}
    assert ops["f32"]["convolution"] == ops["f32_plain"]["convolution"]  # the same network
    assert ops["bf16"]["convert"] > ops["f32"]["convert"]
    # The channel masks are folded into BN's scale and bias: the f32 supernet gradient holds
    # no per-fusion mask conversions (multiplying activations by the mask left hundreds).
    assert ops["f32"]["convert"] < 20, ops["f32"]
    timed_out = _probe("--variants=f32", "--resolutions=16", "--timeout=0.5", timeout=120)
    assert timed_out.returncode == 0 and "timeout after 0.5 s" in timed_out.stdout
