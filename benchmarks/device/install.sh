#!/usr/bin/env bash
# Install the bundles of benchmarks/device/pack_wheels.py on the GPU machine (no registry there):
# unpack every .tar.xz, pip-install into SITE the wheels whose distribution is missing or older
# (select_wheels.py), then import what the builds need and print where each package comes from (or ABSENT).
#
#   bash benchmarks/device/install.sh [BUNDLES=.devwheels] [SITE=/tmp/site] && export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
bundles=${1:-.devwheels}
site=${2:-/tmp/site}
python=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
shopt -s nullglob
archives=("$bundles"/*.tar.xz)
if [ ${#archives[@]} -eq 0 ]; then
    echo "install.sh: no .tar.xz bundle in $bundles (run benchmarks/device/pack_wheels.py first)" >&2
    exit 1
fi
# Python's tarfile (lzma) rather than tar -J: no xz binary needed there.
"$python" -c 'import sys, tarfile
for a in sys.argv[2:]:
    with tarfile.open(a) as t: t.extractall(sys.argv[1], filter="data")' "$unpacked" "${archives[@]}"
mapfile -t wanted < <("$python" "$here/select_wheels.py" "$unpacked"/*.whl)
mkdir -p "$site"
if [ ${#wanted[@]} -gt 0 ]; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "${wanted[@]}"
fi
PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" "$python" - <<'PY'
import importlib
for name in ("ray", "ray.data", "rasterio", "pydantic", "open_clip", "segmentation_models_pytorch",
             "timm", "pystac_client", "datasets", "sklearn", "torch", "numpy", "pandas", "pyarrow"):
    try:  # a call may carry only some bundles: what is absent is said, the program that needs it fails
        module = importlib.import_module(name)
    except ImportError as error:
        print(f"  {name:<28} ABSENT       {error}")
        continue
    print(f"  {name:<28} {getattr(module, '__version__', ''):<12} {module.__file__}")
PY
echo "installed ${#wanted[@]} wheels into $site"
