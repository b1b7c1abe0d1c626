"""Launch-to-first-step time of a config, with a cold and with a warm compilation cache.

    python benchmarks/compile_time.py [--config=configs/pssnet/embedded.py] [--out=FILE.json]

Runs ``launch.py --stop_after=1`` twice in fresh workdirs: first with an empty compilation
cache (cold), then with the cache the first run filled (warm). Reports the wall time of each
process (imports, data, compiles, one step, one checkpoint), the time from the start of
training to the first completed step, the number of XLA compiles and every compiled function
with its compile time. Prints a table last and writes JSON.
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common_jax.provenance import provenance  # noqa: E402  (imports no JAX)


def run(config: str, workdir: str, cache: str, extra: list) -> dict:
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, os.path.join(ROOT, "launch.py"),
                             f"--config={config}", f"--workdir={workdir}", "--stop_after=1",
                             *extra], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(result.stderr[-2000:])
    first = re.search(r"first step done ([\d.]+) s after start; (\d+) XLA compiles",
                      result.stdout)
    functions = re.findall(r"compiled (.+) in ([\d.]+) s", result.stdout)
    return {"process_wall_s": round(wall, 1), "train_start_to_first_step_s": float(first[1]),
            "xla_compiles_before_first_step": int(first[2]),
            "compiled_functions": {name: float(t) for name, t in functions}}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/pssnet/embedded.py")
    parser.add_argument("--out", default="")
    args, extra = parser.parse_known_args()
    import jax
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache")
        results = {"cold": run(args.config, os.path.join(tmp, "a"), cache, extra),
                   "warm": run(args.config, os.path.join(tmp, "b"), cache, extra)}
    results["machine"] = {"device": str(jax.devices()[0].device_kind), "cpus": os.cpu_count(),
                          "platform": platform.platform(), "jax": jax.__version__}
    results["config"] = args.config
    results["date"] = datetime.date.today().isoformat()
    results["provenance"] = provenance()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    print(f"{'cache':<6}{'process s':>11}{'to first step s':>17}{'XLA compiles':>14}"
          f"{'compile s (sum of logged)':>27}")
    for name in ("cold", "warm"):
        r = results[name]
        print(f"{name:<6}{r['process_wall_s']:>11.1f}{r['train_start_to_first_step_s']:>17.1f}"
              f"{r['xla_compiles_before_first_step']:>14d}"
              f"{sum(r['compiled_functions'].values()):>27.1f}")


if __name__ == "__main__":
    main()
