# Sourced by the device scripts (issue16*.sh) with OUT as $1: install the wheel bundles of .devwheels
# into /tmp/site (install.sh; its log in OUT/install.log, its last lines and exit 1 if it fails), then
# put them and the repository on PYTHONPATH, unbuffered.
export PYTHONUNBUFFERED=1
bash benchmarks/device/install.sh .devwheels /tmp/site >"$1/install.log" 2>&1 || {
    tail -5 "$1/install.log"
    exit 1
}
export PYTHONPATH=/tmp/site:$PWD
