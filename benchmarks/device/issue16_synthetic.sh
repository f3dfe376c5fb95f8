#!/usr/bin/env bash
# Issue 16's synthetic stage and the GPU tests in one device call (≤ 600 s), every log under OUT:
#   1. install the wheel bundles (.devwheels: builder, rasterio, write); unpack .devcarry/extra.tar.xz
#      (the published weights as reference/ for the GPU tests, and a py-spy binary);
#   2. the synthetic stage on 20,480 tiles (bench_synthetic_stage.py: stage table, rerun identity, CPU
#      check), with the extra bench arguments given after OUT (e.g. --baseline-tiles 256; or
#      --py-spy /tmp/extra/py-spy --py-spy-out "$OUT/pyspy": which threads hold the GIL during run 1's
#      degradation step, and every thread's stack);
#   3. the GPU tests.
# Carry .devwheels/{builder,rasterio,write}.tar.xz, .devcarry/tiles4.npy, .devcarry/extra.tar.xz (65 MB
# with the tracked files; the ray bundle does not fit beside them: issue16.sh). On the device machine:
#   bash benchmarks/device/issue16_synthetic.sh "$OUT" [bench arguments...]
set -uo pipefail
out=${1:?usage: issue16_synthetic.sh OUT [bench arguments...]}
shift
source benchmarks/device/prepare.sh "$out"
python3 -c 'import tarfile; tarfile.open(".devcarry/extra.tar.xz").extractall("/tmp/extra", filter="data")'
timeout 380 python3 benchmarks/bench_synthetic_stage.py --device cuda --precision fp16 \
    --tiles-npy .devcarry/tiles4.npy --cpu-check 64 --workdir /tmp/bs "$@" 2>&1 | grep -v -E "^\s*$" \
    | tee "$out/synthetic.log"
rm -rf /tmp/bs
SEN2NAIP_TILES_NPY=.devcarry/tiles4.npy SEN2NAIP_REFERENCE_DIR=/tmp/extra/reference timeout 150 \
    python3 -m pytest -m gpu tests/test_gpu.py tests/test_gpu_synthetic.py -o addopts="" -q \
    -p no:cacheprovider 2>&1 | tail -40 | tee "$out/gpu_tests.log"
