"""Cold compile time of the PSS-Net subnet gradient by dtype, XLA flags and model form.

    python benchmarks/compile_probe.py --config=configs/pssnet/mobilenet_v2_imagenet.py \\
        --batch=256 [--variants=f32,bf16,...] [--resolutions=224,128] [--timeout=180] \\
        [--out=FILE.json]

The compile-time issue (part 3) asks why bf16 compiles so much slower than f32 on a GPU.
Every variant runs in a fresh process with the persistent compilation cache off, so each
number is a cold compile. A variant fixes the compute dtype, extra ``XLA_FLAGS``, the model
form and whether the resolutions compile one after another or concurrently:

* form ``masked``: the supernet gradient exactly as training compiles it (``StepFunctions``);
  ``plain``: the plain MobileNet at the max net's widths, no channel masks and BatchNorm
  without the f32 round trip, so masked vs plain isolates the mask multiplies and converts.
* ``threads``: all resolutions compile concurrently in threads (wall time vs the sum).

Per variant: lower and compile seconds per resolution, the wall time of the compile phase,
op counts of the optimised HLO of the first resolution (convolution, convert, transpose, copy,
fusion, custom-call: where layouts and dtype conversions show), and the median run time of
that gradient (a flag that compiles faster by picking worse kernels shows up here). A variant
past ``--timeout`` is reported as a timeout; one whose XLA rejects a flag, as failed with the
message. Prints a table last and writes JSON.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import datetime
import importlib.metadata
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from common_jax.provenance import provenance  # noqa: E402  (imports no JAX)
# name -> (dtype, form, threads, extra XLA flags); the GPU flags are accepted on CPU too.
VARIANTS = {
    "f32": ("float32", "masked", False, ""),
    "bf16": ("bfloat16", "masked", False, ""),
    "bf16_autotune1": ("bfloat16", "masked", False, "--xla_gpu_autotune_level=1"),
    "bf16_autotune0": ("bfloat16", "masked", False, "--xla_gpu_autotune_level=0"),
    "bf16_no_triton_gemm": ("bfloat16", "masked", False, "--xla_gpu_enable_triton_gemm=false"),
    "bf16_no_fusion_autotuner": ("bfloat16", "masked", False,
                                 "--xla_gpu_experimental_enable_fusion_autotuner=false"),
    "f32_plain": ("float32", "plain", False, ""),
    "bf16_plain": ("bfloat16", "plain", False, ""),
    "f32_threads": ("float32", "masked", True, ""),
    "bf16_threads": ("bfloat16", "masked", True, ""),
}
HLO_OPS = ("convolution", "convert", "transpose", "copy", "fusion", "custom-call")


def parse_variants(text: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise SystemExit(f"--variants={text!r}: unknown {unknown}; expected a comma-separated "
                         f"list of {list(VARIANTS)}")
    return names


# -- child: one variant in a fresh process ---------------------------------------------------
def _gradient_functions(args, dtype: str, form: str):
    """(resolution -> (function, example arguments)) for the variant's model form."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from common_jax import data, models
    from pssnet_dcff import api
    from pssnet_jax import step as step_lib, supernet
    from pssnet_jax.space import space_from_config

    overrides = {"dataset.synthetic": True, "compilation_cache_dir": "off",
                 "batch_size": args.batch, "compute_dtype": dtype,
                 "model.depthwise_impl": args.depthwise_impl}
    group = api.load_config(args.config).pssnet.bn_group_size
    if group and args.batch % group:
        overrides["pssnet.bn_group_size"] = 0  # ghost BN groups must divide the batch
    config = api.load_config(args.config, **overrides)
    info = data.dataset_info(config.dataset.name)
    space = space_from_config(config, info)
    supernet_model = supernet.build_supernet(space.full_arch, models.DTYPES[dtype],
                                             args.depthwise_impl, config.pssnet.bn_group_size)
    size, rng = data.image_size(config.dataset), np.random.default_rng(0)

    def fill(shapes):
        """Random values of the right shapes (timing does not need a trained init)."""
        return jax.tree.map(lambda s: jnp.asarray(
            np.abs(rng.normal(0, 0.05, s.shape)) + (1.0 if s.ndim == 1 else 0.0), s.dtype),
            shapes)

    labels = jnp.asarray(rng.integers(0, info.num_classes, args.batch), jnp.int32)
    if form == "masked":
        fns = step_lib.StepFunctions(supernet_model, optax.sgd(0.1), lambda s: 0.1, info,
                                     models.DTYPES[dtype], space.resolutions[-1])
        widths = supernet.widths_of(space.full_arch)
        image = jnp.asarray(rng.integers(0, 256, (args.batch, size, size, info.channels)),
                            jnp.uint8)
        variables = fill(jax.eval_shape(lambda: supernet_model.init(
            jax.random.PRNGKey(0), image.astype(jnp.float32), widths, size, train=False)))
        teacher = jnp.full((args.batch, info.num_classes), 1.0 / info.num_classes)
        call = (variables["params"], variables["batch_stats"], {"image": image, "label": labels},
                widths, teacher, 1.0, 0.0)
        return {r: (fns.subnet_grad(r), call) for r in args.resolutions}

    model = models.build_model(space.full_arch, dtype, args.depthwise_impl)

    def grad(params, batch_stats, images, labels):
        def loss_fn(p):
            logits, updates = model.apply({"params": p, "batch_stats": batch_stats}, images,
                                          train=True, mutable=["batch_stats"])
            return step_lib.mean_cross_entropy(logits, labels), updates["batch_stats"]
        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    out = {}
    for r in args.resolutions:
        images = jnp.asarray(rng.normal(size=(args.batch, r, r, info.channels)), jnp.float32)
        variables = fill(jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images,
                                                           train=False)))
        out[r] = (grad, (variables["params"], variables["batch_stats"], images, labels))
    return out


def child(args) -> dict:
    import jax

    dtype, form, threads, _ = VARIANTS[args.child]
    functions = _gradient_functions(args, dtype, form)

    def compile_one(resolution):
        fn, call = functions[resolution]
        start = time.perf_counter()
        lowered = jax.jit(fn).lower(*call)
        lowered_at = time.perf_counter()
        compiled = lowered.compile()
        return compiled, lowered_at - start, time.perf_counter() - lowered_at

    start = time.perf_counter()
    if threads:
        with concurrent.futures.ThreadPoolExecutor(len(args.resolutions)) as pool:
            results = list(pool.map(compile_one, args.resolutions))
    else:
        results = [compile_one(r) for r in args.resolutions]
    wall = time.perf_counter() - start
    first, call = results[0][0], functions[args.resolutions[0]][1]
    hlo = first.as_text()
    counts = collections.Counter(re.findall(r"= \S+ ([\w-]+)\(", hlo))
    times = []
    for i in range(args.steps + 2):
        begin = time.perf_counter()
        jax.block_until_ready(first(*call))
        if i >= 2:
            times.append(time.perf_counter() - begin)
    return {"status": "ok", "device": jax.devices()[0].device_kind,
            "lower_s": {str(r): round(res[1], 2) for r, res in zip(args.resolutions, results)},
            "compile_s": {str(r): round(res[2], 2) for r, res in zip(args.resolutions, results)},
            "compile_wall_s": round(wall, 2),
            "hlo_ops": {op: counts.get(op, 0) for op in HLO_OPS},
            "run_ms": round(1e3 * statistics.median(times), 2)}


# -- parent ----------------------------------------------------------------------------------
def run_variant(name: str, args, extra: list) -> dict:
    flags = VARIANTS[name][3]
    env = dict(os.environ, XLA_FLAGS=" ".join(f for f in (os.environ.get("XLA_FLAGS", ""),
                                                           flags) if f))
    command = [sys.executable, os.path.abspath(__file__), f"--child={name}", *extra]
    start = time.perf_counter()
    try:
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout after {args.timeout} s", "process_s": args.timeout}
    found = re.search(r"^PROBE_RESULT (.*)$", result.stdout, re.M)
    if result.returncode or not found:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        return {"status": "failed: " + (lines[-1][:300] if lines else f"rc {result.returncode}")}
    return dict(json.loads(found[1]), process_s=round(time.perf_counter() - start, 1))


def table(report: dict) -> str:
    resolutions = report["resolutions"]
    head = (f"{'variant':<26}{'XLA flags':<52}" + "".join(f"{f'compile {r}':>13}"
                                                          for r in resolutions)
            + f"{'wall':>8}{'run ms':>9}  HLO ops (first resolution)")
    lines = [head]
    for name, r in report["variants"].items():
        flags = VARIANTS[name][3] or "-"
        if r["status"] != "ok":
            lines.append(f"{name:<26}{flags:<52}{r['status']}")
            continue
        ops = " ".join(f"{op}={n}" for op, n in r["hlo_ops"].items())
        lines.append(f"{name:<26}{flags:<52}"
                     + "".join(f"{r['compile_s'][str(res)]:>13.1f}" for res in resolutions)
                     + f"{r['compile_wall_s']:>8.1f}{r['run_ms']:>9.1f}  {ops}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/pssnet/mobilenet_v2_imagenet.py")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--resolutions", default="",
                        help="comma-separated; default: the config's max and min resolution")
    parser.add_argument("--variants", default="f32,bf16,bf16_autotune1,bf16_autotune0,"
                        "bf16_no_triton_gemm,bf16_no_fusion_autotuner,bf16_plain")
    parser.add_argument("--depthwise_impl", default="auto", choices=("auto", "conv", "shifts"))
    parser.add_argument("--steps", type=int, default=10, help="timed runs per variant")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per variant")
    parser.add_argument("--out", default="")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch < 1 or args.steps < 1:
        raise SystemExit(f"--batch={args.batch} and --steps={args.steps} must be at least 1")
    sys.path.insert(0, ROOT)
    if not args.resolutions:
        from common_jax import data
        from pssnet_dcff import api
        from pssnet_jax.space import space_from_config
        config = api.load_config(args.config)
        space = space_from_config(config, data.dataset_info(config.dataset.name))
        args.resolutions = f"{space.resolutions[-1]},{space.resolutions[0]}"
    try:
        args.resolutions = [int(r) for r in args.resolutions.split(",")]
    except ValueError:
        raise SystemExit(f"--resolutions={args.resolutions!r}: expected integers like 224,128")
    if args.child:
        print("PROBE_RESULT " + json.dumps(child(args)), flush=True)
        return
    names = parse_variants(args.variants)
    extra = [f"--config={args.config}", f"--batch={args.batch}", f"--steps={args.steps}",
             f"--resolutions={','.join(map(str, args.resolutions))}",
             f"--depthwise_impl={args.depthwise_impl}"]
    report = {"config": args.config, "batch": args.batch, "resolutions": args.resolutions,
              "depthwise_impl": args.depthwise_impl, "variants": {},
              "date": datetime.date.today().isoformat(), "provenance": provenance(),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "jax": importlib.metadata.version("jax"), "device": None}}
    for name in names:  # the parent never initialises JAX: children get the whole device
        report["variants"][name] = run_variant(name, args, extra)
        report["machine"]["device"] = (report["machine"]["device"]
                                       or report["variants"][name].get("device"))
        print(f"{name}: {report['variants'][name]}", flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(report, f, indent=2)
    print(table(report))


if __name__ == "__main__":
    main()
