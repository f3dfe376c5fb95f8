#!/usr/bin/env bash
# Issue 16's GPU measurements in one device call (≤ 600 s), each step under its own time limit, every log
# under OUT (a step that runs out of time still leaves what it printed):
#   1. install the wheel bundles (.devwheels: builder, rasterio, write, ray);
#   2. the synthetic stage on 20,480 tiles (stage table with the degrade step's parts, rerun identity, CPU
#      check, old-path ratio; worker processes: the config's workers: auto);
#   3. the Ray backend against the local one on 24 × 256 tiles.
# The GPU tests need the published weights (.devcarry/reference, 36 MB): they do not fit beside the ray
# bundle and tiles.npy; run them in another call with tiles4.npy (see benchmarks/SCALING.md).
# Carry .devwheels and .devcarry/tiles.npy (56 MiB with the tracked files). Usage, on the device machine:
#   bash benchmarks/device/issue16.sh "$OUT"
set -uo pipefail
out=${1:?usage: issue16.sh OUT}
source benchmarks/device/prepare.sh "$out"
tiles=.devcarry/tiles.npy
timeout 380 python3 benchmarks/bench_synthetic_stage.py --device cuda --precision fp16 --tiles-npy "$tiles" \
    --cpu-check 64 --baseline-tiles 256 --workdir /tmp/bs 2>&1 | grep -v -E "^\s*$" | tee "$out/synthetic.log"
rm -rf /tmp/bs
timeout 150 python3 benchmarks/bench_ray.py --device cuda --tiles-npy "$tiles" --images 24 \
    --tiles-per-image 256 --actors-per-gpu 2 1 2>&1 | grep -v -E "core_worker.cc:2465|^\s*$" \
    | tee "$out/bench_ray.log"
