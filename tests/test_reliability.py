"""Non-finite losses, damaged checkpoints and bad exports (fast, in-process)."""

import glob
import logging
import os

import pytest

from common_jax import checkpoint, export
from common_jax.loop import NonFiniteLoss
from pssnet_dcff import api
from conftest import tiny_config


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reference"))
    return api.train(tiny_config(), workdir).summary


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    workdir = str(tmp_path)
    api.train(tiny_config(), workdir, stop_after=8).summary
    exploding = tiny_config(**{"optimizer.learning_rate": 1e30})
    with pytest.raises(NonFiniteLoss, match=r"training loss is (nan|inf) at step (9|1\d)"):
        api.train(exploding, workdir).summary
    assert checkpoint.manager(workdir, read_only=True).all_steps() == [8]
    resumed = api.train(tiny_config(), workdir).summary  # the good state is intact
    assert resumed["step"] == 16


def damage(path: str, how: str) -> None:
    files = [f for f in glob.glob(os.path.join(path, "**", "*"), recursive=True)
             if os.path.isfile(f)]
    if how == "truncate":
        for name in files:
            with open(name, "r+b") as f:
                f.truncate(os.path.getsize(name) // 3)
    else:
        for name in files:
            if "host" in name:
                with open(name, "w") as f:
                    f.write("{not json")


@pytest.mark.parametrize("how", ["truncate", "garbage"])
def test_damaged_latest_checkpoint_is_skipped_with_a_warning(tmp_path, reference, how, caplog):
    workdir = str(tmp_path)
    api.train(tiny_config(), workdir).summary
    latest = os.path.join(workdir, "checkpoints", "16")
    damage(latest, how)
    with caplog.at_level(logging.WARNING, logger="common_jax"):
        summary = api.train(tiny_config(), workdir).summary  # resumes from step 8
    assert any(latest in r.getMessage() and "damaged" in r.getMessage()
               for r in caplog.records)
    assert glob.glob(os.path.join(workdir, "checkpoints", "damaged-16-*"))
    assert (summary["train_loss"], summary["eval_loss"]) == (reference["train_loss"],
                                                             reference["eval_loss"])


def test_damaged_or_missing_export_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="model.json is missing"):
        export.load_exported(str(tmp_path))
    (tmp_path / "model.json").write_text("{broken")
    with pytest.raises(ValueError, match="model.json is damaged"):
        export.load_exported(str(tmp_path))
    (tmp_path / "model.json").write_text('{"arch": {"family": "resnet_cifar", "num_classes": 10,'
                                         ' "in_channels": 1, "stem": 4, "stages": [[[4, 4]],'
                                         ' [[8, 8]], [[16, 16]]]}}')
    with pytest.raises(ValueError, match="variables is missing or damaged"):
        export.load_exported(str(tmp_path))
