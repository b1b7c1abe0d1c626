#!/usr/bin/env bash
# Writes every raw output behind the CPU tables of benchmarks/RESULTS.md and docs/latency.md
# (benchmarks/results/*.json). Run on an otherwise idle machine, from the repository root:
#
#     bash benchmarks/cpu_results.sh            # about 20 minutes on 2 CPU cores
#
# then `python benchmarks/result_tables.py` prints the tables to paste; tests/test_docs.py fails
# until the documents hold exactly those tables.
set -euo pipefail
OUT=benchmarks/results
PYTHON=${PYTHON:-python}
TABLES=runs/benchmark_latency_tables  # relative: the outputs name no path of this machine
rm -rf "$TABLES" && mkdir -p "$TABLES"

$PYTHON benchmarks/compile_time.py --config=configs/pssnet/embedded.py \
    --out=$OUT/compile_time_embedded.json
$PYTHON benchmarks/compile_probe.py --config=configs/pssnet/embedded.py --batch=128 --steps=5 \
    --variants=f32,f32_plain,bf16,bf16_plain,f32_threads --out=$OUT/compile_probe_embedded.json
$PYTHON benchmarks/compile_probe.py --config=configs/pssnet/mobilenet_v2_imagenet.py \
    --batch=16 --depthwise_impl=conv --steps=3 --variants=f32,f32_plain,bf16,bf16_plain \
    --out=$OUT/compile_probe_imagenet.json
$PYTHON benchmarks/throughput.py --quick --out=$OUT/throughput_cpu.json
$PYTHON benchmarks/throughput.py --quick --cases=pss --no_torch --depthwise_impl=conv \
    --out=$OUT/throughput_cpu_conv.json
# a fresh latency table per batch size, so that the build time is measured too
$PYTHON benchmarks/latency_predictor.py --table=$TABLES/b1.json \
    --out=$OUT/latency_predictor_b1.json
$PYTHON benchmarks/latency_predictor.py --batch_size=32 --table=$TABLES/b32.json \
    --out=$OUT/latency_predictor_b32.json
# the same for the ResNet-20 supernet, whose units are its layers
for B in 1 32; do
  $PYTHON benchmarks/latency_predictor.py --config=configs/pssnet/embedded_resnet.py \
      --batch_size=$B --table=$TABLES/resnet_b$B.json --out=$OUT/latency_predictor_resnet_b$B.json
done
$PYTHON benchmarks/pod_efficiency.py --out=$OUT/pod_efficiency.json
$PYTHON benchmarks/pod_efficiency.py --part=restart --out=$OUT/pod_restart.json
$PYTHON benchmarks/input_pipeline.py --out=$OUT/input_pipeline.json
$PYTHON benchmarks/input_pipeline.py --cores=2 --out=$OUT/input_pipeline_2cores.json
