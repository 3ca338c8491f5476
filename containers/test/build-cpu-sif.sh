#!/usr/bin/env bash
# Build the CPU image here with real Apptainer (containers/test/apptainer-env.sh), as an ordinary
# user with --fakeroot:  containers/test/build-cpu-sif.sh OUT.sif [TORCH_WHEEL]
#
# The definition is containers/driver.def's body on a Debian bookworm base (containers/cpu-def.sh).
# Build-time test plumbing, bound in at /mnt and not kept in the image: the CPU torch wheel pip
# finds on this machine (TORCH_WHEEL, default: torch-2.13.0*cpu* in pip's find-links) and this
# machine's CA bundle (pip's `cert` setting, for the registry behind a TLS-inspecting proxy).
# (--build-arg values must not hold commas: Apptainer splits them there.)
# Weights: none baked in (FETCH_MODELS=0; CHGNet's ship in its wheel). Network: Debian's archive
# and the package registries only.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=$(realpath -m "${1:?usage: $0 OUT.sif [TORCH_WHEEL]}")
wheel=${2:-}
if [ -z "$wheel" ]; then
    links=$(pip config get global.find-links 2>/dev/null || echo "${PIP_FIND_LINKS:-/opt/wheels}")
    wheel=$(ls "$links"/torch-2.13.0*cpu*-cp311-*.whl 2>/dev/null | head -1 || true)
fi
[ -f "$wheel" ] || { echo "build-cpu-sif: no CPU torch wheel (give one: $0 OUT.sif torch-...whl)" >&2; exit 2; }
cert=$(pip config list 2>/dev/null | sed -n "s/^global\.cert='\(.*\)'$/\1/p" | head -1 || true)
cert=${cert:-${PIP_CERT:-}}

# Cache: an image built here from identical inputs (the files %files copies, the definition, the
# wheel) is reused from $UMLIP_APPTAINER_CACHE/sif; UMLIP_SIF_CACHE=0 always builds.
cache=${UMLIP_APPTAINER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/umlip-driver/apptainer}/sif
key=$( (cd "$repo" && { git ls-files -z -- pyproject.toml README.md driver containers recipes 2>/dev/null \
        || find pyproject.toml README.md driver containers recipes -type f -not -path '*/__pycache__/*' -print0; } \
        | sort -z | xargs -0 sha256sum; "$repo/containers/cpu-def.sh"; basename "$wheel"; echo "$cert") | sha256sum | cut -c1-16)
if [ "${UMLIP_SIF_CACHE:-1}" != 0 ] && [ -s "$cache/$key.sif" ]; then
    mkdir -p "$(dirname "$out")"
    cp "$cache/$key.sif" "$out"
    echo "build-cpu-sif: $out from the cache ($cache/$key.sif: built here from identical inputs)"
    exit 0
fi

stage=$repo/build/image-input          # git-ignored; bound to /mnt during the build only
rm -rf "$stage"
mkdir -p "$stage"
ln "$wheel" "$stage/" 2>/dev/null || cp "$wheel" "$stage/"
cert_arg=()
if [ -n "$cert" ] && [ -f "$cert" ]; then
    cp "$cert" "$stage/ca-bundle.crt"
    cert_arg=(--build-arg PIP_CERT=/mnt/ca-bundle.crt)
fi
chmod -R a+rX "$stage"
"$repo/containers/cpu-def.sh" >"$repo/build/driver-cpu.def"

home=$("$repo/containers/test/apptainer-env.sh" --print-home)
start=$SECONDS
cd "$repo"
"$repo/containers/test/apptainer-env.sh" --bind "$repo" "
    set -e
    cd '$repo'
    apptainer build --force --fakeroot --bind '$stage:/mnt' \
        --build-arg TORCH='/mnt/$(basename "$wheel")' \
        --build-arg FETCH_MODELS=0 \
        --build-arg BASE_IMAGE='debian:bookworm via debootstrap (CPU)' \
        ${cert_arg[*]} \
        \"\$HOME/driver-cpu.sif\" build/driver-cpu.def"
mkdir -p "$(dirname "$out")"
cp "$home/driver-cpu.sif" "$out"
rm -f "$home/driver-cpu.sif"
mkdir -p "$cache" && rm -f "$cache"/*.sif && cp "$out" "$cache/$key.sif"
rm -rf "$stage"
echo "build-cpu-sif: $out ($(du -m "$out" | cut -f1) MB) built in $((SECONDS - start)) s"
