"""Non-finite losses, damaged checkpoints, failures while restoring, resumes into another
config and bad exports (fast, in-process).

Shown to fail during development: restoring the old catch-all in
``checkpoint.restore_newest_good`` (every failure moves the checkpoint aside) fails
``test_only_proven_damage_moves_a_checkpoint_aside`` for every class but 'corrupt', the
retry test and the no-config.json half of ``test_resume_into_another_config_is_refused_and_
moves_nothing``; skipping the structural key check in ``Loop.restore`` fails
``test_a_changed_state_key_is_refused_even_when_the_shapes_agree``.
"""

import glob
import json
import logging
import os
import shutil

import pytest
from gcsfs.retry import HttpError

from common_jax import checkpoint, export, files, run as run_lib, storage, train_state
from common_jax import train as plain_train
from common_jax.loop import NonFiniteLoss
from pssnet_dcff import api
from conftest import tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(summary, workdir with checkpoints 8 and 16) of one tiny uninterrupted run."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    return api.train(tiny_config(), workdir).summary, workdir


@pytest.fixture(scope="module")
def reference(trained):
    return trained[0]


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


def _caused(outer: Exception, inner: Exception) -> Exception:
    outer.__cause__ = inner
    return outer


# Errors as orbax, TensorStore, gcsfs and the OS raise them (messages from real failures:
# a truncated chunk, a chunk overwritten with zeros, a missing file, a 503 from the bucket).
ERRORS = {
    "corrupt": [
        json.JSONDecodeError("Expecting property name enclosed in double quotes", "{not", 1),
        _caused(Exception("Encountered error while reading array index"), ValueError(
            'OUT_OF_RANGE: Error reading "params.fc.kernel/0.0" in OCDBT database at local '
            'file "/w/checkpoints/16/state/": Requested byte range [59241, 61440) is not '
            'valid for value of size 43087')),
        ValueError('FAILED_PRECONDITION: Error reading "params.fc.kernel/0.0" in OCDBT database'
                   ' at local file "/w/": ZSTD_decompressStream() failed: Unknown frame '
                   'descriptor; at byte 0'),
        ValueError('DATA_LOSS: Error opening "zarr" driver: Error decoding local file "/w/"'),
        FileNotFoundError("File /w/checkpoints/16/host/metadata not found.")],
    "transient": [
        HttpError({"code": 503, "message": "Service Unavailable"}),
        HttpError({"code": 429, "message": "Too Many Requests"}),
        TimeoutError("The read operation timed out"),
        ConnectionResetError(104, "Connection reset by peer"),
        ValueError('UNAVAILABLE: Error reading "params.fc.kernel/0.0": HTTP response code: 503'),
        OSError(5, "Input/output error")],
    "mismatch": [ValueError("Requested shape: (3, 3, 16, 16) is not compatible with the stored "
                            "shape: (3, 3, 8, 8). Truncating/padding is disabled.")],
    "denied": [OSError("Forbidden: my-bucket/run/checkpoints/16/host/metadata\nno access"),
               PermissionError(13, "Permission denied"),
               HttpError({"code": 403, "message": "Access denied"})],
    "other": [RuntimeError("something unexpected"), TypeError("unsupported operand")],
}


@pytest.mark.parametrize("kind", list(ERRORS))
def test_failures_are_classified(kind):
    for error in ERRORS[kind]:
        assert storage.classify(error) == kind, error


def _abstract_state(config):
    arch = plain_train.arch_of(config)
    run = run_lib.setup(config, arch)
    return train_state.abstract_state(run, train_state.make_init(
        run, plain_train.build(config, arch)))


def _listing(workdir):
    return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


@pytest.mark.parametrize("kind", list(ERRORS))
def test_only_proven_damage_moves_a_checkpoint_aside(trained, tmp_path, monkeypatch, kind):
    """Each error of each class, raised by the restore of the newest checkpoint (16): only
    'corrupt' moves it aside and restores 8; 'transient' is retried and then stops, the
    others stop at once; nothing else is renamed or deleted."""
    abstract, real_restore = _abstract_state(tiny_config()), checkpoint.restore
    monkeypatch.setattr(storage, "RETRY_BUDGET_S", 3.0)
    sleeps = []
    monkeypatch.setattr(storage.time, "sleep", sleeps.append)
    for number, error in enumerate(ERRORS[kind]):
        workdir = str(tmp_path / str(number))
        shutil.copytree(trained[1], workdir)

        def failing(mngr, step, abstract_state, error=error):
            if step == 16:
                raise error
            return real_restore(mngr, step, abstract_state)

        monkeypatch.setattr(checkpoint, "restore", failing)
        mngr = checkpoint.manager(workdir, async_save=False)
        sleeps.clear()
        if kind == "corrupt":
            state, host = checkpoint.restore_newest_good(mngr, abstract)
            assert host["step"] == 8
            assert [n for n in _listing(workdir) if n.startswith("damaged-16-")]
            assert "16" not in _listing(workdir)
        else:
            expected = checkpoint.StateMismatch if kind == "mismatch" else storage.StorageError
            with pytest.raises(expected, match="checkpoints/16"):
                checkpoint.restore_newest_good(mngr, abstract)
            assert _listing(workdir) == ["16", "8"]
            assert sleeps == ([1.0, 2.0] if kind == "transient" else [])
        mngr.close()


def test_a_transient_error_that_clears_is_retried_and_restores_the_newest(trained, tmp_path,
                                                                         monkeypatch):
    abstract, real_restore = _abstract_state(tiny_config()), checkpoint.restore
    workdir = str(tmp_path / "run")
    shutil.copytree(trained[1], workdir)
    calls, sleeps = [], []
    monkeypatch.setattr(storage.time, "sleep", sleeps.append)

    def flaky(mngr, step, abstract_state):
        calls.append(step)
        if len(calls) <= 2:
            raise HttpError({"code": 503, "message": "Service Unavailable"})
        return real_restore(mngr, step, abstract_state)

    monkeypatch.setattr(checkpoint, "restore", flaky)
    mngr = checkpoint.manager(workdir, async_save=False)
    _, host = checkpoint.restore_newest_good(mngr, abstract)
    mngr.close()
    assert host["step"] == 16 and calls == [16, 16, 16] and sleeps == [1.0, 2.0]
    assert _listing(workdir) == ["16", "8"]


def _snapshot(directory):
    return sorted((os.path.relpath(os.path.join(root, name), directory),
                   os.path.getmtime(os.path.join(root, name)))
                  for root, _, names in os.walk(directory) for name in names)


def test_resume_into_another_config_is_refused_and_moves_nothing(tmp_path, reference):
    workdir = str(tmp_path)
    api.train(tiny_config(), workdir, stop_after=4)
    before = _snapshot(workdir)
    wider = tiny_config(**{"model.width_mult": 0.5})
    with pytest.raises(ValueError) as refused:
        api.train(wider, workdir)
    line = str(refused.value)
    assert line == (f"--workdir={workdir} was trained with another config (model.width_mult: "
                    f"0.25 -> 0.5; params/fc/kernel (16,10) on disk, (32,10) now); use a new "
                    f"--workdir or the original config"), line
    assert _snapshot(workdir) == before  # not even config.json was rewritten
    config_json = os.path.join(workdir, "config.json")
    os.rename(config_json, config_json + ".aside")  # a workdir of an older version: no config
    with pytest.raises(ValueError, match=r"another config \(params/fc/kernel \(16,10\) on "
                                         r"disk, \(32,10\) now\); use a new --workdir"):
        api.train(wider, workdir)
    assert _listing(workdir) == ["4"]
    os.rename(config_json + ".aside", config_json)
    resumed = api.train(tiny_config(), workdir).summary  # the original config goes on
    assert (resumed["train_loss"], resumed["eval_loss"]) == (reference["train_loss"],
                                                             reference["eval_loss"])


def test_a_changed_state_key_is_refused_even_when_the_shapes_agree(tmp_path):
    """model.small_input does not change a CIFAR ResNet's arrays, but it is a key of the
    train state's structure: refused up front. A learning-rate change is only a warning."""
    workdir = str(tmp_path)
    api.train(tiny_config(), workdir, stop_after=4)
    with pytest.raises(ValueError, match=r"\(model.small_input: False -> True\); use a new"):
        api.train(tiny_config(**{"model.small_input": True}), workdir, stop_after=5)
    assert api.train(tiny_config(**{"optimizer.learning_rate": 0.05}), workdir,
                     stop_after=5).summary["step"] == 5


def test_each_method_names_the_keys_of_its_state():
    from dcff_jax import train as dcff_train
    from pssnet_jax import train as pss_train
    changes = [("pssnet.targets", [2, 6, 1], [2, 6, 0.5]), ("optimizer.learning_rate", 0.1, 0.2),
               ("dcff.rates", "[0.5]*12", "[0.4]*12"), ("model.name", "a", "b")]
    assert files.state_changes(changes, pss_train.STATE_KEYS) == [changes[0], changes[3]]
    assert files.state_changes(changes, dcff_train.STATE_KEYS) == changes[2:]
    assert files.state_changes(changes, files.STATE_KEYS) == [changes[3]]


def test_locations_a_mode_reads_must_exist_and_those_it_writes_are_probed(tmp_path):
    from pssnet_dcff import locations
    missing = str(tmp_path / "no_such_dir")
    cifar = tiny_config(**{"dataset.name": "cifar10", "dataset.data_dir": missing})
    with pytest.raises(storage.StorageError, match=rf"cannot read {missing}: it does not exist "
                                                    rf"\(config.dataset.data_dir\)"):
        locations.check(cifar, str(tmp_path / "run"), "train")
    synthetic = tiny_config(**{"dataset.name": "cifar10", "dataset.data_dir": missing,
                               "dataset.synthetic": True})
    locations.check(synthetic, str(tmp_path / "run"), "train")  # synthetic data reads nothing
    assert os.listdir(tmp_path / "run") == []  # created as training would, the marker removed
    locations.check(tiny_config(), missing, "eval")  # eval creates nothing for a missing workdir
    assert not os.path.exists(missing)
