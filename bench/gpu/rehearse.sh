#!/usr/bin/env bash
# The CPU rehearsal of the device check (`make gpu-check DEVICE=cpu`): a fresh venv with the CPU
# torch and what the device's python3 already has (bench/gpu/device-base.txt), the wheels of
# bench/gpu/wheels.txt fetched for this python (.whl/rehearsal), then bench/gpu/check.sh cpu in
# it: the same install under /tmp, the GPU tests run against the CPU, the benchmarks on a tiny grid.
#
# Env: PYTHON (default python3) makes the venv; TORCH (default torch==2.13.0) its torch;
# REHEARSAL_VENV (default /tmp/gpu-rehearsal-venv; removed first unless KEEP_VENV=1 and it exists);
# OUT (default runs/gpu-rehearsal); TOTAL_S (default 600).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
python=${PYTHON:-python3}
venv=${REHEARSAL_VENV:-/tmp/gpu-rehearsal-venv}
torch_req=${TORCH:-torch==2.13.0}
started=$(date +%s)
if [ "${KEEP_VENV:-0}" = 1 ] && [ -x "$venv/bin/python" ]; then
    echo "== rehearsal: reusing $venv"
else
    echo "== rehearsal: fresh venv $venv ($torch_req + bench/gpu/device-base.txt)"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    # shellcheck disable=SC2086  # TORCH may carry pip options
    "$venv/bin/python" -m pip install --quiet --no-compile $torch_req
    "$venv/bin/python" -m pip install --quiet --no-compile -c containers/constraints.txt -r bench/gpu/device-base.txt
fi
echo "   venv ready in $(($(date +%s) - started)) s"
PYTHON="$venv/bin/python" bash bench/gpu/fetch_wheels.sh rehearsal
export OUT=${OUT:-$root/runs/gpu-rehearsal} TOTAL_S=${TOTAL_S:-600} SCRATCH=${SCRATCH:-/tmp/gpu-rehearsal}
rm -rf "$OUT"
PYTHON="$venv/bin/python" bash bench/gpu/check.sh cpu
echo "== rehearsal passed in $(($(date +%s) - started)) s; $OUT/gpu-check.json"
