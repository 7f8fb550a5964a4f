"""The plan of a run and how its units run: in turn, in parallel processes, or one shard of it.

A *unit* is one (experiment, fold). `plan` lists them in a fixed order (folds outer,
experiments in Table 1's order inner) and keeps those of ``--shard K/N``: unit ``i`` (0-based)
belongs to shard ``i % N + 1``, so N machines (a Slurm job array) split any plan without
talking to each other, and `reproduce.py report` merges their output folders afterwards.

`run_serial` runs the units one after another in this process. `run_parallel` (``--jobs N``)
runs up to N at once, each in a fresh ``spawn``-ed process with ``--threads`` CPU threads
(TensorFlow, PyTorch and the OpenMP pools; default: the CPUs divided by N), GPU memory
allocated on demand (TensorFlow's memory growth, JAX without preallocation) and its own log in
``<out>/logs/``; their progress lines are echoed as they come. A unit that fails is reported
and the others go on; Ctrl-C stops every process, and a rerun of the same command resumes from
the records already written.

What a unit's numbers depend on besides its settings and seed: on a CPU, its thread count (the
kernels split their float32 sums by it); on a GPU, kernels that sum with atomics or that
autotuning picks by timing, which other units' load changes. ``--deterministic``
(`configure_process`) removes both: deterministic kernels on every backend and, unless
``--threads`` is given, one CPU thread per unit, so ``--jobs N`` and ``--shard K/N`` give exactly
the records of ``--jobs 1``. Without it the CPU backends are deterministic at a fixed thread
count, so ``--jobs N --threads T`` still equals ``--jobs 1 --threads T``.

Example:
    >>> plan(["freeze", "finetune"], [1, 2])
    [('freeze', 1), ('finetune', 1), ('freeze', 2), ('finetune', 2)]
    >>> plan(["freeze", "finetune"], [1, 2], shard=(2, 3))
    [('finetune', 1)]
    >>> parse_shard("2/3")
    (2, 3)
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from pathlib import Path

import protocol

# Seconds between two looks at the running processes.
POLL_S = 0.5

# XLA's flag for deterministic GPU kernels (JAX; TensorFlow has TF_DETERMINISTIC_OPS).
XLA_DETERMINISTIC = "--xla_gpu_deterministic_ops=true"
_DETERMINISM_ENV = ("TF_DETERMINISTIC_OPS", "XLA_FLAGS", "CUBLAS_WORKSPACE_CONFIG")


def log(msg=""):
    print(msg, flush=True)


def parse_shard(text):
    """``"K/N"`` -> ``(K, N)`` with ``1 <= K <= N``.

    Raises:
        ValueError: naming the value and the expected form.
    """
    try:
        k, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        k = n = 0
    if not 1 <= k <= n:
        raise ValueError(
            "Expected --shard K/N with 1 <= K <= N (e.g. 2/4 for the second of four machines). "
            f"Received: shard={text!r}"
        )
    return k, n


def plan(experiments, folds, shard=None):
    """The (experiment, fold) units of a run, in order; only shard ``(K, N)``'s if given."""
    units = [(e, k) for k in folds for e in experiments]
    if shard is None:
        return units
    k, n = shard
    return [u for i, u in enumerate(units) if i % n == k - 1]


def run_serial(ctx, todo, on_done):
    """Runs the units in this process, in order; a failure stops the run.

    Returns:
        ``(done, failed)``: the number of units run and the failed ones (always empty).
    """
    import experiment

    for i, (exp, fold) in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] {exp} fold {fold}")
        experiment.run_one(ctx, exp, fold)
        on_done()
    return len(todo), []


def default_threads(jobs, cpus=None):
    """CPU threads of each of ``jobs`` concurrent units: the CPUs shared out (at least 1)."""
    return max(1, (cpus or os.cpu_count() or 1) // jobs)


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
        import keras

        if keras.backend.backend() == "torch":
            import torch

            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False


def _unit_process(target, args, dataset, exp, fold, log_path):
    """Entry point of a unit process: its threads, every output to its log, the unit."""
    configure_process(args.threads, getattr(args, "deterministic", False))
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    target(args, dataset, exp, fold)


def run_unit(args, dataset, exp, fold):
    """One unit in a fresh process: `experiment.run_one` with the run's settings."""
    import experiment

    ctx = experiment.RunContext.of(args, dataset)
    experiment.run_one(ctx, exp, fold)


class _Tail:
    """New complete lines of a growing log file."""

    def __init__(self, path):
        self.path = Path(path)
        self.offset = 0
        self.partial = ""

    def lines(self):
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8", errors="replace") as f:
            f.seek(self.offset)
            text = f.read()
            self.offset = f.tell()
        *complete, self.partial = (self.partial + text).split("\n")
        return complete


def _echo(tail):
    """Prints the unit's own progress lines (they start with ``[``); the rest stays in its log."""
    for line in tail.lines():
        if line.startswith("["):
            log(line)


def run_parallel(ctx, todo, jobs, on_done, target=None):
    """Runs up to ``jobs`` units at once, each in its own process (see the module docstring).

    Args:
        ctx: the run's `experiment.RunContext` (its ``args`` and ``dataset`` go to each process).
        todo: the (experiment, fold) units to run, in order.
        jobs: how many run at once.
        on_done: called (in this process) after each unit that finished.
        target: what a unit process runs, ``target(args, dataset, experiment, fold)``, its
            output going to the unit's log; default: `run_unit`.

    Returns:
        ``(done, failed)``: the number of units that finished and the (experiment, fold) of
        those that failed.

    Raises:
        KeyboardInterrupt: after stopping every running process (Ctrl-C).
    """
    spawn = multiprocessing.get_context("spawn")
    child_args = _child_args(ctx.args, jobs)
    logs = Path(ctx.out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pending, running, failed, done = list(todo), {}, [], 0
    try:
        while pending or running:
            while pending and len(running) < jobs:
                exp, fold = pending.pop(0)
                path = logs / f"{protocol.slug(exp)}_fold{fold}.log"
                path.write_text("")
                proc = spawn.Process(
                    target=_unit_process,
                    args=(target or run_unit, child_args, ctx.dataset, exp, fold, str(path)),
                    name=f"{exp}-fold{fold}",
                )
                proc.start()
                running[(exp, fold)] = (proc, _Tail(path), path)
                log(f"[jobs] started {exp} fold {fold} (pid {proc.pid}, log {path})")
            time.sleep(POLL_S)
            for (exp, fold), (proc, tail, path) in list(running.items()):
                _echo(tail)
                if proc.exitcode is None:
                    continue
                proc.join()
                del running[(exp, fold)]
                if proc.exitcode == 0:
                    done += 1
                    on_done()
                else:
                    failed.append((exp, fold))
                    log(f"[jobs] {exp} fold {fold} FAILED (exit code {proc.exitcode}); see {path}")
    except KeyboardInterrupt:
        _stop(running)
        raise
    return done, failed


def _child_args(args, jobs):
    """The unit processes' settings: the run's, with the decoding threads shared out."""
    import copy

    child = copy.copy(args)
    child.workers = max(1, args.workers // jobs)
    return child


def _stop(running):
    """Terminates every running unit process and waits for them."""
    log(f"[jobs] interrupted: stopping {len(running)} running unit(s)")
    for proc, _, _ in running.values():
        proc.terminate()
    for proc, _, _ in running.values():
        proc.join(timeout=30)
        if proc.exitcode is None:
            proc.kill()
            proc.join()
