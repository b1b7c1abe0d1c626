"""Measures the install size of the core and of the core plus the tfds extra.

    python scripts/install_size.py    # writes benchmarks/results/install_size.json

Two fresh virtual environments in a temporary folder: ``pip install -r requirements.txt``,
then ``-r requirements-tfds.txt`` on top; the size is every file under the environment.
"""

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common_jax.provenance import provenance  # noqa: E402  (imports no JAX)


def size_mb(folder: str) -> float:
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(folder)
                for f in names if not os.path.islink(os.path.join(d, f)))
    return round(total / 2**20, 1)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        venv = os.path.join(tmp, "venv")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        pip = [os.path.join(venv, "bin", "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "-r", os.path.join(ROOT, "requirements.txt")], check=True)
        core = size_mb(venv)
        subprocess.run([*pip, "-r", os.path.join(ROOT, "requirements-tfds.txt")], check=True)
        with_tfds = size_mb(venv)
    result = {"date": datetime.date.today().isoformat(), "provenance": provenance(),
              "python": platform.python_version(),
              "machine": platform.machine(), "core_mb": core,
              "core_plus_tfds_mb": with_tfds, "tfds_share_mb": round(with_tfds - core, 1)}
    os.makedirs(os.path.join(ROOT, "benchmarks", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "benchmarks", "results", "install_size.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
