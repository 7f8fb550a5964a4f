"""Runs the units of a run: in turn, in parallel processes, or one shard of the plan.

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

How a unit process is configured (threads, deterministic kernels) is `environment.py`'s.

Example:
    >>> plan(["freeze", "finetune"], [1, 2])
    [('freeze', 1), ('finetune', 1), ('freeze', 2), ('finetune', 2)]
    >>> plan(["freeze", "finetune"], [1, 2], shard=(2, 3))
    [('finetune', 1)]
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from pathlib import Path

import experiment
import keras
import protocol
from console import log
from data import DataSet
from environment import configure_process
from experiment import RunContext
from settings import Settings

# Seconds between two looks at the running processes.
POLL_S = 0.5


def compute_device() -> str:
    """``"gpu"`` when Keras' backend computes on a GPU in this process, else ``"cpu"``."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return "gpu" if jax.default_backend() in ("gpu", "cuda", "rocm") else "cpu"
    if backend == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    if backend == "torch":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    return "cpu"


def check_deterministic(settings: Settings, device: str | None = None):
    """Refuses ``--deterministic`` where a planned model cannot run deterministically.

    On a GPU, XLA (JAX) and TensorFlow have no deterministic gradient for MaxPooling2D and
    fail when they meet it; the architectures of `protocol.MAX_POOLING` use it.

    Args:
        settings: the run's settings.
        device: ``"gpu"`` or ``"cpu"``; default: `compute_device`.

    Raises:
        ValueError: naming the experiments and the ways out.
    """
    if not settings.deterministic or keras.backend.backend() not in ("jax", "tensorflow"):
        return
    pooled = [e for e in settings.experiments if protocol.ARCHITECTURES[e] in protocol.MAX_POOLING]
    if pooled and (device or compute_device()) == "gpu":
        raise ValueError(
            f"--deterministic on a GPU with {keras.backend.backend()}: MaxPooling2D, in "
            f"{', '.join(pooled)}, has no deterministic GPU gradient there. Leave "
            "them out with --experiments, run them without --deterministic, or use "
            "KERAS_BACKEND=torch (deterministic where PyTorch has the kernels, else a warning). "
            f"Received: experiments={list(settings.experiments)}"
        )


def plan(experiments, folds, shard=None):
    """The (experiment, fold) units of a run, in order; only shard ``(K, N)``'s if given."""
    units = [(e, k) for k in folds for e in experiments]
    if shard is None:
        return units
    k, n = shard
    return [u for i, u in enumerate(units) if i % n == k - 1]


def pending(ctx: RunContext, units):
    """The units without a complete record made with the run's settings, and how many had one."""
    store, fingerprint = ctx.store, ctx.dataset.fingerprint()
    todo = []
    for exp, fold in units:
        path = store.path(exp, fold)
        rec = store.load(path)
        if rec is not None and rec.made_with(ctx.settings.record_key(exp, fingerprint)):
            if not ctx.settings.save_models or _has_model(ctx.settings.out, rec):
                log(f"[plan] {exp} fold {fold}: already complete in {path}, skipped")
                continue
            log(f"[plan] {exp} fold {fold}: complete, but its model was not saved: re-running")
        if rec is not None:
            log(f"[plan] {exp} fold {fold}: record made with other settings, re-running")
        todo.append((exp, fold))
    return todo, len(units) - len(todo)


def _has_model(out, record) -> bool:
    """Whether the record's saved model and its sidecar are in ``out``."""
    path = None if record.model is None else Path(out) / record.model
    return path is not None and path.is_file() and path.with_suffix(".json").is_file()


def run_plan(ctx: RunContext, on_done):
    """Runs the plan's (or shard's) units not yet complete, in turn or ``--jobs`` at once.

    Args:
        ctx: the run's `experiment.RunContext`.
        on_done: called after each unit that finished (e.g. to rewrite the reports).

    Returns:
        ``(done, skipped, failed)``: units run, units already complete, failed units.
    """
    settings = ctx.settings
    folds = list(settings.folds or range(1, len(ctx.dataset.folds) + 1))
    units = plan(settings.experiments, folds, settings.shard)
    shard = (
        ""
        if settings.shard is None
        else ", shard {}/{}: {} unit(s)".format(*settings.shard, len(units))
    )
    log(
        f"[plan] {len(settings.experiments)} experiment(s) x {len(folds)} fold(s){shard}: "
        f"experiments {', '.join(settings.experiments)}; folds {folds}"
    )
    todo, skipped = pending(ctx, units)
    if settings.jobs > 1 and len(todo) > 1:
        log(f"[jobs] {len(todo)} unit(s), {settings.jobs} at a time, each in its own process")
        done, failed = run_parallel(ctx, todo, settings.jobs, on_done)
    else:
        done, failed = run_serial(ctx, todo, on_done)
    return done, skipped, failed


def run_serial(ctx: RunContext, todo, on_done):
    """Runs the units in this process, in order; a failure stops the run.

    Returns:
        ``(done, failed)``: the number of units run and the failed ones (always empty).
    """
    for i, (exp, fold) in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] {exp} fold {fold}")
        experiment.run_one(ctx, exp, fold)
        on_done()
    return len(todo), []


def _unit_process(target, settings, dataset, exp, fold, log_path):
    """Entry point of a unit process: its threads, every output to its log, the unit."""
    configure_process(settings.threads, settings.deterministic)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    target(settings, dataset, exp, fold)


def run_unit(settings: Settings, dataset: DataSet, exp: str, fold: int):
    """One unit in a fresh process: `experiment.run_one` with the run's settings."""
    experiment.run_one(RunContext(settings, dataset), exp, fold)


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
        ctx: the run's `experiment.RunContext` (its settings and data go to each process).
        todo: the (experiment, fold) units to run, in order.
        jobs: how many run at once.
        on_done: called (in this process) after each unit that finished.
        target: what a unit process runs, ``target(settings, dataset, experiment, fold)``, its
            output going to the unit's log; default: `run_unit`.

    Returns:
        ``(done, failed)``: the number of units that finished and the (experiment, fold) of
        those that failed.

    Raises:
        KeyboardInterrupt: after stopping every running process (Ctrl-C).
    """
    spawn = multiprocessing.get_context("spawn")
    child = ctx.settings.for_child()
    logs = Path(ctx.settings.out) / "logs"
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
                    args=(target or run_unit, child, ctx.dataset, exp, fold, str(path)),
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
