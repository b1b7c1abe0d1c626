"""Training, fusion, evaluation and inference throughput, side by side with a PyTorch reference.

    python benchmarks/throughput.py            # GPU/TPU: the ImageNet/CIFAR configs below
    python benchmarks/throughput.py --quick    # CPU: the embedded configs, a few minutes

Inputs are synthetic (``dataset.synthetic``: random images of each dataset's shape), so
neither the datasets nor TensorFlow are needed. Cases:

* ``pss_*``: the PSS-Net supernet training step exactly as training runs it (host sampling
  and pools, max + middle + min subnet, split compiles). Every middle resolution is compiled
  first; the compile time of each function and their total is reported. Then median of
  ``--steps`` synchronised steps after ``--warmup``, and the pipelined time per step (steps
  dispatched back to back, one wait at the end). ``host_ms``: the host's pool work per step
  (target draw, sampling from map or pool, pool update), measured apart with full pools.
* ``dcff_*``: the DCFF fused-model training step; ``fusion_*``: recomputing every layer's
  fusion matrix (once per epoch in training), also as a share of one epoch at that batch.
* ``recal_eval``: BN recalibration plus evaluation of one middle subnet on ``eval_images``.
* ``infer_*``: exported plain models (a PSS subnet, the DCFF compact model) at batch 1 / 256.
* ``torch_*`` (with PyTorch installed): ``benchmarks/torch_reference.py`` runs the same PSS-Net
  and DCFF steps in its own process after the JAX cases (JAX's memory preallocation is off);
  the table gives JAX / PyTorch images/s ratios.

Prints a table last and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave room for PyTorch
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from common_jax import mesh as mesh_lib, models, train_state  # noqa: E402
from common_jax.provenance import provenance  # noqa: E402
from common_jax.plain_step import make_train_step  # noqa: E402
from dcff_jax import fusion_state  # noqa: E402
from dcff_jax.train import fused_setup  # noqa: E402
from pssnet_dcff import api  # noqa: E402
from pssnet_jax import draw as draw_lib, sampler, supernet, supernet_run  # noqa: E402
from pssnet_jax.host_state import HostState  # noqa: E402

FULL = {
    "pss": [("pss_mbv2_f32", "configs/pssnet/mobilenet_v2_imagenet.py", "float32", 256),
            ("pss_mbv2_bf16", "configs/pssnet/mobilenet_v2_imagenet.py", "bfloat16", 256),
            ("pss_mbv1_f32", "configs/pssnet/mobilenet_v1_imagenet.py", "float32", 256)],
    "dcff": [("dcff_resnet56", "configs/dcff/resnet56_cifar10.py", "float32", 256, 50_000),
             ("dcff_resnet50", "configs/dcff/resnet50_imagenet_step2249m.py", "float32", 128,
              1_281_167)],
    "eval_images": 10_000,
}
QUICK = {
    "pss": [("pss_embedded_f32", "configs/pssnet/embedded.py", "float32", 128)],
    "dcff": [("dcff_embedded", "configs/dcff/embedded.py", "float32", 128, 10_000),
             ("dcff_resnet56", "configs/dcff/resnet56_cifar10.py", "float32", 64, 50_000)],
    "fusion_only": [("fusion_resnet50", "configs/dcff/resnet50_imagenet_step2249m.py")],
    "eval_images": 2_000,
}
SYNTHETIC = {"dataset.synthetic": True, "dataset.holdout_examples": 0,
             "compilation_cache_dir": "off"}


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _config(path: str, dtype: str, batch: int, **extra):
    return api.load_config(path, **SYNTHETIC, batch_size=batch, compute_dtype=dtype,
                           **{"dataset.num_train_examples": 2 * batch, **extra})


def _first_batch(run):
    return mesh_lib.global_batch(next(run.input.train_batches(0)), run.mesh)


def full_host_state(pss, seed: int = 1) -> HostState:
    """Host state whose every pool is full (random scores)."""
    cfg, rng = pss.config.pssnet, np.random.default_rng(seed)
    host = pss.fresh_host_state()
    for name, fmap in pss.plan.maps.items():
        for target in fmap.targets:
            while host.pools[name].size(target) < cfg.pool_size:
                host.pools[name].update(target, sampler.sample(pss.space, fmap, target, rng),
                                        rng.normal())
    return host


def host_pool_ms(pss, iterations: int = 300) -> float:
    """Median host time of one step's pool work with every pool full: the draw
    (``pssnet_jax.draw.draw``) half-way through training (p_e = 0.1), the subnet's widths
    and the pool update (§5, §7 steps 2-4)."""
    host, rng = full_host_state(pss), np.random.default_rng(1)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        name, target, subnet = draw_lib.draw(pss.plan, host, epoch=1, epochs=2)
        supernet.widths_of(pss.space.arch(subnet))
        host.pools[name].update(target, subnet, float(rng.normal()))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def pss_case(name, path, dtype, batch, args, eval_images) -> tuple[dict, dict]:
    """(JAX results, the PyTorch reference's spec) of one PSS-Net supernet."""
    config = _config(path, dtype, batch, **{"dataset.num_eval_examples": eval_images,
                                            "pssnet.selection": "rank1",
                                            "model.depthwise_impl": args.depthwise_impl})
    pss = supernet_run.setup(config)
    run, fns, host = pss.run, pss.fns, full_host_state(pss)
    state = train_state.init_state(run, pss.init())
    batch_arrays = _first_batch(run)
    max_widths = pss.widths(pss.max_subnet)
    low = (pss.widths(pss.min_subnet), pss.min_subnet.resolution)

    def subnet_step(state, batch, subnet):
        return fns.step(state, batch, max_widths, (pss.widths(subnet), subnet.resolution), low)

    def step_fn(state, batch, step):  # as the trainer runs it: draw, step, pool update
        return draw_lib.sampled_step(pss.plan, host, subnet_step, state, batch, step, 1, 2,
                                     pss.min_subnet.resolution)[:2]

    start = time.perf_counter()
    for resolution in pss.space.resolutions:  # every middle resolution compiles once
        state, _ = fns.step(state, batch_arrays, max_widths, (max_widths, resolution), low)
    jax.block_until_ready(state)
    compile_wall = time.perf_counter() - start
    step = 0
    for _ in range(args.warmup):
        state, _ = step_fn(state, batch_arrays, step)
        step += 1
    jax.block_until_ready(state)
    times = []
    for _ in range(args.steps):
        begin = time.perf_counter()
        state, metrics = step_fn(state, batch_arrays, step)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - begin)
        step += 1
    begin = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = step_fn(state, batch_arrays, step)
        step += 1
    jax.block_until_ready((state, metrics))
    pipelined = (time.perf_counter() - begin) / args.steps
    host.flush()
    median = statistics.median(times)
    result = {"kind": "pss train step", "batch": batch, "dtype": dtype,
              "median_ms": 1e3 * median, "pipelined_ms": 1e3 * pipelined,
              "images_per_s": batch / median,
              "compile_s": sum(fns.compiled.times.values()), "compile_wall_s": compile_wall,
              "compiled": dict(fns.compiled.times), "resolutions": len(pss.space.resolutions),
              "host_ms": host_pool_ms(pss)}
    result["host_share"] = result["host_ms"] / result["median_ms"]
    rng = np.random.default_rng(2)
    fmap = next(iter(pss.plan.maps.values()))
    middles = [sampler.sample(pss.space, fmap, fmap.targets[rng.integers(len(fmap.targets))],
                              rng) for _ in range(16)]
    torch_spec = {"name": name, "kind": "pss", "full_arch": pss.space.full_arch,
                  "max_resolution": pss.space.resolutions[-1], "batch": batch,
                  "amp": dtype == "bfloat16",
                  "min": {"arch": pss.space.arch(pss.min_subnet),
                          "resolution": pss.min_subnet.resolution},
                  "middles": [{"arch": pss.space.arch(s), "resolution": s.resolution}
                              for s in middles],
                  "lr": config.optimizer.learning_rate, "momentum": config.optimizer.momentum,
                  "weight_decay": config.optimizer.weight_decay}
    extras = {}
    if dtype == "float32":
        extras = recal_and_inference(name, pss, state, middles[0], eval_images)
    return {name: result, **extras}, torch_spec


def recal_and_inference(name, pss, state, subnet, eval_images) -> dict:
    """BN recalibration + evaluation of one subnet; inference of its exported plain model."""
    def recal_eval():
        stats = pss.recalibrated_stats(state, subnet)
        return pss.subnet_results(state, subnet, stats, "eval")["accuracy"]

    start = time.perf_counter()
    recal_eval()
    first = time.perf_counter() - start
    out = {f"recal_eval_{name}": {"kind": "BN recal + eval", "images": eval_images,
                                  "recal_batches": pss.config.pssnet.recal_batches,
                                  "median_ms": _median_ms(recal_eval, 3),
                                  "first_call_s": first}}
    arch = pss.space.arch(subnet)
    stats = pss.recalibrated_stats(state, subnet)
    variables = supernet.slice_variables(
        {"params": state["params"], "batch_stats": jax.device_get(stats)}, arch)
    out.update(inference(f"infer_{name}_subnet", arch, variables, subnet.resolution))
    return out


def inference(name, arch, variables, size) -> dict:
    """Latency of a plain exported model at batch 1 and 256 (jitted apply, eval mode)."""
    model = models.build_model(arch)
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    out = {}
    for batch in (1, 256):
        x = jax.random.normal(jax.random.key(0), (batch, size, size, arch["in_channels"]))
        jax.block_until_ready(apply(variables, x))
        median = _median_ms(lambda: apply(variables, x), 20)
        out[f"{name}_b{batch}"] = {"kind": "inference", "batch": batch, "median_ms": median,
                                   "images_per_s": 1e3 * batch / median}
    return out


def fusion_case(name, run, state, batch_median_ms=None, epoch_images=None) -> dict:
    """Recompute time of every fusion matrix (a new epoch each call)."""
    epochs = iter(range(1, 10_000))
    total = run.total_epochs + 10_000

    def recompute():
        return fusion_state.updated(state, next(epochs), total, run.config.dcff)["fusion"][
            "matrix"]

    recompute()
    median = _median_ms(recompute, 10)
    result = {"kind": "fusion recompute", "layers": len(jax.tree.leaves(
        state["fusion"]["matrix"])), "median_ms": median}
    if batch_median_ms:
        epoch_ms = batch_median_ms * (epoch_images // run.config.batch_size)
        result["share_of_epoch"] = median / epoch_ms
    return {name: result}


def dcff_case(name, path, dtype, batch, epoch_images, args) -> tuple[dict, dict | None]:
    config = _config(path, dtype, batch)
    arch, run, model, state = _fused_state(config)
    batch_arrays = _first_batch(run)
    start = time.perf_counter()
    step = make_train_step(run, model, fusion_state.fused_variables).lower(
        state, batch_arrays).compile()
    compile_s = time.perf_counter() - start
    for _ in range(args.warmup):
        state, _ = step(state, batch_arrays)
    times = []
    for _ in range(args.steps):
        begin = time.perf_counter()
        state, metrics = step(state, batch_arrays)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - begin)
    median = statistics.median(times)
    out = {name: {"kind": "dcff train step", "batch": batch, "dtype": dtype,
                  "median_ms": 1e3 * median, "images_per_s": batch / median,
                  "compile_s": compile_s}}
    out.update(fusion_case(name.replace("dcff", "fusion"), run, state, 1e3 * median,
                           epoch_images))
    compact = fusion_state.compact_variables(state)
    size = run.input.image_size
    out.update(inference(f"infer_{name}_compact", arch, jax.device_get(compact), size))
    torch_spec = None
    if arch["family"] == "resnet_cifar":
        torch_spec = {"name": name, "kind": "dcff", "compact": arch, "batch": batch,
                      "full": models.arch_for(config.model.name, num_classes=arch[
                          "num_classes"], in_channels=arch["in_channels"]),
                      "image_size": size, "amp": False,
                      "lr": config.optimizer.learning_rate,
                      "momentum": config.optimizer.momentum,
                      "weight_decay": config.optimizer.weight_decay}
    return out, torch_spec


def _fused_state(config):
    """(compact arch, run, fused model, state with the epoch-0 fusion) of a DCFF config."""
    arch, run, model, init = fused_setup(config)
    state = fusion_state.updated(train_state.init_state(run, init), 0, run.total_epochs,
                                 config.dcff)
    return arch, run, model, state


def fusion_only(name, path) -> dict:
    _, run, _, state = _fused_state(_config(path, "float32", 8))
    return fusion_case(name, run, state)


def torch_reference(specs: list, args) -> dict:
    """Runs benchmarks/torch_reference.py on ``specs`` in its own process; {} without torch."""
    if not specs or args.no_torch or importlib.util.find_spec("torch") is None:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.json")
        with open(spec_path, "w") as f:
            json.dump({"steps": args.steps, "warmup": args.warmup, "cases": specs}, f)
        subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "torch_reference.py"),
                        f"--spec={spec_path}", f"--out={out_path}"], check=True)
        with open(out_path) as f:
            return json.load(f)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="embedded configs (CPU)")
    parser.add_argument("--steps", type=int, default=0, help="timed steps (50; --quick 20)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--cases", default="pss,dcff,fusion,torch",
                        help="comma list of pss, dcff, fusion (ResNet-50 in --quick), torch")
    parser.add_argument("--skip_mbv1", action="store_true")
    parser.add_argument("--depthwise_impl", default="auto", choices=("auto", "conv", "shifts"),
                        help="model.depthwise_impl of the PSS-Net supernets")
    parser.add_argument("--no_torch", action="store_true")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    args.steps = args.steps or (20 if args.quick else 50)
    cases = set(args.cases.split(","))
    unknown = cases - {"pss", "dcff", "fusion", "torch"}
    if unknown or args.steps < 1 or args.warmup < 0:
        raise SystemExit(f"--cases={args.cases!r} --steps={args.steps} --warmup={args.warmup}: "
                         f"cases from pss,dcff,fusion,torch; steps >= 1, warmup >= 0")
    args.no_torch = args.no_torch or "torch" not in cases
    plan = QUICK if args.quick else FULL
    results, torch_specs, dcff_torch = {}, [], []
    started = time.perf_counter()
    pss_plan = [c for c in plan["pss"] if not (args.skip_mbv1 and "mbv1" in c[0])]
    jax_jobs = []
    if "pss" in cases:
        jax_jobs += [("pss", c) for c in pss_plan]
    if "dcff" in cases:
        jax_jobs += [("dcff", c) for c in plan["dcff"]]
    if "fusion" in cases:
        jax_jobs += [("fusion", c) for c in plan.get("fusion_only", [])]
    for kind, case in jax_jobs:
        print(f"measuring {case[0]} ...", flush=True)
        if kind == "pss":
            out, spec = pss_case(*case, args, plan["eval_images"])
            torch_specs.append(spec)
        elif kind == "dcff":
            out, spec = dcff_case(*case, args)
            if spec:
                dcff_torch.append(spec)
        else:
            out = fusion_only(*case)
        results.update(out)
    reference = torch_reference(torch_specs + dcff_torch, args)
    for name, ref in reference.get("cases", {}).items():
        results[f"torch_{name}"] = {"kind": "PyTorch reference", **ref}
        if name in results:
            results[name]["torch_ratio"] = results[name]["images_per_s"] / ref["images_per_s"]
    device = jax.devices()[0]
    report = {"date": datetime.date.today().isoformat(), "command": " ".join(sys.argv),
              "provenance": provenance(),
              "machine": {"device": device.device_kind, "platform": device.platform,
                          "cpus": os.cpu_count(), "os": platform.platform(),
                          "python": platform.python_version(), "jax": jax.__version__,
                          "torch": reference.get("torch"), "torch_device":
                          reference.get("device"), "torch_threads": reference.get("threads")},
              "depthwise_impl": args.depthwise_impl, "steps": args.steps,
              "total_s": time.perf_counter() - started, "results": results}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    print(table(report))


def table(report: dict) -> str:
    machine = report["machine"]
    lines = [f"{machine['device']} ({machine['platform']}), jax {machine['jax']}, torch "
             f"{machine['torch']}, {report['date']}, depthwise {report['depthwise_impl']}, "
             f"{report['steps']} timed steps, {report['total_s']:.0f} s",
             f"{'case':<34}{'ms/step':>10}{'images/s':>10}{'compile s':>11}{'vs torch':>10}"
             f"  notes"]
    for name, r in report["results"].items():
        notes = []
        if "pipelined_ms" in r:
            notes.append(f"pipelined {r['pipelined_ms']:.1f} ms")
        if "host_share" in r:
            notes.append(f"host pool work {r['host_ms']:.2f} ms ({100 * r['host_share']:.1f}%)")
        if "share_of_epoch" in r:
            notes.append(f"{100 * r['share_of_epoch']:.3f}% of an epoch")
        if "layers" in r:
            notes.append(f"{r['layers']} layers")
        if "images" in r:
            notes.append(f"{r['images']} images, {r['recal_batches']} recal batches")
        ips = f"{r['images_per_s']:.0f}" if "images_per_s" in r else ""
        comp = f"{r['compile_s']:.1f}" if "compile_s" in r else ""
        ratio = f"{r['torch_ratio']:.2f}x" if "torch_ratio" in r else ""
        lines.append(f"{name:<34}{r['median_ms']:>10.2f}{ips:>10}{comp:>11}{ratio:>10}  "
                     + "; ".join(notes))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
