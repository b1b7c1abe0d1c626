"""Markdown tables of benchmarks/RESULTS.md, rendered from the benchmarks' raw JSON outputs.

    python benchmarks/result_tables.py        # prints every table from benchmarks/results/*.json

Each function takes the JSON a benchmark script wrote with ``--out`` and returns one table;
``tests/test_docs.py`` checks that benchmarks/RESULTS.md contains exactly these tables, so a
number in that file cannot drift from its raw output. Pure JSON in, text out: no JAX import.
"""

from __future__ import annotations

import json
import os
import statistics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def load(name: str) -> dict:
    with open(os.path.join(RESULTS, name)) as f:
        return json.load(f)


def _rows(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def machine_line(doc: dict) -> str:
    """'<device>, <cpus> CPUs, jax <version>, <date>' of a benchmark's raw output."""
    m = doc["machine"]
    return f"{m['device']}, {m['cpus']} CPUs, jax {m['jax']}, {doc['date']}"


def compile_time_table(doc: dict) -> str:
    """benchmarks/compile_time.py: cold and warm cache, launch to first step."""
    rows = []
    for name, label in (("cold", "cold (empty)"), ("warm", "warm (filled by the cold run)")):
        r = doc[name]
        rows.append([label, f"{r['process_wall_s']:.1f} s",
                     f"{r['train_start_to_first_step_s']:.1f} s",
                     str(r["xla_compiles_before_first_step"]),
                     f"{sum(r['compiled_functions'].values()):.1f} s"])
    return _rows(["compilation cache", "process wall time",
                  "start of training to first completed step", "XLA compiles before it",
                  "compile/load time of the logged functions"], rows)


def compile_functions_table(doc: dict) -> str:
    """benchmarks/compile_time.py: each logged function, cold compile / warm cache load."""
    cold, warm = doc["cold"]["compiled_functions"], doc["warm"]["compiled_functions"]
    return _rows(["function compiled before the first step", "cold s", "warm s"],
                 [[name, f"{cold[name]:.1f}", f"{warm[name]:.1f}" if name in warm else "-"]
                  for name in cold])


def compile_probe_table(doc: dict) -> str:
    """benchmarks/compile_probe.py: compile seconds per resolution, run time, HLO converts."""
    resolutions = doc["resolutions"]
    header = ["variant", *(f"compile s at {r} px" for r in resolutions), "compile wall s",
              f"run ms at {resolutions[0]} px", "converts in HLO", "fusions in HLO"]
    rows = []
    for name, r in doc["variants"].items():
        if r["status"] != "ok":
            rows.append([name, r["status"], *[""] * (len(header) - 2)])
            continue
        rows.append([name, *(f"{r['compile_s'][str(res)]:.1f}" for res in resolutions),
                     f"{r['compile_wall_s']:.1f}", f"{r['run_ms']:.0f}",
                     str(r["hlo_ops"]["convert"]), str(r["hlo_ops"]["fusion"])])
    return _rows(header, rows)


def compile_probe_findings(embedded: dict, imagenet: dict) -> list[str]:
    """The three findings of the compile probes (``compile_probe_table`` of each), as
    benchmarks/RESULTS.md states them: masked against plain and bf16 against f32 compile
    ratios over both configs and resolutions, run times, and serial against threads."""
    def v(doc, name):
        return doc["variants"][name]

    def ratios(a, b):
        return [v(d, a)["compile_s"][r] / v(d, b)["compile_s"][r]
                for d in (embedded, imagenet) for r in v(d, a)["compile_s"]]

    def secs(doc, name):
        return " / ".join(f"{t:.1f}" for t in v(doc, name)["compile_s"].values())
    masked = ratios("f32", "f32_plain")
    bf16 = ratios("bf16", "f32")
    threads, serial = v(embedded, "f32_threads"), v(embedded, "f32")
    return [
        f"The masked supernet still compiles {min(masked):.1f}-{max(masked):.1f}x slower than "
        f"the plain network** at the same widths (embedded {secs(embedded, 'f32')} s against "
        f"{secs(embedded, 'f32_plain')} s; ImageNet {secs(imagenet, 'f32')} s against "
        f"{secs(imagenet, 'f32_plain')} s) with almost no converts left "
        f"({v(embedded, 'f32')['hlo_ops']['convert']} against "
        f"{v(embedded, 'f32_plain')['hlo_ops']['convert']})",
        f"At run time the masked ImageNet gradient costs about what the plain one does "
        f"({v(imagenet, 'f32')['run_ms']:.0f} against {v(imagenet, 'f32_plain')['run_ms']:.0f} "
        f"ms); the embedded one is "
        f"{v(embedded, 'f32')['run_ms'] / v(embedded, 'f32_plain')['run_ms']:.2f}x slower "
        f"({v(embedded, 'f32')['run_ms']:.0f} against {v(embedded, 'f32_plain')['run_ms']:.0f}"
        f" ms)",
        f"On the CPU, bf16 compiles at most {max(bf16):.2f}x slower than f32** (embedded "
        f"{secs(embedded, 'bf16')} s against {secs(embedded, 'f32')} s; ImageNet "
        f"{secs(imagenet, 'bf16')} s against {secs(imagenet, 'f32')} s)",
        f"Compiling the two resolutions in two threads** took {threads['compile_wall_s']:.1f} s "
        f"of wall time against {serial['compile_wall_s']:.1f} s one after another: little gain "
        f"on 2 cores, since each compile then runs slower ({secs(embedded, 'f32_threads')} s "
        f"against {secs(embedded, 'f32')} s)"]


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def throughput_steps_table(doc: dict) -> str:
    """benchmarks/throughput.py: training steps against the PyTorch reference."""
    rows = []
    for name, r in doc["results"].items():
        if r["kind"] not in ("pss train step", "dcff train step"):
            continue
        ref = doc["results"].get(f"torch_{name}")
        compile_note = (f"{r['compile_s']:.1f} ({r['resolutions']} resolutions + update)"
                        if "resolutions" in r else f"{r['compile_s']:.1f}")
        rows.append([f"`{name}` {r['dtype']}, batch {r['batch']}", _ms(r["median_ms"]),
                     f"{r['images_per_s']:.0f}", compile_note,
                     _ms(ref["median_ms"]) if ref else "-",
                     f"{r['torch_ratio']:.2f}x" if "torch_ratio" in r else "-"])
    return _rows(["case", "JAX ms/step", "JAX images/s", "compile s", "PyTorch ms/step",
                  "JAX / PyTorch images/s"], rows)


def throughput_other_table(doc: dict) -> str:
    """benchmarks/throughput.py: pool work, pipelining, recalibration, fusion, inference."""
    rows = []
    for name, r in doc["results"].items():
        if r["kind"] == "pss train step":
            rows.append([f"`{name}` host pool work per step (full pools)",
                         f"{r['host_ms']:.2f} ms ({100 * r['host_share']:.2f}% of a step)"])
            rows.append([f"`{name}` pipelined (back-to-back dispatch, one wait at the end)",
                         f"{r['pipelined_ms']:.0f} ms (synchronised {r['median_ms']:.0f} ms)"])
        elif r["kind"] == "BN recal + eval":
            rows.append([f"`{name}`: BN recalibration ({r['recal_batches']} batches) + "
                         f"evaluation of one subnet on {r['images']:,} images",
                         f"{r['median_ms']:.0f} ms"])
        elif r["kind"] == "fusion recompute":
            share = (f" ({100 * r['share_of_epoch']:.3f}% of an epoch)"
                     if "share_of_epoch" in r else "")
            rows.append([f"`{name}`: all {r['layers']} fusion matrices",
                         f"{_ms(r['median_ms'])} ms{share}"])
        elif r["kind"] == "inference":
            rows.append([f"`{name}` (exported model, batch {r['batch']})",
                         f"{_ms(r['median_ms'])} ms"])
    return _rows(["other case", "median"], rows)


def depthwise_table(shifts: dict, conv: dict) -> str:
    """Embedded PSS-Net with depthwise as shifted multiply-adds vs grouped convolution: the
    ``pss`` cases of two throughput.py outputs (``--depthwise_impl=auto`` on CPU, ``conv``)."""
    def pick(doc, kind):
        return next(r for r in doc["results"].values() if r["kind"] == kind)

    step_s, step_c = pick(shifts, "pss train step"), pick(conv, "pss train step")
    eval_s, eval_c = pick(shifts, "BN recal + eval"), pick(conv, "BN recal + eval")
    rows = [[f"training step (batch {step_s['batch']})", f"{step_c['median_ms']:.0f} ms",
             f"{step_s['median_ms']:.0f} ms",
             f"{step_c['median_ms'] / step_s['median_ms']:.2f}x"],
            [f"BN recalibration + evaluation of one subnet ({eval_s['images']:,} images)",
             f"{eval_c['median_ms']:.0f} ms", f"{eval_s['median_ms']:.0f} ms",
             f"{eval_c['median_ms'] / eval_s['median_ms']:.2f}x"],
            [f"compile, all {step_s['resolutions']} resolutions + update",
             f"{step_c['compile_s']:.1f} s", f"{step_s['compile_s']:.1f} s",
             f"{step_c['compile_s'] / step_s['compile_s']:.2f}x"]]
    return _rows(["embedded PSS-Net supernet", "grouped conv", "shifted multiply-adds",
                  "grouped / shifted"], rows)


def depthwise_sentence(shifts: dict, conv: dict, steps: int = 420) -> str:
    """What the grouped convolution would cost an embedded run of ``steps`` training steps
    against the shifted form (``depthwise_table``'s step and compile rows)."""
    def pick(doc):
        return next(r for r in doc["results"].values() if r["kind"] == "pss train step")
    extra = (pick(conv)["median_ms"] - pick(shifts)["median_ms"]) / 1000
    saved = pick(shifts)["compile_s"] - pick(conv)["compile_s"]
    return (f"the grouped form would add about {steps} x {extra:.2f} s, "
            f"{steps * extra / 60:.0f} minutes, of steps against {saved:.1f} s less compiling")


def constant_median_error(measured: list[float]) -> float:
    """Median relative error of the constant predictor that always answers the measured
    latencies' median: the baseline a latency table must beat to be informative."""
    centre = statistics.median(measured)
    return statistics.median(abs(centre - m) / m for m in measured)


def latency_predictor_table(docs: list[dict]) -> str:
    """benchmarks/latency_predictor.py outputs (one per batch size): predicted vs measured."""
    rows = []
    for d in docs:
        measured = [r["measured_ms"] for r in d["subnets"]]
        predicted = [r["predicted_ms"] for r in d["subnets"]]
        rows.append([str(d["batch_size"]), f"{d['units']} units, {d['build_s']:.0f} s",
                     f"{min(measured):.2f} - {max(measured):.2f} ms",
                     f"{100 * d['median_abs_error']:.1f}%", f"{100 * d['worst_abs_error']:.1f}%",
                     f"{100 * constant_median_error(measured):.1f}%",
                     f"{statistics.correlation(measured, predicted):.2f}",
                     f"{100 * d['raw_median_abs_error']:.0f}% / "
                     f"{100 * d['raw_worst_abs_error']:.0f}%"])
    return _rows(["batch", "table build", "measured latency range", "median error",
                  "worst error", "median error of the constant median",
                  "correlation predicted / measured",
                  "raw sum (no calibration): median / worst"], rows)


# benchmarks/pod_efficiency.py's raw outputs at successive commits, oldest first: two-pass
# BatchNorm, one-pass BatchNorm, the gradient all-reduced once per step
POD_STAGES = ("pod_efficiency_before.json", "pod_efficiency_one_pass_bn.json",
              "pod_efficiency.json")


def pod_efficiency_table(docs: list[dict]) -> str:
    """benchmarks/pod_efficiency.py at successive commits (``POD_STAGES``): collectives of
    the compiled steps, each cell the stages' values separated by slashes."""
    def reduce(case):
        return case["total"].get("all-reduce", {"count": 0, "bytes": 0})

    last, rows = docs[-1], []
    for name in last["cases"]:
        cases = [d["cases"][name] for d in docs]
        rows.append([name, " / ".join(str(len(c["programs"])) for c in cases),
                     " / ".join(str(reduce(c)["count"]) for c in cases),
                     " / ".join(f"{reduce(c)['bytes'] / 1e6:.2f}" for c in cases),
                     " / ".join(f"{c['all_reduce_bytes_over_param_bytes']:.2f}" for c in cases),
                     " / ".join(str(c["total"].get("all-gather", {"count": 0})["count"])
                                for c in cases)])
    return _rows([f"step (batch {last['batch']}, {last['devices']} CPU devices)", "programs",
                  "all-reduces", "all-reduced MB", "all-reduced bytes / parameter bytes",
                  "all-gathers"], rows)


def pod_compile_table(doc: dict) -> str:
    """benchmarks/pod_efficiency.py: start-up compile of the embedded run, serial vs threads."""
    c = doc["compile"]
    rows = [[label, str(r["programs"]), f"{r['wall_s']:.1f} s", f"{r['sum_s']:.1f} s"]
            for label, r in (("1 thread", c["serial"]), (f"{c['threads']} threads",
                                                          c["parallel"]))]
    return _rows(["compiling every program of the embedded PSS-Net run", "programs",
                  "wall time", "sum of the programs' compile times"], rows)


def pod_restart_table(doc: dict) -> str:
    """benchmarks/pod_efficiency.py --part=restart: two processes stopped and restarted, per
    cache placement and process: host syncs in steps, compiled / loaded before and after."""
    rows = []
    for placement, runs in doc["restart"].items():
        for index, (first, again) in enumerate(zip(runs["first"], runs["restart"])):
            rows.append([placement, str(index),
                         str(first["host_syncs_in_steps"] + again["host_syncs_in_steps"]),
                         f"{first['compiled']} / {first['loaded']}",
                         f"{again['compiled']} / {again['loaded']}"])
    return _rows(["compilation cache", "process", "cross-host checks in training steps",
                  "first run: compiled / loaded", "after the restart: compiled / loaded"], rows)


def restart_machine_line(doc: dict) -> str:
    return (f"{doc['device']}, 2 processes on {doc['cpus']} CPUs, jax "
            f"{doc['provenance']['jax']}, {doc['date']}, commit {doc['provenance']['commit'][:7]}")


def pod_machine_line(doc: dict) -> str:
    """The machine line of a benchmarks/pod_efficiency.py output."""
    return (f"{doc['device']}, {doc['devices']} fake devices on {doc['cpus']} CPUs, jax "
            f"{doc['provenance']['jax']}, {doc['date']}, commit {doc['provenance']['commit'][:7]}")


INPUT_RUNS = ("input_pipeline.json", "input_pipeline_2cores.json")  # --cores=1, --cores=2


def input_pipeline_table(docs: list[dict]) -> str:
    """benchmarks/input_pipeline.py: tf.data over TFRecord against Grain over array_record,
    one row per pipeline and core count."""
    rows = [[name, r["file_format"], str(doc["cores"]), f"{r['images_per_s_per_core']:.0f}",
             f"{r['first_batch_s']:.2f}", f"{r['resume_first_batch_s']:.2f}",
             str(r["resume_records_read"]), "yes" if r["resume_exact"] else "no"]
            for doc in docs for name, r in doc["pipelines"].items()]
    step = docs[0]["pipelines"]["grain"]["resume_step"]
    return _rows(["pipeline", "prepared as", "cores", "training images/s per core",
                  "first batch at step 0 (s)", f"first batch resuming at step {step} (s)",
                  "records read for that resume", "resumed batches equal"], rows)


def input_pipeline_sentence(docs: list[dict]) -> str:
    """The reading of the input pipeline table: tf.data's throughput per core relative to
    Grain's, per core count, and the records each read to resume."""
    ratios = " and ".join(
        f"{d['pipelines']['tf_data']['images_per_s_per_core'] / d['pipelines']['grain']['images_per_s_per_core']:.2f}x"
        f" on {d['cores']} core{'s' if d['cores'] > 1 else ''}" for d in docs)
    first = docs[0]["pipelines"]
    return (f"Per core, tf.data delivers Grain's images times {ratios}; to resume "
            f"at step {first['tf_data']['resume_step']} tf.data read "
            f"{first['tf_data']['resume_records_read']} records it then dropped, Grain "
            f"{first['grain']['resume_records_read']} (its first batch and prefetch).")


def input_machine_line(doc: dict) -> str:
    """The machine line of a benchmarks/input_pipeline.py output."""
    v = doc["versions"]
    return (f"{doc['machine']}, tensorflow {v['tensorflow-cpu']}, grain {v['grain']}, pillow "
            f"{v['pillow']}, {doc['date']}, commit {doc['provenance']['commit'][:7]}")


def all_tables() -> dict[str, str]:
    """name -> table, for every table of benchmarks/RESULTS.md and docs/latency.md."""
    compile_time = load("compile_time_embedded.json")
    throughput = load("throughput_cpu.json")
    return {
        "compile_time": compile_time_table(compile_time),
        "compile_functions": compile_functions_table(compile_time),
        "compile_probe_embedded": compile_probe_table(load("compile_probe_embedded.json")),
        "compile_probe_imagenet": compile_probe_table(load("compile_probe_imagenet.json")),
        "throughput_steps": throughput_steps_table(throughput),
        "throughput_other": throughput_other_table(throughput),
        "depthwise": depthwise_table(throughput, load("throughput_cpu_conv.json")),
        "pod_efficiency": pod_efficiency_table([load(name) for name in POD_STAGES]),
        "pod_compile": pod_compile_table(load("pod_efficiency.json")),
        "pod_restart": pod_restart_table(load("pod_restart.json")),
        "input_pipeline": input_pipeline_table([load(name) for name in INPUT_RUNS]),
        "input_pipeline_reading": input_pipeline_sentence([load(name) for name in INPUT_RUNS]),
        "latency_predictor": latency_predictor_table(
            [load("latency_predictor_b1.json"), load("latency_predictor_b32.json")]),
        "latency_predictor_resnet": latency_predictor_table(
            [load("latency_predictor_resnet_b1.json"), load("latency_predictor_resnet_b32.json")]),
    }


if __name__ == "__main__":
    for name, table in all_tables().items():
        print(f"## {name}\n\n{table}\n")
