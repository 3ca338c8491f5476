#!/usr/bin/env bash
# The one install step, used by the Makefile (`make setup`, the dev venv) and by the image's %post.
#
#   containers/install.sh VENV TORCH PACKAGE...
#
#   VENV     virtual environment to create (if absent) and install into, e.g. .venv or /opt/venv
#   TORCH    the torch requirement, installed first so that pip does not pick a build for us;
#            split on spaces, so it may carry pip options: "torch==2.13.0 --index-url <CUDA index>"
#   PACKAGE  what to install next, as pip takes it: -e ".[test]" (the Makefile) or /opt/umlip-driver
#            (the image: a regular, non-editable install of the copied source tree)
#
# Environment: PYTHON (default python3) creates the venv; VENV_OPTS adds venv options (the image
# uses --system-site-packages to reuse the base image's CUDA torch).
# Every install is constrained by containers/constraints.txt, the pinned versions this project is
# tested with; pyproject.toml keeps the ranges it supports.
set -euo pipefail

if [ "$#" -lt 3 ]; then
    echo "usage: $0 VENV TORCH PACKAGE..." >&2
    exit 2
fi
venv=$1
torch=$2
shift 2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
constraints=$here/constraints.txt
python=${PYTHON:-python3}

# shellcheck disable=SC2086  # VENV_OPTS and TORCH are word lists on purpose
"$python" -m venv ${VENV_OPTS:-} "$venv"
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install --quiet --upgrade pip
# shellcheck disable=SC2086
"${pip[@]}" install --quiet $torch
"${pip[@]}" install --quiet -c "$constraints" "$@"
