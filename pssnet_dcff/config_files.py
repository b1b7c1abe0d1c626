"""Config files are files addressed by path, not an installed top-level package.

A path is taken relative to the current directory, then to this checkout, then to the copy
that ``pip install`` places under ``pssnet_dcff/configs/`` (package data, so nothing named
``configs`` lands in site-packages). Config files import ``configs.*``: the folder that
holds the file's ``configs/`` package is put on ``sys.path`` while configs load.
"""

from __future__ import annotations

import os
import sys

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(PACKAGE_DIR)


def resolve(path: str) -> str:
    """The config file of ``path`` (``file.py``, without a ``:arg``); ValueError if none."""
    candidates = [path, os.path.join(CHECKOUT, path), os.path.join(PACKAGE_DIR, path)]
    for candidate in candidates:
        if os.path.isfile(candidate):
            add_import_root(candidate)
            return candidate
    raise ValueError(f"config file {path!r} does not exist; expected a path like "
                     f"configs/baselines/resnet56_cifar10.py")


def add_import_root(config_file: str) -> None:
    """Puts the folder holding the ``configs/`` package of ``config_file`` on sys.path."""
    folder = os.path.dirname(os.path.abspath(config_file))
    while folder != os.path.dirname(folder):
        if os.path.isfile(os.path.join(folder, "configs", "__init__.py")):
            if folder not in sys.path:
                sys.path.insert(0, folder)
            return
        folder = os.path.dirname(folder)
