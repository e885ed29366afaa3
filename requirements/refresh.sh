#!/usr/bin/env bash
# Refresh requirements/constraints.txt: resolve pyproject.toml afresh and pin every package.
#
#   bash requirements/refresh.sh            # writes requirements/constraints.txt
#
# It makes a new virtual environment (no pip cache, so nothing stale is reused), installs the project
# with its dev extra from pyproject.toml alone (torch pinned to 2.13.0: an unpinned torch on a CPU-only
# machine pulls several GB of CUDA packages), and writes `pip freeze` of it, less msmlp itself. The dev
# extra holds every profile but [onnxruntime] (the CPU wheel, one module with onnxruntime-gpu): it is
# pinned to onnxruntime-gpu's version, whose dependencies it shares.
#
# Afterwards, before committing the new file, this must pass in a fresh clone (it installs with the
# new constraints, exactly as the README says, and runs the whole test suite):
#
#   git clone <this repo> /tmp/msmlp-check && cd /tmp/msmlp-check && python -m venv .venv \
#     && . .venv/bin/activate && bash .ci/run
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="$(mktemp -d /tmp/msmlp-refresh.XXXXXX)"
trap 'rm -rf "$VENV"' EXIT

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --no-cache-dir --quiet --upgrade pip
"$VENV/bin/python" -m pip install --no-cache-dir torch==2.13.0 -e ".[dev]"

{
    echo "# Every package of \`pip install -e \".[dev]\"\` pinned, as resolved by requirements/refresh.sh"
    echo "# ($("$VENV/bin/python" -c 'import platform; print("Python", platform.python_version(), platform.machine())'), $(date -u +%Y-%m-%d))."
    echo "# Used as: pip install -c requirements/constraints.txt -e \".[dev]\"   (do not edit by hand);"
    echo "# it pins every profile: core, [serve], [onnxruntime], [export], ... (docs/install.md)."
    {
        "$VENV/bin/python" -m pip freeze --exclude-editable
        "$VENV/bin/python" -m pip freeze --exclude-editable | sed -nE 's/^onnxruntime-gpu==/onnxruntime==/p'
    } | grep -viE '^(msmlp|-e |#)' \
        | sed -E 's/^(torch==[^+]+)\+.*/\1/' \
        | LC_ALL=C sort -f
} > requirements/constraints.txt.new
mv requirements/constraints.txt.new requirements/constraints.txt
echo "wrote requirements/constraints.txt ($(grep -vc '^#' requirements/constraints.txt) packages);"
echo "now run 'bash .ci/run' in a fresh clone (see the top of this script) before committing it."
