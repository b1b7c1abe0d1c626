"""DCFF end to end: rate strings, compact widths, the fused model, training, resume, export."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common_jax import data, export, models
from pssnet_dcff import api
from conftest import override, tiny_config
from dcff_jax import architectures, fusion, rates
from configs.dcff.common import dcff_section
from dcff_jax import fusion_state, train as dcff_train
from dcff_jax.fusion_state import fold
from dcff_jax.model import build_fused_model

RATE_STRINGS = {
    "vgg16": "[0.5]*2+[0.4]*2+[0.35]*3+[0.85]*6",
    "resnet56": "[0.7]*2+[0.5]*3+[0.3]*2+[0.4]+[0.8]+ [0.7]*2+[0.8]*4+[0.4]+[0.2]*2+[0.7]+[0.3]"
                "+[0.8]+[0.4]*2+[0.7]+[0.3]+[0.4]+[0.8]+ [0.0]*3",
    "resnet110": "[0.2]+[0.0]+[0.2]+[0.3]+[0.7]*2+[0.1]+[0.3]*2+[0.4]+[0.7]*2+[0.5]+[0.1]+[0.3]"
                 "+[0.0]+[0.6]+[0.0]+[0.2]+[0.5]+[0.0]+[0.7]*2+[0.5]+[0.7]*2+[0.4]*2+[0.0]+[0.3]"
                 "+[0.1]+[0.5]+[0.1]*3+[0.7]+ [0.1]*2+[0.3]*5+[0.5]+[0.7]+[0.2]+[0.4]+[0.7]*5"
                 "+[0.5]+[0.1]+ [0.6]+[0.2]+[0.5]",
    "googlenet": "[0.0]*2+[0.8]+[0.0]+[0.8]*2+[0.0]*2+ ([0.0]+[0.9]+[0.0]+[0.9]*2+[0.0]*2)*3+ "
                 "([0.0]+[0.8]+[0.0]+[0.8]*2+[0.0]*2)*3+ ([0.0]+[0.9]+[0.0]+[0.9]*2+[0.0]*2)*2",
}
R50 = {
    "step958m": "[0.0]+[0.8]*10+[0.7]*6+[0.6]*10+[0.4]*6+[0.3]*4",
    "step1491m": "[0.0]+[0.6]*10+[0.5]*6+[0.5]*10+[0.4]*6+[0.2]*4",
    "step2249m": "[0.0]+[0.35]*10+[0.3]*6+[0.4]*10+[0.3]*6+[0.1]*4",
    "cos1523m": "[0.0]+([0.5]*10+[0.5]*6)*2+[0.25]*3+[0.0]",
    "cos1381m": "[0.0]+([0.7]*7+[0.45]*9)*2+[0.24]*3+[0.0]",
    "cos1023m": "[0.0]+([0.43]*7+[0.73]*9)*2+[0.45]*3+[0.0]",
}
# dcff.md §4.3: per stage, conv1 | conv2 | conv3 widths (one value = the same for all blocks).
R50_WIDTHS = {
    "step958m": ([[12], [25], [51, 51, 51, 76, 76, 76], [153]],
                 [[25], [51], [102, 102, 102, 153, 153, 153], [307]], [179, 358, 716, 1433]),
    "step1491m": ([[25], [51], [102, 102, 102, 128, 128, 128], [256]],
                  [[32], [64], [128, 128, 128, 153, 153, 153], [307]], [204, 409, 819, 1638]),
    "step2249m": ([[41], [83], [166, 166, 166, 179, 179, 179], [358]],
                  [[38], [76], [153, 153, 153, 179, 179, 179], [358]], [230, 460, 921, 1843]),
    "cos1523m": ([[32], [64], [128], [256]], [[32], [64], [128], [256]], [192, 384, 768, 2048]),
    "cos1381m": ([[19], [38], [140], [281]], [[19], [38], [140], [281]], [194, 389, 778, 2048]),
    "cos1023m": ([[36], [72], [69], [138]], [[36], [72], [69], [138]], [140, 281, 563, 2048]),
}


def arch(model, rate_string, classes=10):
    return architectures.compact_arch(model, rate_string, num_classes=classes, in_channels=3)


def test_vgg_widths():
    compact, fused = arch("vgg16", RATE_STRINGS["vgg16"])
    assert [v for v in compact["features"] if v != "M"] == [32, 32, 76, 76, 166, 166, 166, 76,
                                                            76, 76, 76, 76, 76]
    assert fused["conv12"] == 512 and len(fused) == 13


def test_resnet56_widths():
    compact, fused = arch("resnet56", RATE_STRINGS["resnet56"])
    assert compact["stem"] == 16 and len(fused) == 55
    assert [[b[0] for b in stage] for stage in compact["stages"]] == [
        [4, 4, 8, 8, 8, 11, 11, 9, 3], [9, 9, 6, 6, 6, 6, 19, 25, 25],
        [19, 44, 12, 38, 38, 19, 44, 38, 12]]
    assert {b[1] for b in compact["stages"][2]} == {64}


def test_resnet110_widths():
    compact, fused = arch("resnet110", RATE_STRINGS["resnet110"])
    assert compact["stem"] == 6 and len(fused) == 109
    assert [sorted({b[1] for b in stage}) for stage in compact["stages"]] == [[6], [25], [32]]
    assert [[b[0] for b in stage] for stage in compact["stages"]] == [
        [12, 16, 12, 11, 4, 4, 14, 11, 11, 9, 4, 4, 8, 14, 11, 16, 6, 16],
        [25, 16, 32, 9, 9, 16, 9, 9, 19, 19, 32, 22, 28, 16, 28, 28, 28, 9],
        [57, 57, 44, 44, 44, 44, 44, 32, 19, 51, 38, 19, 19, 19, 19, 19, 32, 57]]


def test_googlenet_widths():
    compact, fused = arch("googlenet", RATE_STRINGS["googlenet"])
    assert compact["pre"] == 192 and len(fused) == 64
    assert compact["inceptions"] == [
        [64, 19, 128, 3, 6, 32, 32], [128, 12, 192, 3, 9, 96, 64], [192, 9, 208, 1, 4, 48, 64],
        [160, 11, 224, 2, 6, 64, 64], [128, 25, 256, 4, 12, 64, 64],
        [112, 28, 288, 6, 12, 64, 64], [256, 31, 320, 6, 25, 128, 128],
        [256, 15, 320, 3, 12, 128, 128], [384, 19, 384, 4, 12, 128, 128]]


@pytest.mark.parametrize("name", sorted(R50))
def test_resnet50_widths(name):
    compact, fused = arch("resnet50", R50[name], classes=1000)
    assert compact["stem"] == 64 and len(fused) == 49
    assert "stage1_block0/downsample_conv" not in fused
    conv1, conv2, conv3 = R50_WIDTHS[name]
    for s, stage in enumerate(compact["stages"]):
        expected1 = conv1[s] * len(stage) if len(conv1[s]) == 1 else conv1[s]
        expected2 = conv2[s] * len(stage) if len(conv2[s]) == 1 else conv2[s]
        assert [b[0] for b in stage] == expected1 and [b[1] for b in stage] == expected2
        assert {b[2] for b in stage} == {conv3[s]}


# dcff.md §5: thop FLOPs (M) and params (M) of the compact models, to the printed digits.
PROFILES = [("vgg16_cifar10", 72.77, 1.0712), ("resnet56_cifar10", 55.84, 0.3843),
            ("resnet110_cifar10", 85.30, 0.5554), ("googlenet_cifar10", 457.22, 2.0793),
            ("resnet50_imagenet_step958m", 958.07, 7.4034),
            ("resnet50_imagenet_step1491m", 1490.51, 10.5816),
            ("resnet50_imagenet_step2249m", 2248.78, 15.1636),
            ("resnet50_imagenet_cos1523m", 1522.96, 11.0473),
            ("resnet50_imagenet_cos1381m", 1380.92, 11.8139),
            ("resnet50_imagenet_cos1023m", 1023.26, 6.5608)]


@pytest.mark.parametrize("config_name,flops,params", PROFILES)
def test_dcff_config_profiles(config_name, flops, params):
    module = __import__(f"configs.dcff.{config_name}", fromlist=["get_config"])
    totals = json.loads(api.profile_report(module.get_config()).splitlines()[-1])
    assert round(totals["flops_thop"] / 1e6, 2) == pytest.approx(flops, abs=1e-9)
    assert round(totals["params"] / 1e6, 4) == pytest.approx(params, abs=1e-9)


def test_rate_strings_parse_with_groups_and_lengths():
    assert rates.parse_rates("[0.0]+([0.5]*2+[0.4])*2+[0.25]") == [0.0, 0.5, 0.5, 0.4, 0.5, 0.5,
                                                                  0.4, 0.25]
    assert rates.parse_rates("2*[0.1, 0.2]") == [0.1, 0.2, 0.1, 0.2]
    for model, text in {**RATE_STRINGS, **{f"r50_{k}": v for k, v in R50.items()}}.items():
        name = "resnet50" if model.startswith("r50") else model
        assert len(rates.parse_rates(text)) == architectures.expected_length(name)
    assert [rates.kept(16, 0.7), rates.kept(64, 0.8), rates.kept(512, 0.85)] == [4, 12, 76]


@pytest.mark.parametrize("text,message", [
    ("[0.5]*2+", "expected '[' or '(' at position 8, found the end"),
    ("[0.5]*2.5", "repeat count '2.5' at position 6"),
    ("[0.5,]", "expected a rate at position 5"),
    ("([0.5]*2", "expected ')' at position 8"),
    ("[1.5]", "rate 1.5 at position 1 must be in [0, 1)"),
    ("__import__('os')", "unexpected '_' at position 0"),
    ("[0.5]*3", "has 3 entries; this network expects 13"),
])
def test_malformed_rate_strings_name_the_position(text, message):
    with pytest.raises(rates.RateStringError, match=message.replace("[", r"\[").replace(
            "(", r"\(").replace(")", r"\)")):
        rates.parse_rates(text, 13)


def test_fused_model_equals_folded_compact_model():
    compact, fused = arch("resnet56", RATE_STRINGS["resnet56"])
    model = build_fused_model(compact, fused)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    variables = model.init(jax.random.key(1), x, train=False)
    rng = np.random.default_rng(0)
    matrices = jax.tree.map(lambda p: jnp.asarray(rng.dirichlet(np.ones(p.shape[1]), p.shape[0]),
                                                  jnp.float32), variables["fusion"])
    fused_logits = model.apply({**variables, "fusion": matrices}, x, train=False)
    plain = models.build_model(compact)
    folded = {"params": fold(variables["params"], matrices),
              "batch_stats": variables["batch_stats"]}
    np.testing.assert_allclose(plain.apply(folded, x, train=False), fused_logits, rtol=1e-4,
                               atol=1e-5)
    # The fused forward runs at the default precision, the export folds at HIGHEST (issue #27 part 5;
    # planted defect that fails it: HIGHEST in the training forward).
    train_text = jax.jit(lambda v: model.apply(v, x, train=False)).lower(
        {**variables, "fusion": matrices}).as_text()
    fold_text = jax.jit(fold).lower(variables["params"], matrices).as_text()
    assert "HIGHEST" not in train_text and "HIGHEST" in fold_text


def dcff_tiny(mode="faithful", **overrides):
    """The embedded DCFF ResNet-20 on the tiny data: 8 steps an epoch."""
    c = tiny_config()
    c.method = "dcff"
    c.dcff = dcff_section("[0.5]*9+[0.25]*3", mode)
    c.model.width_mult = 1.0
    c.keep_best_checkpoint = True
    return override(c, **overrides)


def test_dcff_trains_resumes_and_exports_identically(tmp_path):
    config = dcff_tiny()
    result = api.train(config, str(tmp_path / "a"))
    straight, state = result.summary, result.state
    assert api.train(config, str(tmp_path / "b"), stop_after=11).summary["step"] == 11
    resumed = api.train(config, str(tmp_path / "b")).summary
    for key in ("train_loss", "eval_loss", "eval_accuracy", "best_eval_accuracy"):
        assert resumed[key] == straight[key], key
    with open(tmp_path / "a" / "metrics.jsonl") as f:
        updates = {line["step"]: line for line in map(json.loads, f)
                   if "fusion_temperature" in line}
    assert sorted(updates) == [0, 8] and updates[0]["fusion_temperature"] == 1.0
    expected_t1 = float(fusion.schedule_values(1, 2, config.dcff)[0])  # T(1) of 2 epochs
    assert updates[8]["fusion_temperature"] == pytest.approx(expected_t1) and expected_t1 > 1
    assert updates[0]["fusion_selections_changed"] > 0  # the first selection
    assert updates[8]["fusion_selections_changed"] == 0  # faithful: kept after epoch 0
    with open(tmp_path / "b" / "metrics.jsonl") as f:  # stopped at 11, resumed mid-epoch
        resumed_updates = {line["step"]: line for line in map(json.loads, f)
                           if "fusion_temperature" in line}
    assert resumed_updates == updates  # no recompute at the resume; the same epoch-1 fusion
    fused = jax.device_get(state["fusion"])
    assert int(fused["epoch"]) == 1  # recomputed at the epoch boundary (step 8)
    for matrix in jax.tree.leaves(fused["matrix"]):  # faithful: exact one-hot rows
        assert set(np.unique(matrix)) <= {0.0, 1.0} and np.all(matrix.sum(1) == 1)

    path = api.export(config, str(tmp_path / "a"), str(tmp_path / "export"))
    model, variables, meta = export.load_exported(path)
    assert meta["arch"]["stages"][0][0] == [8, 12] and meta["flops"] == straight["flops"]
    inputs = data.make_input(config.dataset, global_batch=64, eval_batch=200, seed=0)
    batch = next(inputs.eval_batches())
    logits = export.predict(model, variables, meta, batch["image"])
    accuracy = float(np.mean(np.argmax(np.asarray(logits), -1) == batch["label"]))
    assert accuracy == pytest.approx(straight["eval_accuracy"], abs=1e-9)
    _, run, model, _ = dcff_train.fused_setup(config)
    fused_logits = model.apply(fusion_state.fused_variables(state, state["params"]),
                               run.normalize(batch["image"], jnp.float32), train=False)
    np.testing.assert_allclose(logits, fused_logits, rtol=1e-4, atol=1e-4)


def outlier_in_every_bank(workdir: str, config) -> int:
    """Rewrites the newest checkpoint of a fused run with one unselected filter of every bank
    scaled 100x (far from all others, so the stable criterion must select it); returns the
    number of banks."""
    from common_jax import checkpoint, train_state
    from flax import traverse_util
    _, run, _, init = dcff_train.fused_setup(config)
    state, host = checkpoint.read_checkpoint(workdir, train_state.abstract_state(run, init))
    params = traverse_util.flatten_dict(jax.device_get(state["params"]))
    selections = traverse_util.flatten_dict(jax.device_get(state["fusion"]["selection"]))
    for key, selection in selections.items():
        kernel = np.array(params[key[:-1] + ("kernel",)])
        outsider = min(set(range(kernel.shape[-1])) - set(selection.tolist()))
        kernel[..., outsider] *= 100.0
        params[key[:-1] + ("kernel",)] = kernel
    state = dict(state, params=traverse_util.unflatten_dict(params))
    mngr = checkpoint.manager(workdir, async_save=False)
    step = max(mngr.all_steps())
    mngr.delete(step)
    checkpoint.save(mngr, step, state, host)
    mngr.close()
    return len(selections)


def test_stable_mode_reselects_when_the_weights_demand_it_and_scratch_has_no_fusion(tmp_path):
    """A stable run through the trainer, stopped after epoch 0; one unselected filter of every
    bank is made an outlier in the checkpoint, and the epoch-1 update of the resumed run must
    select it in every layer (``fusion_selections_changed`` >= the number of banks; planted
    defect that fails it: the stable update keeping the previous selection)."""
    config = dcff_tiny("stable", num_epochs=2, **{"optimizer.learning_rate": 0.3})
    workdir = str(tmp_path / "stable")
    api.train(config, workdir, stop_after=8)  # 8 steps an epoch
    banks = outlier_in_every_bank(workdir, config)
    state = api.train(config, workdir).state
    scores = jax.tree.leaves(jax.device_get(state["fusion"]["score"]))
    assert all(np.all(np.isfinite(s)) for s in scores)
    with open(tmp_path / "stable" / "metrics.jsonl") as f:
        updates = {r["step"]: r["fusion_selections_changed"] for r in map(json.loads, f)
                   if "fusion_selections_changed" in r}
    assert updates[8] >= banks
    scratch = dcff_tiny("scratch", num_train_steps=2)
    result = api.train(scratch, str(tmp_path / "scratch"))
    summary, state = result.summary, result.state
    compact_params = models.model_costs(dcff_train.compact(scratch)[0], 28)["params"]
    assert "fusion" not in state and summary["params"] == compact_params


def test_bad_dcff_config_is_a_one_line_error():
    from pssnet_dcff import registry
    with pytest.raises(ValueError, match=r"config.dcff.rates: .*has 3 entries; this network "
                                         r"expects 12"):
        registry.validate(dcff_tiny(**{"dcff.rates": "[0.5]*3"}))
    with pytest.raises(ValueError, match="config.dcff.mode='soft'"):
        registry.validate(dcff_tiny(**{"dcff.mode": "soft"}))
    with pytest.raises(ValueError, match="config.dcff.schedule='steps': expected 'epoch' or "
                                         "'progress'"):
        registry.validate(dcff_tiny(**{"dcff.schedule": "steps"}))
    with pytest.raises(ValueError, match="config.dcff.update_every_steps=0 must be a positive"):
        registry.validate(dcff_tiny(**{"dcff.update_every_steps": 0}))


@pytest.mark.parametrize("model,rate_string,size", [
    ("vgg16", RATE_STRINGS["vgg16"], 32), ("googlenet", RATE_STRINGS["googlenet"], 32),
    ("resnet110", RATE_STRINGS["resnet110"], 32), ("resnet50", R50["step958m"], 64)])
def test_fused_banks_have_original_filters_and_compact_inputs(model, rate_string, size):
    compact, fused = arch(model, rate_string)
    module = build_fused_model(compact, fused)
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    variables = jax.eval_shape(lambda k: module.init(k, jnp.zeros(x.shape), train=False),
                               jax.random.key(0))
    from flax import traverse_util
    params = traverse_util.flatten_dict(variables["params"], sep="/")
    matrices = traverse_util.flatten_dict(variables["fusion"], sep="/")
    assert len(matrices) == len(fused)
    for layer in models.arch_layers(compact, size):
        if layer.kind != "conv":
            continue
        bank = params[f"{layer.name}/kernel"].shape
        if layer.name in fused:  # (k, k, compact inputs, original filters); F is (m, n)
            assert bank == (layer.kernel, layer.kernel, layer.in_ch, fused[layer.name])
            assert matrices[f"{layer.name}/P"].shape == (layer.out_ch, fused[layer.name])
        else:  # ResNet-50's downsample convs are ordinary compact convs
            assert "downsample" in layer.name and bank[-1] == layer.out_ch


def test_progress_schedule_recomputes_every_k_steps_at_the_temperature_of_the_progress(
        tmp_path):
    """dcff.schedule='progress': the fusion is recomputed every update_every_steps steps at
    T(e) with e = fraction of steps done x paper_epochs (schedule length paper_epochs), and a
    run resumed between two updates recomputes nothing and ends as the uninterrupted one."""
    config = dcff_tiny("stable", **{"dcff.schedule": "progress", "dcff.paper_epochs": 8,
                                    "dcff.update_every_steps": 4})
    straight = api.train(config, str(tmp_path / "a")).summary
    assert api.train(config, str(tmp_path / "b"), stop_after=6).summary["step"] == 6
    resumed = api.train(config, str(tmp_path / "b")).summary
    assert resumed["train_loss"] == straight["train_loss"]
    assert resumed["eval_loss"] == straight["eval_loss"]
    updates = {}
    for run in ("a", "b"):
        with open(tmp_path / run / "metrics.jsonl") as f:
            updates[run] = {line["step"]: line["fusion_temperature"] for line in
                            map(json.loads, f) if "fusion_temperature" in line}
    assert updates["a"] == updates["b"]  # no recompute at step 6
    assert sorted(updates["a"]) == [0, 4, 8, 12]  # 16 steps, every 4
    for step, temp in updates["a"].items():
        expected = fusion.temperature(step / 16 * 8, 8, 1.0, 1e4, 1.0)  # e = progress x 8
        assert temp == pytest.approx(expected, rel=1e-6), step
    assert updates["a"][4] == pytest.approx(fusion.temperature(2.0, 8))  # not T(epoch 0)
