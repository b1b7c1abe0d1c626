"""FLOPs/params profiler: the papers' published totals and the counting rules."""

import json

import pytest

from common_jax import profile
from pssnet_dcff import api
from conftest import launch as run_launch

MILLION = 1e6
# (config, key, published value, digits printed in the papers) -- see the foundation issue.
PUBLISHED = [
    ("resnet56_cifar10", "flops", 125.49, 2), ("resnet56_cifar10", "flops_thop", 126.55, 2),
    ("resnet56_cifar10", "params", 0.853, 3),
    ("resnet110_cifar10", "flops_thop", 254.98, 2), ("resnet110_cifar10", "params", 1.728, 3),
    ("vgg16_cifar10", "flops", 313.20, 2), ("vgg16_cifar10", "flops_thop", 314.03, 2),
    ("vgg16_cifar10", "params", 14.73, 2),
    ("googlenet_cifar10", "flops_thop", 1529.42, 2), ("googlenet_cifar10", "params", 6.166, 3),
    ("resnet50_imagenet", "flops_thop", 4111.41, 2), ("resnet50_imagenet", "params", 25.557, 3),
    ("mobilenet_v2_imagenet", "flops", 300.84, 2), ("mobilenet_v1_imagenet", "flops", 568.79, 2),
]


def profile_totals(config_name):
    module = __import__(f"configs.baselines.{config_name}", fromlist=["get_config"])
    return json.loads(api.profile_report(module.get_config()).splitlines()[-1])


@pytest.mark.parametrize("config_name,key,published,digits", PUBLISHED)
def test_profile_matches_published_totals(config_name, key, published, digits):
    totals = profile_totals(config_name)
    assert isinstance(totals[key], int)
    assert round(totals[key] / MILLION, digits) == pytest.approx(published, abs=1e-9)


def test_profile_mode_prints_table_then_json_last():
    result = run_launch("--mode=profile", "--config=configs/baselines/resnet56_cifar10.py")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("stage3") for line in lines)
    assert json.loads(lines[-1]) == {"flops": 125489792, "flops_thop": 126550656,
                                     "params": 853018}


def test_thop_rules_per_layer():
    conv = profile.Layer("conv", "c", "g", 8, 3, 4, 16, kernel=3, stride=2, bias=True)
    assert profile.layer_flops(conv) == 4 * 4 * 16 * 3 * 9
    assert profile.layer_flops_thop(conv) == 4 * 4 * 16 * (3 * 9 + 1)
    assert profile.layer_params(conv) == 16 * 3 * 9 + 16
    dw = profile.Layer("conv", "d", "g", 8, 16, 8, 16, kernel=3, groups=16)
    assert profile.layer_flops(dw) == 8 * 8 * 16 * 9 and profile.layer_params(dw) == 16 * 9
    bn = profile.bn_layer("b", "g", 4, 16)
    assert profile.layer_flops(bn) == 0 and profile.layer_flops_thop(bn) == 2 * 4 * 4 * 16
    pools = {rule: profile.Layer("avgpool", "p", "g", 8, 64, 1, 64, pool_rule=rule)
             for rule in profile.POOL_RULES}
    assert profile.layer_flops(pools["module"]) == 8 * 8 * 64  # PSS-Net: one add per input
    assert profile.layer_flops_thop(pools["module"]) == 64
    assert profile.layer_flops_thop(pools["adaptive"]) == 65 * 64
    assert profile.layer_flops_thop(pools["functional"]) == 0


def test_too_small_input_is_reported():
    from common_jax import models
    arch = models.arch_for("vgg16", num_classes=10, in_channels=3)
    with pytest.raises(ValueError, match="too small"):
        models.arch_layers(arch, 16)


def _traced_cases():
    """Every built-in family (and the small-input MobileNets), DCFF compact models and random
    PSS-Net subnets: (label, description, image size)."""
    import numpy as np
    from common_jax import models
    from dcff_jax import architectures
    from pssnet_jax import space as space_lib
    cases = [(f"{name} small_input={small}", models.arch_for(
        name, num_classes=10, in_channels=3, small_input=small), 32 if small or (
            name not in ("resnet50", "mobilenet_v1", "mobilenet_v2")) else 64)
        for name in models.MODEL_NAMES for small in (False, True)
        if not small or name.startswith("mobilenet")]
    for name, rates in (("resnet56", "[0.4]*27+[0.25]*3"), ("vgg16", "[0.3]*13"),
                        ("resnet50", "[0.0]+([0.43]*7+[0.73]*9)*2+[0.45]*3+[0.0]")):
        compact, _ = architectures.compact_arch(name, rates, num_classes=10, in_channels=3)
        cases.append((f"dcff {name} {rates}", compact, 64 if name == "resnet50" else 32))
    rng = np.random.default_rng(0)
    for model in space_lib.MODELS:
        space = space_lib.make_space(model, num_classes=10, in_channels=1,
                                     resolutions=(32, 40, 48))
        resolution, mults = space.random(rng)
        cases.append((f"pssnet {model} subnet", space.arch(space.subnet(resolution, mults)),
                      resolution))
    return cases


def test_layer_lists_count_what_the_forward_pass_computes(monkeypatch):
    """Issue #29 part 4: for every family, the conv and linear MACs of ``layers`` equal those
    of the traced forward pass (common_jax/traced_flops.py). A layer list that halves one
    conv's output size (a wrong stride), or drops the classifier, is caught with both
    numbers named."""
    from common_jax import models, traced_flops
    for label, arch, size in _traced_cases():
        assert traced_flops.check_layers(arch, size) > 0, label
    arch = models.arch_for("resnet20", num_classes=10, in_channels=3)
    real = models.arch_layers
    for defect in (lambda ls: [ls[0].__class__(**{**vars(ls[0]), "out_hw": ls[0].out_hw // 2})]
                   + ls[1:], lambda ls: [x for x in ls if x.kind != "linear"]):
        monkeypatch.setattr(models, "arch_layers", lambda a, s, d=defect: d(real(a, s)))
        with pytest.raises(ValueError, match=r"'resnet_cifar': its layers\(\) count [\d,]+ "
                                             r"MACs at 32x32, its forward pass 40,551,040"):
            traced_flops.check_layers(arch, 32)


README_PROFILES = [("ResNet-56 (CIFAR)", "resnet56_cifar10"), ("ResNet-110 (CIFAR)",
                   "resnet110_cifar10"), ("VGG-16 (CIFAR)", "vgg16_cifar10"),
                   ("GoogLeNet (CIFAR)", "googlenet_cifar10"), ("ResNet-50 (224)",
                   "resnet50_imagenet"), ("MobileNetV1 (224)", "mobilenet_v1_imagenet"),
                   ("MobileNetV2 (224)", "mobilenet_v2_imagenet")]


def test_readme_profile_table_is_the_profiler_with_the_published_cells_marked():
    """Issue #28 part 7: every cell of the README's profile table is this profiler's count,
    and exactly the cells the papers publish (PUBLISHED, tested above) are in bold."""
    import os
    from conftest import ROOT
    published = {(config, key): digits for config, key, _, digits in PUBLISHED}
    lines = ["| model | flops | flops_thop | params |", "|---|---|---|---|"]
    for label, config in README_PROFILES:
        totals = profile_totals(config)
        cells = []
        for key in ("flops", "flops_thop", "params"):
            digits = published.get((config, key), 2 if key != "params" or config.startswith(
                "vgg") else 3)
            text = f"{totals[key] / MILLION:.{digits}f}M"
            cells.append(f"**{text}**" if (config, key) in published else text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert "\n".join(lines) in readme, "\n".join(lines)


SUPERNETS = [("embedded", "MobileNetV2"), ("embedded_resnet", "ResNet-20"),
             ("mobilenet_v1_imagenet", "MobileNetV1"), ("mobilenet_v2_imagenet", "MobileNetV2"),
             ("resnet50_imagenet", "ResNet-50")]


def supernet_profile_rows():
    """The README's PSS-Net supernet table, rendered from ``--mode=profile`` of each config."""
    rows = []
    for name, label in SUPERNETS:
        module = __import__(f"configs.pssnet.{name}", fromlist=["get_config"])
        totals = json.loads(api.profile_report(module.get_config()).splitlines()[-1])
        rows.append(f"| `pssnet/{name}.py` | {label} | {totals['flops'] / MILLION:.2f}M | "
                    f"{totals['params'] / MILLION:.3f}M | {totals['min_flops'] / MILLION:.2f}M |")
    return rows


def test_readme_supernet_profiles_are_the_configs_profiles():
    """Issue #29 part 2: the README's max/min FLOPs of every PSS-Net supernet config (the
    ResNet-50 max net is the baseline ResNet-50: 4,089.28M / 25.557M) are what
    ``--mode=profile`` prints."""
    from conftest import ROOT
    import os
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    rows = supernet_profile_rows()
    assert "| `pssnet/resnet50_imagenet.py` | ResNet-50 | 4089.28M | 25.557M |" in rows[-1]
    for row in rows:
        assert row in readme, row
