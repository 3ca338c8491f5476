#!/usr/bin/env bash
# The one-shot device check: install the carried wheels under /tmp, run the GPU tests, then the
# GPU benchmarks; one JSON and one log under $OUT, written as it goes.
#
#   bash bench/gpu/check.sh gpu   on the lent GPU machine (its python3: torch 2.11 + CUDA);
#                                 the device call carries .whl/device and .whl/models
#   bash bench/gpu/check.sh cpu   the rehearsal (bench/gpu/rehearse.sh runs it in a fresh venv):
#                                 same steps on the CPU, tiny size grid
#
# Env: OUT (default runs/gpu-check; the device sets it), PYTHON (default python3), WHEELS (default
# .whl/device, or .whl/rehearsal for cpu), TOTAL_S (everything ends inside it: 420 s on the GPU, 600 s in the rehearsal),
# TESTS_S (the tests' own limit: 120 s on the GPU, 240 s in the rehearsal), TESTS=0 (skip them),
# SECTIONS (default all: batched replicas overhead ladder; e.g. SECTIONS=ladder TESTS=0 for a
# second call that spends what is left of the lease on the size ladders), MACE_SIZE (the MACE benchmarked: medium on the GPU;
# small in the rehearsal, where the medium one takes seconds per 8-atom call on 2 cores).
# Files under $OUT: gpu-check.json (bench/gpu/gpu_bench.py), gpu-check.log (everything printed),
# gpu-tests.xml (pytest's JUnit report), mace-build.log.
set -uo pipefail
mode=${1:-gpu}
case "$mode" in gpu | cpu) ;; *) echo "usage: $0 gpu|cpu" >&2; exit 2 ;; esac
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
OUT=${OUT:-$root/runs/gpu-check}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu-check.log") 2>&1
python=${PYTHON:-python3}
total_s=${TOTAL_S:-$([ "$mode" = gpu ] && echo 420 || echo 600)}
sections=${SECTIONS:-batched replicas overhead ladder}
tests_s=${TESTS_S:-$([ "$mode" = gpu ] && echo 120 || echo 240)}
started=$(date +%s)
elapsed() { echo $(($(date +%s) - started)); }
if [ "$mode" = gpu ]; then wheels=${WHEELS:-$root/.whl/device}; grid=gpu; device=cuda; mace_size=${MACE_SIZE:-medium}
else wheels=${WHEELS:-$root/.whl/rehearsal}; grid=tiny; device=cpu; mace_size=${MACE_SIZE:-small}; fi
scratch=${SCRATCH:-/tmp/gpu-check}
site=$scratch/site
mkdir -p "$scratch"
echo "== gpu-check $mode: $(date -u +%FT%TZ), $($python --version 2>&1) at $(command -v "$python"), OUT=$OUT"

n_wheels=$(find "$wheels" -name '*.whl' 2>/dev/null | wc -l)
echo "== install: $n_wheels wheels from ${wheels#"$root"/} into $site"
if [ "$n_wheels" -eq 0 ]; then  # else pip's "*.whl is not a valid wheel filename"
    echo "gpu-check: no wheels in ${wheels#"$root"/} (make gpu-wheels fetches them; the device call carries that folder)" >&2
    exit 3
fi
rm -rf "$site"
if ! "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "$wheels"/*.whl; then
    echo "gpu-check: wheel install failed" >&2
    exit 3
fi
export PYTHONPATH="$site:$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 DRIVER_OFFLINE=1 MPLBACKEND=Agg
# M3GNet weights: carried in .whl/models (fetch_wheels.sh copies them), else ../shared/models
for dir in "$root/.whl/models" "$root/shared/models" "$root/../shared/models"; do
    if [ -f "$dir/M3GNet-MP-2021.2.8-PES/model.json" ]; then export DRIVER_MODELS_DIR=$dir; break; fi
done
echo "   M3GNet weights: ${DRIVER_MODELS_DIR:-not found (M3GNet is skipped)}; $(elapsed) s"
if [ "$mode" = gpu ]; then
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader || true
else
    export UMLIP_GPU_TESTS_ON_CPU=1  # the GPU tests run against the CPU: the path, not the numbers
fi
"$python" -c "import torch; print('   torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"

echo "== building the $mace_size MACE beside the tests (log: mace-build.log)"
mace=$scratch/mace-$mace_size.model
rm -f "$mace" "$mace.part"
"$python" bench/gpu/build_mace.py "$mace" --size "$mace_size" >"$OUT/mace-build.log" 2>&1 &
build_pid=$!

tests_rc=0
if [ "${TESTS:-1}" = 0 ]; then echo "== GPU tests skipped (TESTS=0)"; else
echo "== GPU tests (limit ${tests_s} s)"
gpu_test_files=(tests/test_gpu.py tests/models/test_models.py)  # every file holding a gpu-marked test
for file in "${gpu_test_files[@]}"; do
    [ -f "$file" ] || { echo "gpu-check: $file is gone; update gpu_test_files in bench/gpu/check.sh" >&2; exit 3; }
done
timeout -k 10 "$tests_s" "$python" -m pytest -m gpu -v --tb=short -p no:cacheprovider -o addopts="" \
    -W ignore::DeprecationWarning -W ignore::UserWarning -W ignore::FutureWarning \
    --junitxml="$OUT/gpu-tests.xml" "${gpu_test_files[@]}"
tests_rc=$?
echo "   tests exit code $tests_rc; $(elapsed) s"
fi

budget=$((total_s - $(elapsed) - 25))
echo "== benchmarks (budget ${budget} s)"
timeout -k 10 $((budget + 20)) "$python" bench/gpu/gpu_bench.py --out "$OUT/gpu-check.json" --grid "$grid" \
    --device "$device" --budget-s "$budget" --mace-model "$mace" --sections $sections
bench_rc=$?
kill "$build_pid" 2>/dev/null
wait "$build_pid" 2>/dev/null
echo "== gpu-check $mode done in $(elapsed) s: tests exit $tests_rc, bench exit $bench_rc"
if [ "$mode" = cpu ]; then  # the rehearsal: every section must have run, the tests must have passed
    "$python" bench/gpu/report.py "$OUT/gpu-check.json" --strict --junit "$OUT/gpu-tests.xml"
    report_rc=$?
else
    "$python" bench/gpu/report.py "$OUT/gpu-check.json"
    report_rc=0
fi
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ] && [ "$report_rc" -eq 0 ]
