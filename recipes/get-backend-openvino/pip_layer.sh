#!/usr/bin/env bash
# A layer over the venv of $MLRUN_PYTHON: pinned packages (no resolver run) installed into ./site, which the
# recipe's dependents put first on PYTHONPATH (get-backend-openvino, get-nncf).
#   pip_layer.sh CHECK OUT PACKAGE...   CHECK: Python run with the layer that prints its version into OUT
set -euo pipefail
check="$1"; out="$2"; shift 2
# The venv has no pip: the interpreter it was made from installs, for the venv's Python (same ABI).
base="$("$MLRUN_PYTHON" -c 'import sys; print(sys._base_executable)')"
"$base" -m pip --python "$MLRUN_PYTHON" install --no-input --disable-pip-version-check --no-deps --target site "$@"
rm -rf site/bin
PYTHONPATH="$PWD/site" "$MLRUN_PYTHON" -c "$check" > "$out"
"$base" -m pip list --path site --format=freeze --disable-pip-version-check > packages.txt
