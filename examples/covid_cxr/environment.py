"""A training process's environment, set before Keras' backend starts (imports no backend).

What a unit's numbers depend on (threads, kernels): docs/covid_cxr.md, "Scaling the protocol".
"""

import atexit
import os
import re
import sys
import threading

XLA_DETERMINISTIC = "--xla_gpu_deterministic_ops=true"
_DETERMINISM_ENV = ("TF_DETERMINISTIC_OPS", "XLA_FLAGS", "CUBLAS_WORKSPACE_CONFIG")
# TensorFlow's C++ start-up lines (absl ignores TF_CPP_MIN_LOG_LEVEL); E and F lines pass.
_NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\)|[IW]\d{4} [\d:.]+ +\d+ "
    rb"\S+:\d+\]|To enable the following instructions:)"
)

_filtering = False  # whether this process' stderr already goes through the filter


def quiet_backends(verbose: bool = False):
    """Filters the backends' C++ start-up lines out of stderr (call before importing Keras)."""
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
    """A unit process's environment: ``threads`` CPU threads, GPU memory on demand and, with
    ``deterministic``, deterministic kernels (TensorFlow, XLA, cuBLAS).

    >>> process_settings(4)["OMP_NUM_THREADS"], process_settings(4)["TF_FORCE_GPU_ALLOW_GROWTH"]
    ('4', 'true')
    """
    t = str(int(threads))
    env = dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"), t)
    env["TF_NUM_INTEROP_THREADS"] = "2"
    env.update(TF_FORCE_GPU_ALLOW_GROWTH="true", XLA_PYTHON_CLIENT_PREALLOCATE="false")
    env["TF_CPP_MIN_LOG_LEVEL"] = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "1")
    if deterministic:
        xla_flags = os.environ.get("XLA_FLAGS", "")
        if XLA_DETERMINISTIC not in xla_flags.split():
            xla_flags = f"{xla_flags} {XLA_DETERMINISTIC}".strip()
        env.update(TF_DETERMINISTIC_OPS="1", XLA_FLAGS=xla_flags, CUBLAS_WORKSPACE_CONFIG=":4096:8")
    return env


def configure_process(threads, deterministic=False):
    """Sets ``--threads`` (``None``: the backends' default) and ``--deterministic`` here: the
    `process_settings` and, on PyTorch, its thread count and deterministic algorithms."""
    env = process_settings(threads or 1, deterministic)
    if threads is None:  # only what determinism needs
        env = {k: v for k, v in env.items() if k in _DETERMINISM_ENV}
    os.environ.update(env)
    if threads is not None and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))
    if deterministic:
        import keras  # deferred: this module is imported before the backend starts

        if keras.backend.backend() == "torch":  # Keras imported torch
            torch = sys.modules["torch"]
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
