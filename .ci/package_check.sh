#!/usr/bin/env bash
# Packaging check, run by .ci/run before the tests: what a new user gets from `pip install`.
#  1. Builds the sdist and the wheel and checks them with twine; both carry LICENSE and the
#     wheel carries py.typed.
#  2. Installs the built wheel with the jax extra only (no test or examples extras) in a fresh
#     virtual environment and runs README.md's quickstart and every docs code block there.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/tools"
py=$work/tools/bin/python
"$py" -m pip install -q "build>=1" "twine>=6.1"
rm -rf dist
"$py" -m build -q . >/dev/null
"$py" -m twine check --strict dist/*
sdist=$(ls dist/*.tar.gz)
wheel=$(ls dist/*.whl)
tar tzf "$sdist" | grep -q '/LICENSE$' || { echo "sdist lacks LICENSE" >&2; exit 1; }
"$py" -m zipfile -l "$wheel" | grep -q 'dist-info/licenses/LICENSE' || { echo "wheel lacks LICENSE" >&2; exit 1; }
"$py" -m zipfile -l "$wheel" | grep -q 'keras_freeze/py.typed' || { echo "wheel lacks py.typed" >&2; exit 1; }
echo "built and checked: $sdist $wheel (LICENSE in both, py.typed in the wheel)"

venv=$work/venv
python3 -m venv "$venv"
"$venv/bin/pip" install -q "${wheel}[jax]"
for banned in pytest sklearn matplotlib tensorflow torch; do
  if "$venv/bin/python" -c "import $banned" 2>/dev/null; then
    echo "the minimal install unexpectedly provides $banned" >&2; exit 1
  fi
done
KERAS_BACKEND=jax "$venv/bin/python" .ci/run_doc_blocks.py
echo "minimal install (wheel + jax extra): README quickstart and docs code blocks ran"
