#!/usr/bin/env bash
# Issue 16, item 3 in one device call (≤ 600 s): the Ray backend against the local one on the GPU, every
# log under OUT:
#   1. install the wheel bundles (.devwheels: builder, rasterio, write, ray);
#   2. bench_ray.py --device cuda on a mosaic of .devcarry/tiles4.npy, with the bench arguments given after
#      OUT (e.g. --images 80 --size 10240 --clusters 50 --batch-size 256 --precision fp16 --actors-per-gpu 1 2).
# Carry .devwheels/{builder,rasterio,write,ray}.tar.xz and .devcarry/tiles4.npy (~48 MB with the tracked
# files). On the device machine:
#   bash benchmarks/device/issue16_ray.sh "$OUT" [bench arguments...]
set -uo pipefail
out=${1:?usage: issue16_ray.sh OUT [bench arguments...]}
shift
source benchmarks/device/prepare.sh "$out"
timeout 470 python3 benchmarks/bench_ray.py --device cuda --tiles-npy .devcarry/tiles4.npy "$@" 2>&1 \
    | grep -v -E "core_worker.cc:2465|^\s*$" | tee "$out/bench_ray.log"
