"""Pod-scale costs counted on this CPU: the collectives of the compiled training steps, and
the start-up compile of every program, serial against parallel.

    python benchmarks/pod_efficiency.py [--devices=8] [--batch=48] [--out=FILE.json]
    python benchmarks/pod_efficiency.py --part=restart [--out=FILE.json]

Builds the embedded PSS-Net run (configs/pssnet/embedded.py) and the embedded DCFF run
(configs/dcff/embedded.py) on ``--devices`` fake CPU devices (``--xla_force_host_platform_
device_count``, a fresh process), compiles their training steps exactly as training does
(sharded batch, replicated state) and counts, in each optimised HLO, the cross-device
collectives (all-reduce, all-gather, reduce-scatter, all-to-all, collective-permute) and the
bytes they move. A PSS-Net step in split mode is four programs (the max net's, the middle and
the min net's gradient at their resolutions, then the update); single mode is one. The ratio
to the parameter bytes says how often the gradient crosses the interconnect per step (about
1 is one all-reduce of the gradient). Then, in fresh processes on one device with the
persistent cache off, ``pssnet_jax/precompile.py`` compiles every program of the embedded
PSS-Net run with 1 thread and with one thread per CPU core (wall and summed seconds).
``--part=restart``: two processes (``jax.distributed`` on 127.0.0.1, one CPU device and
one HOME each, as two hosts) train a small embedded PSS-Net run, stop at step 4 and restart
from the checkpoint, once with a cache directory per host (the default before issue 27) and
once with the default of a multi-process run (``<workdir>/xla_cache``): per process, the
cross-host equality checks inside training steps (``tests/count_host_syncs.py``) and the
programs compiled and loaded from the persistent cache, before and after the restart.
Issue 27 parts 1-3; prints tables and writes JSON.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common_jax.provenance import provenance  # noqa: E402  (imports no JAX)

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all",
               "collective-permute")
BYTES = {"f64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2, "s8": 1, "u8": 1,
         "pred": 1, "s64": 8, "u64": 8}
# `%name = <result type> op(` with op one of COLLECTIVES or its async -start form
OP_LINE = re.compile(r"=\s+(.+?)\s+(" + "|".join(COLLECTIVES) + r")(-start)?\(")
SHAPE = re.compile(r"\b(" + "|".join(BYTES) + r")\[([\d,]*)\]")


def collectives(hlo: str) -> dict:
    """{op: {"count", "bytes"}} of the cross-device collectives in optimised HLO text (an
    async pair counts once, by its -start; bytes are those of the result)."""
    found = collections.defaultdict(lambda: {"count": 0, "bytes": 0})
    for line in hlo.splitlines():
        match = OP_LINE.search(line)
        if not match:
            continue
        result_type, op = match[1], match[2]
        size = 0
        for dtype, dims in SHAPE.findall(result_type):
            count = 1
            for d in filter(None, dims.split(",")):
                count *= int(d)
            size += count * BYTES[dtype]
        found[op]["count"] += 1
        found[op]["bytes"] += size
    return dict(found)


def summed(programs: dict) -> dict:
    total = collections.defaultdict(lambda: {"count": 0, "bytes": 0})
    for ops in programs.values():
        for op, c in ops.items():
            total[op]["count"] += c["count"]
            total[op]["bytes"] += c["bytes"]
    return dict(total)


def _tree_bytes(tree) -> int:
    import jax
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def embedded_pssnet(**overrides) -> tuple:
    """(SupernetRun, fresh train state, first global batch) of the embedded PSS-Net run with
    the persistent compilation cache off."""
    from common_jax import mesh as mesh_lib, train_state
    from pssnet_dcff import api
    from pssnet_jax import supernet_run

    config = api.load_config("configs/pssnet/embedded.py", compilation_cache_dir="off",
                             **overrides)
    sr = supernet_run.setup(config)
    state = train_state.init_state(sr.run, sr.init())
    return sr, state, mesh_lib.global_batch(next(sr.run.input.train_batches(0)), sr.run.mesh)


def pssnet_programs(batch: int, mode: str) -> tuple[dict, int]:
    """({program: collectives}, parameter bytes) of one PSS-Net step of the embedded run."""
    import numpy as np

    sr, state, batch_arrays = embedded_pssnet(batch_size=batch, **{"pssnet.step_mode": mode})
    space = sr.space
    mid = space.subnet(*space.random(np.random.default_rng(0)))
    low = sr.min_subnet
    sr.fns.step(state, batch_arrays, sr.widths(sr.max_subnet),
                (sr.widths(mid), mid.resolution), (sr.widths(low), low.resolution), mode)
    programs = {name: collectives(fn.as_text())
                for name, fn in sr.fns.compiled.programs().items()}
    return programs, _tree_bytes(state["params"])


def dcff_programs(batch: int) -> tuple[dict, int]:
    """({"train step": collectives}, parameter bytes) of the embedded DCFF fused step."""
    import jax

    from common_jax import mesh as mesh_lib, train_state
    from common_jax.plain_step import make_train_step
    from dcff_jax import fusion_state
    from dcff_jax.train import fused_setup
    from pssnet_dcff import api

    config = api.load_config("configs/dcff/embedded.py", batch_size=batch,
                             compilation_cache_dir="off")
    arch, run, model, init = fused_setup(config)
    state = train_state.init_state(run, init)
    batch_arrays = mesh_lib.global_batch(next(run.input.train_batches(0)), run.mesh)
    compiled = jax.jit(make_train_step(run, model, fusion_state.fused_variables)).lower(
        state, batch_arrays).compile()
    return {"train step": collectives(compiled.as_text())}, _tree_bytes(state["params"])


def child(args) -> dict:
    import jax
    cases = {}
    for name, build in (("pssnet split", lambda: pssnet_programs(args.batch, "split")),
                        ("pssnet single", lambda: pssnet_programs(args.batch, "single")),
                        ("dcff", lambda: dcff_programs(args.batch))):
        programs, param_bytes = build()
        total = summed(programs)
        reduced = total.get("all-reduce", {"bytes": 0})["bytes"]
        cases[name] = {"programs": programs, "total": total, "param_bytes": param_bytes,
                       "all_reduce_bytes_over_param_bytes": round(reduced / param_bytes, 3)}
    return {"devices": jax.device_count(), "device": jax.devices()[0].device_kind,
            "cases": cases}


def compile_child(workers: int) -> dict:
    """Start-up compile of the embedded PSS-Net run (one device, no persistent cache) with
    ``workers`` threads: programs, wall seconds and the sum of their compile seconds."""
    from pssnet_jax.precompile import precompile

    sr, state, batch = embedded_pssnet()
    return precompile(sr, state, batch, sr.config.pssnet.step_mode, workers=workers)


def run_child(flags: list, devices: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    result = subprocess.run([sys.executable, os.path.abspath(__file__), *flags], cwd=ROOT,
                            env=env, capture_output=True, text=True)
    found = re.search(r"^POD_RESULT (.*)$", result.stdout, re.M)
    if result.returncode or not found:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(found[1])


RESTART_FLAGS = [
    "--config=configs/pssnet/embedded.py", "--config.dataset.num_train_examples=640",
    "--config.dataset.holdout_examples=128", "--config.batch_size=64",
    "--config.pssnet.resolutions=(24,28,4)", "--config.pssnet.targets=(4.5,6.0,0.5)",
    "--config.pssnet.map_samples=4000", "--config.pssnet.recal_batches=2",
    "--config.num_epochs=1", "--config.checkpoint_every_steps=2", "--config.pssnet.topk=1"]


def process_pair(flags: list, root: str, port: int) -> list[dict]:
    """Runs two cooperating processes of ``tests/count_host_syncs.py`` (launch.py with a
    counter) to the end; per process its host syncs in steps and compiles / cache loads."""
    procs, logs = [], []
    for index in range(2):
        env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR="",
                   HOME=os.path.join(root, f"home{index}"),
                   XLA_FLAGS="--xla_force_host_platform_device_count=1")
        logs.append(open(os.path.join(root, f"log{port}_{index}.txt"), "w+"))
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tests", "count_host_syncs.py"), *flags,
             f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
             f"--process_id={index}"], cwd=ROOT, env=env, stdout=logs[-1],
            stderr=subprocess.STDOUT, text=True))
    out = []
    for proc, log in zip(procs, logs):
        if proc.wait():
            log.seek(0)
            raise SystemExit(log.read()[-3000:])
        log.seek(0)
        text = log.read()
        compiled = re.search(r"compilation: (\d+) XLA compiles, (\d+) executables loaded", text)
        out.append({"host_syncs_in_steps": int(re.search(r"host syncs in steps: (\d+)",
                                                         text)[1]),
                    "compiled": int(compiled[1]), "loaded": int(compiled[2])})
    return out


def restart_part(root: str) -> dict:
    """Per cache placement, each process's syncs and compiles before and after a restart."""
    import socket
    report = {}
    for placement in ("per host", "workdir"):
        workdir = os.path.join(root, placement.replace(" ", "_"))
        flags = [*RESTART_FLAGS, f"--workdir={workdir}"]
        if placement == "per host":
            flags.append(f"--config.compilation_cache_dir={workdir}_cache_of_this_host")
        runs = []
        for stop in (["--stop_after=4"], []):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            runs.append(process_pair(flags + stop, root, port))
        report[placement] = {"first": runs[0], "restart": runs[1]}
    return report


def restart_table(report: dict) -> str:
    lines = [f"{'cache':<10}{'process':>8}{'host syncs':>12}{'compiled':>10}{'loaded':>8}"
             f"{'compiled after restart':>24}{'loaded after restart':>22}"]
    for placement, runs in report["restart"].items():
        for index, (first, again) in enumerate(zip(runs["first"], runs["restart"])):
            syncs = first["host_syncs_in_steps"] + again["host_syncs_in_steps"]
            lines.append(f"{placement:<10}{index:>8}{syncs:>12}{first['compiled']:>10}"
                         f"{first['loaded']:>8}{again['compiled']:>24}{again['loaded']:>22}")
    return "\n".join(lines)


def restart_main(out: str) -> None:
    """``--part=restart``: runs ``restart_part`` in a temporary directory, prints and writes."""
    import tempfile
    with tempfile.TemporaryDirectory() as root:
        report = {"restart": restart_part(root)}
    import jax
    report.update(device=jax.devices("cpu")[0].device_kind, cpus=os.cpu_count(),
                  platform=platform.platform(), date=datetime.date.today().isoformat(),
                  provenance=provenance())
    print(restart_table(report))
    if out:
        with open(out, "w") as f:
            json.dump(report, f, indent=2)


def table(report: dict) -> str:
    lines = [f"{'step':<16}{'programs':>9}{'all-reduces':>13}{'all-reduce MB':>15}"
             f"{'x param bytes':>15}{'all-gathers':>13}{'other':>7}"]
    for name, case in report["cases"].items():
        total = case["total"]
        reduce = total.get("all-reduce", {"count": 0, "bytes": 0})
        gathers = total.get("all-gather", {"count": 0})["count"]
        other = sum(v["count"] for k, v in total.items() if k not in ("all-reduce",
                                                                      "all-gather"))
        lines.append(f"{name:<16}{len(case['programs']):>9}{reduce['count']:>13}"
                     f"{reduce['bytes'] / 1e6:>15.2f}"
                     f"{case['all_reduce_bytes_over_param_bytes']:>15.2f}{gathers:>13}"
                     f"{other:>7}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--out", default="")
    parser.add_argument("--part", default="steps", choices=("steps", "restart"),
                        help="steps: collectives and start-up compile; restart: two processes")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compile_workers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("POD_RESULT " + json.dumps(child(args)))
        return
    if args.compile_workers:
        print("POD_RESULT " + json.dumps(compile_child(args.compile_workers)))
        return
    if args.part == "restart":
        restart_main(args.out)
        return
    if args.devices < 2 or args.batch % args.devices:
        raise SystemExit(f"--devices={args.devices} --batch={args.batch}: need at least 2 "
                         f"devices and a batch divisible by them")
    report = run_child(["--child", f"--devices={args.devices}", f"--batch={args.batch}"],
                       args.devices)
    cpus = os.cpu_count() or 1
    report["compile"] = {"serial": run_child(["--compile_workers=1"], 1),
                         "parallel": run_child([f"--compile_workers={cpus}"], 1),
                         "threads": cpus}
    report.update(batch=args.batch, cpus=cpus, platform=platform.platform(),
                  date=datetime.date.today().isoformat(), provenance=provenance())
    print(table(report))
    print(f"start-up compile of the embedded PSS-Net run: {report['compile']['serial']}"
          f" serial, {report['compile']['parallel']} in {cpus} threads")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
