"""The one path layer: every user-given path (workdir, checkpoints, summaries, metrics,
TensorBoard events, exports, latency tables, the IDX data dir, the compilation cache) goes
through these functions, so local paths and URLs such as ``gs://bucket/runs/mbv2`` work
alike (``etils.epath``; ``gs://`` needs ``gcsfs``, or TensorFlow's file system when it is
installed). Nothing here calls ``os.path.abspath``, ``os.makedirs`` or ``open`` on a URL.
"""

from __future__ import annotations

import os

from etils import epath


def is_url(path) -> bool:
    return "://" in os.fspath(path)


def absolute(path) -> str:
    """A local path made absolute; URLs unchanged."""
    return os.fspath(path) if is_url(path) else os.path.abspath(path)


def join(base, *parts) -> str:
    return os.fspath(epath.Path(base).joinpath(*parts))


def exists(path) -> bool:
    return epath.Path(path).exists()


def isdir(path) -> bool:
    return epath.Path(path).is_dir()


def makedirs(path) -> None:
    epath.Path(path).mkdir(parents=True, exist_ok=True)


def read_text(path) -> str:
    return epath.Path(path).read_text()


def read_bytes(path) -> bytes:
    return epath.Path(path).read_bytes()


def write_text(path, text: str) -> None:
    """Writes a whole file atomically: a temporary file renamed over the target locally;
    on object stores a single object write is already all-or-nothing."""
    write_bytes(path, text.encode())


def write_bytes(path, data: bytes) -> None:
    if is_url(path):
        epath.Path(path).write_bytes(data)
        return
    tmp = os.fspath(path) + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def append_text(path, text: str) -> None:
    """Appends to a file (object stores have no append: the object is rewritten)."""
    if is_url(path):
        target = epath.Path(path)
        target.write_text((target.read_text() if target.exists() else "") + text)
        return
    with open(path, "a") as f:
        f.write(text)


def remove(path) -> None:
    """Deletes one file (the write check's marker; nothing a user made)."""
    epath.Path(path).unlink()


def rename(source, target) -> None:
    epath.Path(source).rename(target)


def copy_tree(source, target) -> None:
    """Copies the files of a local folder into ``target`` (created), replacing same names."""
    for folder, _, names in os.walk(source):
        destination = join(target, os.path.relpath(folder, source))
        makedirs(destination)
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                epath.Path(destination, name).write_bytes(f.read())
