"""The environment of a process that trains, set before Keras' backend starts.

The backends read these settings once, when they start: `quiet_backends` silences their C++
start-up lines, `configure_process` sets ``--threads`` and ``--deterministic``. This module
imports no backend, so `reproduce.py` and every unit process call it first.

What a unit's numbers depend on besides its settings and seed: on a CPU, its thread count (the
kernels split their float32 sums by it); on a GPU, kernels that sum with atomics or that
autotuning picks by timing, which other units' load changes. ``--deterministic`` removes both:
deterministic kernels on every backend and, unless ``--threads`` is given, one CPU thread per
unit, so ``--jobs N`` and ``--shard K/N`` give exactly the records of ``--jobs 1``. Without it
the CPU backends are deterministic at a fixed thread count, so ``--jobs N --threads T`` still
equals ``--jobs 1 --threads T``.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

# XLA's flag for deterministic GPU kernels (JAX; TensorFlow has TF_DETERMINISTIC_OPS).
XLA_DETERMINISTIC = "--xla_gpu_deterministic_ops=true"
_DETERMINISM_ENV = ("TF_DETERMINISTIC_OPS", "XLA_FLAGS", "CUBLAS_WORKSPACE_CONFIG")
# TensorFlow's C++ start-up lines (absl's "before InitializeLog" warning, oneDNN,
# cpu_feature_guard and its continuation line, tf.data's "Memory patch applied"): absl writes
# them to the process' stderr whatever TF_CPP_MIN_LOG_LEVEL says (TensorFlow 2.21), so they are
# filtered out of it. Errors (E, F lines) and everything else pass.
_NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\)|[IW]\d{4} [\d:.]+ +\d+ "
    rb"\S+:\d+\]|To enable the following instructions:)"
)

_filtering = False  # whether this process' stderr already goes through the filter


def quiet_backends(verbose: bool = False):
    """Filters the backends' C++ start-up and info lines out of this process' stderr.

    Call it once, in the main process, before Keras is imported. With ``verbose`` nothing
    changes. Python's own output (warnings, tracebacks) passes through the filter unchanged;
    the original stderr is restored at exit, after the filter has written everything.
    """
    global _filtering
    if verbose or _filtering:
        return
    _filtering = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    read_fd, write_fd = os.pipe()
    original = os.dup(2)
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def pump():
        with os.fdopen(read_fd, "rb") as pipe:
            for line in pipe:
                if not _NOISE.match(line):
                    os.write(original, line)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()

    def restore():
        sys.stderr.flush()
        os.dup2(original, 2)  # the pipe's last write end closes: the filter drains and ends
        thread.join(timeout=10)

    atexit.register(restore)


def process_settings(threads, deterministic=False):
    """Environment of a unit process: ``threads`` CPU threads, GPU memory on demand and, with
    ``deterministic``, deterministic kernels (TensorFlow's op determinism, XLA's deterministic
    GPU ops for JAX, cuBLAS' fixed workspace for PyTorch).

    Set before Keras' backend starts (the backends read it once).

    Example:
        >>> env = process_settings(4)
        >>> env["OMP_NUM_THREADS"], env["TF_FORCE_GPU_ALLOW_GROWTH"]
        ('4', 'true')
        >>> process_settings(1, deterministic=True)["TF_DETERMINISTIC_OPS"]
        '1'
    """
    threads = str(int(threads))
    env = {
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "TF_NUM_INTRAOP_THREADS": threads,
        "TF_NUM_INTEROP_THREADS": "2",
        "TF_FORCE_GPU_ALLOW_GROWTH": "true",  # TensorFlow: allocate GPU memory on demand
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",  # JAX: no 75% preallocation per process
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1"),
    }
    if deterministic:
        xla_flags = os.environ.get("XLA_FLAGS", "")
        if XLA_DETERMINISTIC not in xla_flags.split():
            xla_flags = f"{xla_flags} {XLA_DETERMINISTIC}".strip()
        env.update(
            TF_DETERMINISTIC_OPS="1",
            XLA_FLAGS=xla_flags,  # also turns XLA's timing-based autotuning off
            CUBLAS_WORKSPACE_CONFIG=":4096:8",  # required by torch's deterministic cuBLAS
        )
    return env


def configure_process(threads, deterministic=False):
    """``--threads`` and ``--deterministic`` in this process, before Keras' backend starts.

    Sets `process_settings` (read by the backends when they start) and, for PyTorch, which is
    configured by calls: its thread count and, with ``deterministic``, its deterministic
    algorithms (``warn_only``: an operation without a deterministic kernel warns rather than
    stops the unit) without cuDNN's timing-based algorithm search.

    Args:
        threads: CPU threads, or None to leave the backends' own default.
        deterministic: whether to ask for deterministic kernels.
    """
    env = process_settings(threads or 1, deterministic)
    if threads is None:  # only what determinism needs
        env = {k: v for k, v in env.items() if k in _DETERMINISM_ENV}
    os.environ.update(env)
    if threads is not None and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))
    if deterministic:
        import keras  # deferred: this module is imported before the backend starts

        if keras.backend.backend() == "torch":
            import torch

            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
