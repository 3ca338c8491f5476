#!/usr/bin/env bash
# End-to-end checks of a built image with real Apptainer, run as an ordinary user from a working
# directory outside the repository (make test-image runs it through containers/test/apptainer-env.sh):
#   containers/test/test-image.sh DRIVER.sif EXPECTED_BAD_RECIPE_STDERR
# EXPECTED_BAD_RECIPE_STDERR: what the host's `driver run bad.yaml` printed (make test-image makes
# it with the dev venv), to compare with the image's. Prints PASS/FAIL per check, then
# "N passed, N failed"; exits 1 if any failed.
#   containers/test/test-image.sh --bad-recipe DIR   writes DIR/bad.yaml (+ its structure) for the host
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
bad_recipe_into() {  # the quick-start recipe with a negative temperature, and its structure
    mkdir -p "$1/structures"
    cp "$repo/recipes/structures/Si_diamond.cif" "$1/structures/"
    sed 's/^  temperature_K: 1000/  temperature_K: -5/' "$repo/recipes/quickstart.yaml" >"$1/bad.yaml"
}
if [ "${1:-}" = --bad-recipe ]; then bad_recipe_into "${2:?}"; exit 0; fi
sif=$(realpath "${1:?usage: $0 DRIVER.sif EXPECTED_STDERR}")
expected_err=$(realpath "${2:?usage: $0 DRIVER.sif EXPECTED_STDERR}")
passed=0 failed=0 t0=$SECONDS
pass() { echo "PASS  $*"; passed=$((passed + 1)); }
fail() { echo "FAIL  $*"; failed=$((failed + 1)); }
check() {  # check NAME COMMAND...: PASS when COMMAND succeeds; its output is kept in $log
    local name=$1 start=$SECONDS; shift
    log=$work/logs/$(echo "$name" | tr -c 'A-Za-z0-9\n' '_').log
    if "$@" >"$log" 2>&1; then pass "$name ($((SECONDS - start)) s)"; else fail "$name ($((SECONDS - start)) s); last lines of $log:"; tail -15 "$log" | sed 's/^/      /'; fi
}

work=$(mktemp -d "$HOME/image-test.XXXXXX")
mkdir -p "$work/logs" "$work/recipes/structures"
cd "$work" || exit 1
case $PWD/ in "$repo"/*) echo "FAIL  working directory $PWD is inside the repository"; exit 1;; esac
echo "image $sif ($(du -m "$sif" | cut -f1) MB), working directory $work, user $(id -un) (uid $(id -u))"
sif_sum=$(sha256sum "$sif" | cut -d' ' -f1)

# The quick-start recipe, shortened (60 steps, a checkpoint every 10), in a folder with its
# structure that the container sees only through --bind, at /recipes.
cp "$repo/recipes/structures/Si_diamond.cif" recipes/structures/
sed -e 's/^  steps: 200/  steps: 60/' -e 's/^  write_every: 10/  write_every: 10\n  checkpoint_every: 10\n  flush_every: 1/' \
    "$repo/recipes/quickstart.yaml" >recipes/recipe.yaml
grep -q '^  steps: 60' recipes/recipe.yaml && grep -q 'checkpoint_every: 10' recipes/recipe.yaml \
    || { echo "FAIL  could not shorten recipes/quickstart.yaml"; exit 1; }
B=(--bind "$work/recipes:/recipes")
jobs=(raw-T1000K corrected-T1000K)

# compare A_DIR B_DIR ATOL: final positions of every job agree within ATOL (Angstrom), same frames
compare() {
    apptainer exec "$sif" python - "$@" <<'PY'
import sys, h5py, numpy as np
a, b, atol = sys.argv[1], sys.argv[2], float(sys.argv[3])
for job in ("raw-T1000K", "corrected-T1000K"):
    with h5py.File(f"{a}/{job}.h5", "r") as fa, h5py.File(f"{b}/{job}.h5", "r") as fb:
        pa, pb = fa["particles/all/position/value"][:], fb["particles/all/position/value"][:]
        assert pa.shape == pb.shape, (job, pa.shape, pb.shape)
        diff = float(np.abs(pa - pb).max())
        print(f"{job}: {pa.shape[0]} frames, max |dx| = {diff:.3g} A (tolerance {atol:g})")
        assert diff <= atol, job
PY
}
complete() {  # complete DIR: H5MD files completed with 7 frames, summary.json complete
    apptainer exec "$sif" python - "$1" <<'PY'
import json, sys, h5py
out = sys.argv[1]
summary = json.load(open(f"{out}/summary.json"))
assert [(j["job"], j["status"]) for j in summary["jobs"]] == [("raw-T1000K", "completed"), ("corrected-T1000K", "completed")], summary["jobs"]
for job in ("raw-T1000K", "corrected-T1000K"):
    with h5py.File(f"{out}/{job}.h5", "r") as f:
        assert f.attrs["status"] == "completed", (job, f.attrs["status"])
        assert f["h5md"].attrs["version"].tolist() == [1, 1]
        n = f["particles/all/position/value"].shape[0]
        assert n == 7, (job, n)   # 60 steps, every 10th, and frame 0
        print(job, "completed,", n, "frames")
PY
}

run_serial() {
    apptainer run "${B[@]}" "$sif" /recipes/recipe.yaml --out serial || return 1
    complete serial || return 1
    # owned by the user, nothing else: files written through the bind/cwd, not as root
    [ -z "$(find serial -not -user "$(id -u)")" ] || { find serial -not -user "$(id -u)" -ls; return 1; }
    ! apptainer exec "$sif" touch /opt/umlip-driver/written-by-test 2>/dev/null || { echo "image is writable"; return 1; }
}
check "apptainer run driver.sif /recipes/recipe.yaml --out DIR (--bind recipe folder): H5MD + summary.json complete, owned by $(id -un)" run_serial

check "apptainer test driver.sif" apptainer test "$sif"

help_and_labels() {
    local h i
    h=$(apptainer run-help "$sif") && i=$(apptainer inspect "$sif") || return 1
    echo "$h"; echo "$i"
    grep -q "umlip-driver 0.1.0" <<<"$h" && grep -q "apptainer run --nv driver.sif recipe.yaml" <<<"$h" \
        && grep -q "org.opencontainers.image.version: 0.1.0" <<<"$i" \
        && grep -q "org.opencontainers.image.title: umlip-driver" <<<"$i" \
        && grep -q "umlip-driver.models: chgnet" <<<"$i"
}
check "apptainer run-help / inspect: usage and labels" help_and_labels

run_mpi() {
    apptainer exec "${B[@]}" "$sif" mpiexec -launcher fork -n 2 driver run /recipes/recipe.yaml --out mpi || return 1
    complete mpi && ls mpi/logs/rank-0.log mpi/logs/rank-1.log && compare serial mpi 1e-6
}
check "apptainer exec driver.sif mpiexec -launcher fork -n 2 driver run: same trajectories as serial (1e-6 A)" run_mpi

sigterm_resume() {
    apptainer run "${B[@]}" "$sif" /recipes/recipe.yaml --out term &
    local pid=$! rc i
    # wait until the first job is past its first checkpoint (its progress line goes to $log)
    for i in $(seq 1200); do
        grep -q "raw-T1000K: step [1-5]0/60" "$log" && break
        sleep 0.5
    done
    sleep 1
    kill -TERM "$pid"
    wait "$pid"; rc=$?
    echo "exit code after SIGTERM: $rc"
    [ "$rc" = 130 ] || return 1
    apptainer exec "$sif" python - <<'PY' || return 1
import h5py
import os
states = {}
for job in ("raw-T1000K", "corrected-T1000K"):
    if os.path.exists(f"term/{job}.h5"):
        with h5py.File(f"term/{job}.h5", "r") as f:
            states[job] = (f.attrs["status"], "checkpoint" in f)
print(states)
assert ("interrupted", True) in states.values()
PY
    apptainer run "${B[@]}" "$sif" /recipes/recipe.yaml --out term --resume || return 1
    complete term && compare serial term 1e-10
}
check "SIGTERM to apptainer run mid-run: exit 130 + checkpoint; apptainer run --resume = uninterrupted (1e-10 A)" sigterm_resume

bad_recipe() {
    bad_recipe_into "$work"
    apptainer run "$sif" bad.yaml >bad.out 2>bad.err; local rc=$?
    echo "rc=$rc"; echo "image:"; cat bad.err; echo "host:"; cat "$expected_err"
    # Apptainer's own INFO lines (e.g. "fuse2fs not found") are not the driver's: compare the rest
    grep -v '^INFO: ' bad.err >bad.driver.err
    [ "$rc" = 2 ] && [ "$(wc -l <bad.driver.err)" = 1 ] && cmp -s bad.driver.err "$expected_err"
}
check "bad recipe: exit 2 and the host's one-line error" bad_recipe

check "nothing written into the image (sha256 unchanged)" test "$(sha256sum "$sif" | cut -d' ' -f1)" = "$sif_sum"

echo "$passed passed, $failed failed in $((SECONDS - t0)) s"
[ "$failed" = 0 ] && rm -rf "$work"
[ "$failed" = 0 ]
