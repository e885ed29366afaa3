#!/usr/bin/env bash
# Make (or refresh) the virtual environment of `msmlp serve --server triton` and print its Python.
#
#   bash requirements/triton-server.sh                 # -> /path/to/.venv-triton/bin/python
#   "$(bash requirements/triton-server.sh)" -m msmlp.cli serve --server triton --onnx out/model.onnx
#
# nvidia-pytriton pins numpy<2, so it gets its own environment instead of pinning the project:
# requirements/triton-server.txt, plus this checkout of msmlp (editable, no dependencies). Where:
# $MSMLP_TRITON_VENV (default .venv-triton in the repository root); which Python: $PYTHON (default
# python3). A stamp in the environment holds the hash of the requirements, this checkout's path and
# the Python version: when it matches, nothing is installed and the script returns at once.
# Only the Python's path goes to stdout; pip's output goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${MSMLP_TRITON_VENV:-.venv-triton}"
PYTHON="${PYTHON:-python3}"
REQUIREMENTS=requirements/triton-server.txt
STAMP="$VENV/.msmlp-triton-server.sha256"

version="$("$PYTHON" -c 'import sys; print(sys.version)')"
want="$( { cat "$REQUIREMENTS"; echo "$PWD"; echo "$version"; } | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
    echo "$(cd "$VENV" && pwd)/bin/python"
    exit 0
fi

if [ -e "$VENV" ] && [ ! -f "$VENV/pyvenv.cfg" ]; then
    echo "error: $VENV exists and is not a virtual environment; remove it or set MSMLP_TRITON_VENV" >&2
    exit 2
fi
if [ ! -x "$VENV/bin/python" ] || [ "$("$VENV/bin/python" -c 'import sys; print(sys.version)' 2>/dev/null)" != "$version" ]; then
    echo "creating $VENV with $("$PYTHON" --version 2>&1)" >&2
    "$PYTHON" -m venv --clear "$VENV"
fi
rm -f "$STAMP"
echo "installing $REQUIREMENTS into $VENV (first time: a few minutes, ~1.7 GB)" >&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS" 1>&2
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e . 1>&2
"$VENV/bin/python" -c 'import numpy, pytriton, msmlp.serve.triton_server' 1>&2
echo "$want" > "$STAMP"
echo "$(cd "$VENV" && pwd)/bin/python"
