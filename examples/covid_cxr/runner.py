"""Runs a run's (experiment, fold) units in turn, in processes or one shard (docs/covid_cxr.md).

>>> plan(["freeze", "finetune"], [1, 2])
[('freeze', 1), ('finetune', 1), ('freeze', 2), ('finetune', 2)]
>>> plan(["freeze", "finetune"], [1, 2], shard=(2, 3))
[('finetune', 1)]
"""

import multiprocessing
import os
import sys
import time
from pathlib import Path

import experiment
import keras
import protocol
from console import log
from environment import configure_process
from settings import Settings

POLL_S = 0.5  # seconds between two looks at the running processes


def compute_device() -> str:
    """``"gpu"`` when Keras' backend computes on a GPU in this process, else ``"cpu"``."""
    backend, modules = keras.backend.backend(), sys.modules  # Keras imported its backend
    if backend == "jax":
        return "gpu" if modules["jax"].default_backend() in ("gpu", "cuda", "rocm") else "cpu"
    if backend == "tensorflow":
        return "gpu" if modules["tensorflow"].config.list_physical_devices("GPU") else "cpu"
    if backend == "torch":
        return "gpu" if modules["torch"].cuda.is_available() else "cpu"
    return "cpu"


def check_deterministic(settings: Settings, device: str | None = None):
    """Raises ValueError for ``--deterministic`` on a GPU (``device``, default `compute_device`)
    with JAX or TensorFlow and MaxPooling2D (`protocol.MAX_POOLING`): no deterministic gradient."""
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
    k, n = shard or (1, 1)
    return [u for i, u in enumerate(units) if i % n == k - 1]


def pending(ctx: experiment.RunContext, units):
    """The units without a complete record made with the run's settings, and how many had one."""
    store, fingerprint, todo = ctx.store, ctx.dataset.fingerprint(), []
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
    if record.model is None:
        return False
    path = Path(out) / record.model
    return path.is_file() and path.with_suffix(".json").is_file()


def run_plan(ctx: experiment.RunContext, on_done):
    """Runs the plan's (or shard's) units not yet complete, in turn or ``--jobs`` at once,
    calling ``on_done()`` after each that finished: ``(done, skipped, failed)``."""
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


def run_serial(ctx: experiment.RunContext, todo, on_done):
    """Runs the units here, in order (a failure stops the run): ``(done, [])``."""
    for i, (exp, fold) in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] {exp} fold {fold}")
        experiment.run_one(ctx, exp, fold)
        on_done()
    return len(todo), []


def _unit_process(target, settings, dataset, exp, fold, log_path):
    """A unit process: its threads, its output to its log, ``target`` (default: the unit)."""
    configure_process(settings.threads, settings.deterministic)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for std in (1, 2):
        os.dup2(fd, std)
    sys.stdout, sys.stderr = (os.fdopen(n, "w", buffering=1, closefd=False) for n in (1, 2))
    if target is None:
        experiment.run_one(experiment.RunContext(settings, dataset), exp, fold)
    else:
        target(settings, dataset, exp, fold)


class _Tail:
    """A unit's growing log file: `echo` prints its new progress lines (those starting ``[``)."""

    def __init__(self, path):
        self.path, self.offset, self.partial = path, 0, ""

    def echo(self):
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8", errors="replace") as f:
            f.seek(self.offset)
            text = f.read()
            self.offset = f.tell()
        *complete, self.partial = (self.partial + text).split("\n")
        for line in complete:
            if line.startswith("["):
                log(line)


def run_parallel(ctx, todo, jobs, on_done, target=None):
    """Runs the units ``todo``, up to ``jobs`` at once, each in a spawned process running
    ``target(settings, dataset, experiment, fold)`` (default: the unit) into its log; Ctrl-C
    stops them all and is raised again.

    Returns:
        ``(done, failed)``: how many finished (each then calls ``on_done()``), the failed units.
    """
    spawn, child = multiprocessing.get_context("spawn"), ctx.settings.for_child()
    logs = Path(ctx.settings.out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pending, running, failed, done = list(todo), {}, [], 0
    try:
        while pending or running:
            while pending and len(running) < jobs:
                exp, fold = pending.pop(0)
                path = logs / f"{protocol.slug(exp)}_fold{fold}.log"
                path.write_text("")
                args = (target, child, ctx.dataset, exp, fold, str(path))
                proc = spawn.Process(target=_unit_process, args=args, name=f"{exp}-fold{fold}")
                proc.start()
                running[(exp, fold)] = (proc, _Tail(path))
                log(f"[jobs] started {exp} fold {fold} (pid {proc.pid}, log {path})")
            time.sleep(POLL_S)
            for (exp, fold), (proc, tail) in list(running.items()):
                tail.echo()
                if proc.exitcode is None:
                    continue
                proc.join()
                del running[(exp, fold)]
                if proc.exitcode == 0:
                    done += 1
                    on_done()
                else:
                    failed.append((exp, fold))
                    code, path = proc.exitcode, tail.path
                    log(f"[jobs] {exp} fold {fold} FAILED (exit code {code}); see {path}")
    except KeyboardInterrupt:
        log(f"[jobs] interrupted: stopping {len(running)} running unit(s)")
        for proc, _ in running.values():
            proc.terminate()
        for proc, _ in running.values():
            proc.join(timeout=30)
            if proc.exitcode is None:
                proc.kill()
                proc.join()
        raise
    return done, failed
