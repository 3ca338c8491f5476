#!/usr/bin/env bash
# Download the wheels of bench/gpu/wheels.txt, one by one and without their needs (--no-deps).
#
#   bench/gpu/fetch_wheels.sh device      -> .whl/device     cp312 manylinux x86-64 (the lent GPU)
#   bench/gpu/fetch_wheels.sh rehearsal   -> .whl/rehearsal  this machine's python (the CPU rehearsal)
#
# Env: PYTHON (default python3) runs pip; WHEEL_DIR overrides the folder. Existing wheels are
# kept (pip skips what is there). Prints the folder's size: with the working tree it must stay
# under the device call's 64 MiB.
set -euo pipefail
target=${1:-device}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
python=${PYTHON:-python3}
case "$target" in
    device)
        dest=${WHEEL_DIR:-$root/.whl/device}
        platform=(--python-version 3.12 --implementation cp)
        for tag in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 \
                   manylinux_2_24_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64 \
                   manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64; do
            platform+=(--platform "$tag")
        done ;;
    rehearsal)
        dest=${WHEEL_DIR:-$root/.whl/rehearsal}
        platform=() ;;
    *) echo "usage: $0 device|rehearsal" >&2; exit 2 ;;
esac
mkdir -p "$dest"
# sdist-only on PyPI, pure Python (nvidia_smi.py: chgnet.utils imports it at start; hostlist: mace)
SDIST_ONLY="nvidia-ml-py3 python_hostlist"
failed=()
while read -r requirement; do
    requirement=${requirement%%#*}
    requirement=$(echo "$requirement" | tr -d '[:space:]')
    [ -n "$requirement" ] || continue
    name=${requirement%%[=<>]*}
    version=${requirement##*==}
    stem=$(echo "$name" | tr 'A-Z.-' 'a-z__')
    if compgen -G "$dest/$stem-$version-*.whl" >/dev/null \
            || compgen -G "$dest/$(echo "$name" | tr '.-' '__')-$version-*.whl" >/dev/null; then
        continue  # already here
    fi
    if "$python" -m pip download --quiet --no-deps --only-binary=:all: "${platform[@]}" \
            -d "$dest" "$requirement" 2>"$dest/.last-error"; then
        continue
    fi
    # Pure-Python packages published as sdists only: build their py3-none-any wheel here.
    if [[ " $SDIST_ONLY " == *" $name "* ]] && "$python" -m pip wheel --quiet --no-deps \
            -w "$dest" "$requirement" 2>"$dest/.last-error"; then
        continue
    fi
    failed+=("$requirement")
    echo "gpu-wheels: no wheel for $requirement: $(grep -m1 ERROR "$dest/.last-error" || tail -1 "$dest/.last-error")" >&2
done <"$here/wheels.txt"
rm -f "$dest/.last-error"
if [ "$target" = device ]; then
    # The M3GNet weights travel too (../shared does not): .whl/models, found by check.sh
    models=${MODELS_SRC:-$root/../shared/models}
    if [ -f "$models/M3GNet-MP-2021.2.8-PES/model.json" ]; then
        mkdir -p "$root/.whl/models"
        cp -r "$models/M3GNet-MP-2021.2.8-PES" "$root/.whl/models/"
        echo "gpu-wheels: M3GNet weights in .whl/models ($(du -sh "$root/.whl/models" | cut -f1))"
    else
        echo "gpu-wheels: no M3GNet weights at $models: the device run will skip M3GNet" >&2
    fi
fi
count=$(find "$dest" -name '*.whl' | wc -l)
echo "gpu-wheels: $count wheels in ${dest#"$root"/}, $(du -sh "$dest" | cut -f1) ($(du -sk "$dest" | cut -f1) KiB)"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "gpu-wheels: missing: ${failed[*]}" >&2
    exit 1
fi
