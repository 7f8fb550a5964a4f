"""benchmarks/gpu_check.sh runs on a CPU too: the prepared GPU check is tested here, small.

It has not run on a GPU yet (no GPU machine was lent to this project so far); this test runs the
same script with a tiny plan on the PyTorch backend and checks its summary lines.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # one tiny model, two epochs, in a subprocess: ~30 s
def test_gpu_check_script_reports_images_per_second_per_experiment(tmp_path):
    env = dict(os.environ)
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        IMAGE_SIZE="64",
        N_IMAGES="48",
        EPOCHS="2",
        JOBS="2",
        LIMIT_S="300",
        EXPERIMENTS="covid-lite resnet18-cwbce",
        OUT=str(tmp_path / "gpu_check"),
        KERAS_FREEZE_CACHE=str(tmp_path / "cache"),
        EXTRA_ARGS="--threads 1",
    )
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "torch"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for exp in ("covid-lite", "resnet18-cwbce"):
        assert f"GPU CHECK torch {exp}: " in out and "training images/s" in out, out[-4000:]
    assert "GPU CHECK torch: 2/2 experiment(s) reported" in out
    assert "[jobs] started covid-lite fold 1" in out  # the units ran concurrently


def test_a_bad_backend_is_refused():
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "tensorflow"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "Expected backend 'torch' or 'jax'" in proc.stderr
