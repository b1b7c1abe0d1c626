"""The safe reader of torch files (common_jax/torch_files.py) against files torch itself
wrote, in both formats: every tensor equal, hostile pickles refused before they run,
damaged files named, and no torch needed to read.

Shown to fail during development: building tensors from the flat storage without their
strides (the transposed and sliced tensors differed), and a ``find_class`` that resolved
every global (the hostile files ran ``os.system`` and created their marker file).
"""

import collections
import os
import pickle
import random
import re
import subprocess
import sys

import numpy as np
import pytest

from common_jax import torch_files
from conftest import ROOT, require

torch = require("torch")


def saved_objects():
    """A state dict with every storage type, views and non-contiguous tensors, plus what an
    official PSS-Net checkpoint holds beside it (optimizer and scheduler state, RNG states,
    pools keyed by str(dict))."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 10)
    state = collections.OrderedDict(("module." + k, v) for k, v in model.state_dict().items())
    base = torch.randn(4, 6, dtype=torch.float64)
    state.update({"t": base.t(), "row": base[2], "slice": base[:, 1::2],
                  "half": torch.randn(5).half(), "bf16": torch.randn(5).bfloat16(),
                  "int": torch.arange(-3, 4, dtype=torch.int32), "byte": torch.arange(6).byte(),
                  "bool": torch.tensor([True, False, True]), "scalar": torch.tensor(2.5),
                  "empty": torch.zeros(0, 3), "param": torch.nn.Parameter(torch.ones(2))})
    return {"model": state, "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(), "last_epoch": 249,
            "arch_pools": {"max_size": 50, "pools": {"flops": {150: {
                str({"resolution": 224, "stage_cout_mults": [1.0, 0.75]}): 0.61}}}},
            "np_rng": np.random.get_state(), "py_rng": random.getstate(),
            "torch_rng": torch.get_rng_state()}


def as_numpy(value):
    if isinstance(value, torch.Tensor):
        value = value.detach()
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    return value


def assert_same(read, saved, where="") -> None:
    if isinstance(saved, torch.Tensor):
        expected = as_numpy(saved)
        assert read.shape == expected.shape, where
        assert np.array_equal(np.asarray(read, expected.dtype), expected), where
    elif isinstance(saved, dict):
        assert type(read) is type(saved) and list(read) == list(saved), where
        for key in saved:
            assert_same(read[key], saved[key], f"{where}/{key}")
    elif isinstance(saved, (list, tuple)) and not (where.endswith("np_rng")):
        assert type(read) is type(saved) and len(read) == len(saved), where
        for i, (r, s) in enumerate(zip(read, saved)):
            assert_same(r, s, f"{where}/{i}")
    elif not where.endswith("np_rng"):
        assert read == saved, where


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_reads_what_torch_saved_exactly(tmp_path, legacy):
    saved = saved_objects()
    path = str(tmp_path / "checkpoint_249.pt")
    torch.save(saved, path, _use_new_zipfile_serialization=not legacy)
    read = torch_files.load(path)
    assert_same(read, saved)
    assert read["model"]["bf16"].dtype.name == "bfloat16"
    assert read["np_rng"][0] == "MT19937"
    assert isinstance(read["np_rng"][1], torch_files.Opaque)  # inert, never a live ndarray


class Hostile:
    """Unpickling this would create ``marker`` through a shell."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Opener:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("how", ["zip", "legacy", "plain_pickle", "open"])
def test_a_hostile_file_is_refused_and_does_nothing(tmp_path, how):
    marker = tmp_path / "created"
    path = str(tmp_path / "evil.pt")
    payload = {"model": collections.OrderedDict(w=torch.ones(2)),
               "x": Opener(str(marker)) if how == "open" else Hostile(str(marker))}
    if how == "plain_pickle":
        with open(path, "wb") as f:
            pickle.dump(payload["x"], f)
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=how != "legacy")
    global_name = r"(builtins|io)\.open" if how == "open" else r"(posix|os|nt)\.system"
    with pytest.raises(torch_files.UnsafeFile, match=rf"refused to load the global {global_name}"):
        torch_files.load(path)
    assert not marker.exists()


def test_damaged_and_foreign_files_are_named(tmp_path):
    saved = {"model": collections.OrderedDict(w=torch.randn(64, 64))}
    for legacy in (False, True):
        path = tmp_path / f"cut_{legacy}.pt"
        torch.save(saved, str(path), _use_new_zipfile_serialization=not legacy)
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
        with pytest.raises(torch_files.UnsafeFile, match=re.escape(str(path)) + ".*damaged"):
            torch_files.load(str(path))
    other = tmp_path / "notes.pt"
    other.write_bytes(b"these are not weights\n" * 10)
    with pytest.raises(torch_files.UnsafeFile, match="not a torch file"):
        torch_files.load(str(other))


def test_reads_without_torch(tmp_path):
    path = str(tmp_path / "compact.pt")
    torch.save(collections.OrderedDict(conv=torch.randn(8, 3, 3, 3), fc=torch.randn(10, 8).t()),
               path, _use_new_zipfile_serialization=False)
    code = ("import sys; sys.modules['torch'] = None\n"
            "from common_jax import torch_files\n"
            f"state = torch_files.load({path!r})\n"
            "print(sorted((k, v.shape) for k, v in state.items()), 'torch' in sys.modules "
            "and sys.modules['torch'] is not None)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "[('conv', (8, 3, 3, 3)), ('fc', (8, 10))] False"


def test_no_code_unpickles_or_evaluates_user_files():
    """No ``eval``, ``pickle.load(s)`` or ``torch.load`` anywhere in the packages: files from
    elsewhere go through common_jax.torch_files' allowlist."""
    found = []
    for package in ("common_jax", "pssnet_jax", "dcff_jax", "pssnet_dcff", "configs"):
        for folder, _, names in os.walk(os.path.join(ROOT, package)):
            for name in names:
                if not name.endswith(".py"):
                    continue
                with open(os.path.join(folder, name)) as f:
                    for number, line in enumerate(f, 1):
                        code = line.split("#")[0]
                        if re.search(r"(?<![\w.`])eval\(|pickle\.loads?\(|torch\.load\(|"
                                     r"cPickle|dill\.load", code):
                            found.append(f"{package}/{name}:{number}: {line.strip()}")
    assert found == []
