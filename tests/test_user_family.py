"""A network family from outside the package (issue #29 parts 1 and 3): named by its import
path, it trains with PSS-Net on the embedded data, its kept subnets export to ONNX and run in
onnxruntime with the flax model's logits; bad families and names are one-line errors; the
guide's example is this family's file."""

import os
import types

import flax.linen as nn
import jax
import numpy as np
import pytest

from common_jax import artifacts, export, models, traced_flops
from common_jax.data import DATASETS
from common_jax.models import ops
from dcff_jax import architectures
from conftest import ROOT, require
from pssnet_dcff import api, registry
from pssnet_jax import space as space_lib, supernet, switch
from test_pssnet import pss_tiny

import residual_cnn_family

NAME = "residual_cnn_family:FAMILY"


def user_config(**overrides):
    return pss_tiny(**{"model.name": NAME, "pssnet.targets": (4.0, 8.5, 0.5), **overrides})


def test_the_family_resolves_by_import_path_and_its_layers_match_its_forward():
    space = space_lib.space_from_config(user_config(), DATASETS["embedded"])
    assert space.full_arch["family"] == NAME and space.num_stages == 5
    for subnet in (space.max_subnet(), space.min_subnet()):  # layers() equals the traced net
        arch = space.arch(subnet)
        traced_flops.check_layers(arch, subnet.resolution)
    x = np.random.default_rng(0).normal(size=(2, 28, 28, 1)).astype(np.float32)
    net = supernet.build_supernet(space.full_arch)  # masked supernet = sliced plain subnet
    variables = net.init(jax.random.key(0), x, supernet.widths_of(space.full_arch), 28,
                         train=False)
    rng = np.random.default_rng(1)
    variables["batch_stats"] = jax.tree.map(
        lambda a: rng.uniform(0.5, 1.5, a.shape).astype(np.float32), variables["batch_stats"])
    subnet = space.subnet(24, [0.8, 0.75, 0.9, 0.77, 0.85])
    arch = space.arch(subnet)
    masked = net.apply(variables, x, supernet.widths_of(arch), 24, train=False)
    plain = models.build_model(arch)
    sliced = plain.apply(supernet.slice_variables(variables, arch),
                         ops.resize_align_corners(x, 24), train=False)
    np.testing.assert_allclose(sliced, masked, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_a_user_family_trains_with_pss_net_and_its_kept_subnet_runs_in_onnxruntime(tmp_path):
    onnxruntime = require("onnxruntime")
    config = user_config()
    workdir = str(tmp_path / "run")
    summary = api.train(config, workdir).summary
    document = switch.load_subnets(workdir)
    assert len(document["subnets"]) >= 2 and summary["flops"] == document["max"]["flops"]
    entry = document["subnets"][0]
    path = api.export(config, workdir, str(tmp_path / "onnx"), flops=entry["flops"] / 1e6 + 1e-3,
                      export_format="onnx")
    model, variables, meta = export.load_exported(path)
    assert meta["flops"] == entry["flops"] and meta["arch"]["family"] == NAME
    images = np.random.default_rng(2).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    reference = np.asarray(artifacts.inference_function(meta["arch"], variables, meta)(images))
    with open(os.path.join(path, "model.onnx"), "rb") as f:
        session = onnxruntime.InferenceSession(f.read(), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"images": images})[0]
    np.testing.assert_allclose(logits, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


def test_a_user_family_trains_with_dcff_and_exports_its_compact_model(tmp_path):
    from test_dcff import dcff_tiny
    rates = "[0.0]+[0.25]+[0.5]*2+[0.25]"  # stem, stage, the two inner widths, head
    config = dcff_tiny(**{"model.name": NAME, "dcff.rates": rates})
    arch, fused = architectures.compact_arch(NAME, rates, num_classes=10, in_channels=1)
    assert (arch["stem"], arch["stage"], arch["mids"], arch["head"]) == (16, 24, [16, 16], 48)
    assert sorted(fused) == sorted(layer.name for layer in models.arch_layers(arch, 28)
                                   if layer.kind == "conv")  # every conv is some group's
    assert fused["down_conv"] == fused["block1_conv2"] == 32 and fused["head_conv"] == 64
    summary = api.train(config, str(tmp_path / "run")).summary
    path = api.export(config, str(tmp_path / "run"), str(tmp_path / "export"))
    model, variables, meta = export.load_exported(path)
    assert meta["arch"] == arch and meta["flops"] == summary["flops"]
    assert variables["params"]["block0_conv1"]["kernel"].shape == (3, 3, 24, 16)
    with pytest.raises(ValueError, match="config.dcff.rates: .*6 entries; .*expects 5"):
        registry.validate(dcff_tiny(**{"model.name": NAME, "dcff.rates": "[0.5]*6"}))


def test_a_width_group_that_sets_no_layer_is_a_one_line_error(tmp_path):
    """For DCFF (no conv to fuse) and for PSS-Net (no layer's width)."""
    def width_groups(arch):
        return residual_cnn_family.width_groups(arch) + (models.family.WidthGroup("extra", 8),)
    residual_cnn_family.EXTRA_GROUP = types.SimpleNamespace(
        **{**vars(residual_cnn_family.FAMILY), "width_groups": width_groups,
           "with_group_widths": lambda arch, widths, md: residual_cnn_family.with_group_widths(
               arch, widths[:-1], md)})
    from test_dcff import dcff_tiny
    config = dcff_tiny(**{"model.name": "residual_cnn_family:EXTRA_GROUP",
                          "dcff.rates": "[0.0]*6"})
    with pytest.raises(ValueError, match="width group 'extra' of .* sets no conv") as error:
        api.train(config, str(tmp_path / "run"))
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="width group 'extra' of family "
                                         "'residual_cnn_family:EXTRA_GROUP' sets no layer"):
        registry.validate(user_config(**{"model.name": "residual_cnn_family:EXTRA_GROUP"}))


def forward_adding_across_groups(x, arch, *, conv, norm, depthwise, dtype):
    """The test family's network with a planted defect: each block's second conv writes the
    block's inner width, so the residual add joins that group to the stage's."""
    x = nn.relu(norm("stem_bn")(conv(arch["stem"], 3, name="stem_conv")(x)))
    x = nn.relu(norm("down_bn")(conv(arch["stage"], 3, 2, name="down_conv")(x)))
    for i, mid in enumerate(arch["mids"]):
        y = nn.relu(norm(f"block{i}_bn1")(conv(mid, 3, name=f"block{i}_conv1")(x)))
        x = nn.relu(norm(f"block{i}_bn2")(conv(mid, 3, name=f"block{i}_conv2")(y)) + x)
    x = nn.relu(norm("head_bn")(conv(arch["head"], 1, name="head_conv")(x)))
    return ops.classifier(x, arch["num_classes"], kernel_init=ops.he_normal_fan_out,
                          dtype=dtype)


def test_an_add_across_width_groups_or_a_miscounting_layer_list_is_one_line(monkeypatch):
    """PSS-Net traces a user family at a subnet whose groups differ before training: a
    residual add across two groups (the plain network's forward replaced by the planted
    one), or layers() that miscount the forward pass (the head conv left out), stops with one
    line naming the family."""
    residual_cnn_family.MISCOUNTED = types.SimpleNamespace(
        **{**vars(residual_cnn_family.FAMILY), "layers": lambda arch, size: [
            layer for layer in residual_cnn_family.layers(arch, size)
            if layer.name != "head_conv"]})
    with pytest.raises(ValueError, match=r"'residual_cnn_family:MISCOUNTED'.*: its layers\(\) "
                                         r"count [\d,]+ MACs") as error:
        registry.validate(user_config(**{"model.name": "residual_cnn_family:MISCOUNTED"}))
    assert "\n" not in str(error.value)
    registry.validate(user_config())  # the family as written passes
    monkeypatch.setattr(residual_cnn_family, "forward", forward_adding_across_groups)
    with pytest.raises(ValueError, match=r"family 'residual_cnn_family:FAMILY': its forward "
                                         r"fails at the subnet .* does a residual add join "
                                         r"layers of different width groups") as error:
        registry.validate(user_config())
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name,message", [
    ("no_such_module_xyz:FAMILY", "cannot import 'no_such_module_xyz'"),
    ("residual_cnn_family:NOTHING", "has no 'NOTHING'"),
    ("residual_cnn_family:BROKEN", "lacks build, forward"),
])
def test_bad_families_are_one_line_errors_before_any_compile(name, message, tmp_path):
    residual_cnn_family.BROKEN = types.SimpleNamespace(full_arch=residual_cnn_family.full_arch,
                                                       layers=residual_cnn_family.layers)
    with pytest.raises(ValueError, match=message) as error:
        api.train(user_config(**{"model.name": name}), str(tmp_path / "run"))
    assert "\n" not in str(error.value)


def test_a_description_from_a_file_never_imports_its_family():
    arch = dict(residual_cnn_family.full_arch(num_classes=10, in_channels=1),
                family="residual_cnn_family:NOT_RESOLVED")
    with pytest.raises(ValueError, match="has not imported: call common_jax.models.family_of"):
        models.build_model(arch)
    assert "residual_cnn_family:NOT_RESOLVED" not in models.FAMILIES


def test_a_family_without_width_groups_is_refused_by_pss_net(tmp_path):
    residual_cnn_family.PLAIN = types.SimpleNamespace(
        **{f: getattr(residual_cnn_family, f) for f in models.FAMILY_FUNCTIONS})
    with pytest.raises(ValueError, match="PSS-Net supernets are .* or a user family with width"):
        api.train(user_config(**{"model.name": "residual_cnn_family:PLAIN"}),
                  str(tmp_path / "run"))


def test_a_user_familys_latency_table_is_timed_layer_by_layer(tmp_path, monkeypatch):
    """Latency tables and pools need nothing more from a family: its units are the layers of
    its ``layers`` (pssnet_jax/latency.py), timed here by a made-up linear cost."""
    from configs.pssnet.common import latency_section
    from pssnet_jax import latency
    from test_pssnet_latency import linear_cost
    monkeypatch.setattr(latency, "measure_unit", lambda unit, *a, **k: linear_cost(unit))
    monkeypatch.setattr(latency, "empty_call_ms", lambda *a: 0.5)
    monkeypatch.setattr(latency, "calibrate", lambda *a: None)
    path = str(tmp_path / "table.json")
    config = user_config(**{"pssnet.constraints": ("flops", "latency")})
    config.unlock()
    config.latency = latency_section(path)
    table = api.latency_table(config, path)
    assert table["complete"] and {latency.unit_of(k)[0] for k in table["units"]} == {
        "conv", "pool", "linear"}
    registry.validate(config)  # latency pools of a user family, with its table
    space = space_lib.space_from_config(config, DATASETS["embedded"])
    units = latency.subnet_units(space, space.min_subnet())
    assert latency.predict_subnet_ms(table, space, space.min_subnet()) == pytest.approx(
        0.5 + sum(linear_cost(u) - 0.5 for u in units))
    grid = latency.build_table(space, str(tmp_path / "grid.json"), max_units=0)  # a grid too
    assert not grid["dense"] and latency.predict_subnet_ms(
        grid, space, space.min_subnet()) == pytest.approx(
        latency.predict_subnet_ms(table, space, space.min_subnet()))
    # a layer width derived from a group (the head at twice the stage) cannot be interpolated
    residual_cnn_family.DERIVED = types.SimpleNamespace(**{
        **vars(residual_cnn_family.FAMILY), "with_group_widths": lambda arch, w, md: dict(
            residual_cnn_family.with_group_widths(arch, w, md), head=2 * w[1])})
    derived = space_lib.space_from_config(
        user_config(**{"model.name": "residual_cnn_family:DERIVED"}), DATASETS["embedded"])
    with pytest.raises(ValueError, match=r"unit conv:.* changes with width group 'stage' but "
                                         r"not as that group's width"):
        latency.build_table(derived, str(tmp_path / "derived.json"), max_units=0)


def test_the_guide_shows_this_family():
    """docs/architecture.md's "adding a network" example is this test family's file."""
    with open(os.path.join(ROOT, "docs", "architecture.md")) as f:
        guide = f.read()
    with open(residual_cnn_family.__file__) as f:
        assert f"```python\n{f.read()}```" in guide
