"""Gradual unfreezing during `fit` (ULMFiT / fastai's `fine_tune` idea).

`GradualUnfreezing` moves a model through a schedule of frozen fractions with
`freeze_fraction`, rebuilding the train function and keeping the optimizer in
step with the trainable variables (the optimizer surgery below).
"""

from __future__ import annotations

import bisect
import json
import os
import warnings
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_freeze import _keras_compat as compat
from keras_freeze import _validation as check
from keras_freeze._freeze import apply_freeze
from keras_freeze._freeze import flatten_layers

__all__ = ["GradualUnfreezing"]


def _check_schedule(schedule):
    """Validates a schedule; returns a sorted {int: float} dict or the callable."""
    if callable(schedule) and not isinstance(schedule, dict):
        return schedule
    if not isinstance(schedule, dict):
        raise ValueError(
            "Expected schedule to be a dict {epoch: frozen_fraction} or a callable "
            f"epoch -> frozen_fraction. Received: schedule={schedule!r}"
        )
    if not schedule:
        raise ValueError(
            "Expected a non-empty schedule with at least the key 0, e.g. "
            "{0: 0.5, 3: 0.25, 6: 0.0}. Received: schedule={}"
        )
    checked = {}
    for epoch, fraction in schedule.items():
        if not check.is_integer(epoch) or epoch < 0:
            raise ValueError(
                "Expected schedule keys to be non-negative integer epochs. "
                f"Received: key {epoch!r} in schedule={schedule!r}"
            )
        checked[int(epoch)] = check.fraction(fraction, f"schedule[{epoch!r}]")
    if 0 not in checked:
        raise ValueError(
            "Expected the schedule to say which fraction is frozen from epoch 0 "
            f"(key 0). Received: schedule={schedule!r} (first key {min(checked)}). "
            f"Add 0: <fraction>, e.g. 0: {checked[min(checked)]} to keep that "
            "fraction from the start, or 0: 0.0 to start fully trainable."
        )
    return dict(sorted(checked.items()))


def _fraction_for_epoch(schedule, epoch):
    """The frozen fraction in force at `epoch` (dict: last key <= epoch)."""
    if callable(schedule) and not isinstance(schedule, dict):
        return check.fraction(schedule(epoch), f"schedule({epoch})")
    keys = list(schedule)
    return schedule[keys[bisect.bisect_right(keys, epoch) - 1]]


def _same_variables(a, b):
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _build_optimizer(model, optimizer, variables):
    strategy = compat.distribute_strategy(model)  # TF trainer only
    if strategy is not None:
        with strategy.scope():
            optimizer.build(variables)
    else:
        optimizer.build(variables)


def _sync_optimizer(model):
    """Makes `model.optimizer` track exactly `model.trainable_variables`.

    A Keras optimizer only updates the variables it was built with: on JAX
    `stateless_apply` needs exactly that list, on TensorFlow and torch a
    variable it was not built with raises "Unknown variable" (TensorFlow
    builds the optimizer lazily on the first step, so with whatever was
    trainable then). When the trainable list changes, a fresh optimizer of the
    same class and config is built for the new list, and every optimizer
    variable that exists in both (iterations, learning rate, the slots of
    variables that stay trainable) is copied over by path, so those keep
    their state. Variables that just became trainable start with zero slots.

    Returns:
        True if the optimizer was built or replaced.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return False
    variables = list(model.trainable_variables)
    if not optimizer.built:
        _build_optimizer(model, optimizer, variables)
        return True
    if _same_variables(compat.optimizer_built_variables(optimizer), variables):
        return False
    fresh = optimizer.__class__.from_config(optimizer.get_config())
    _build_optimizer(model, fresh, variables)
    by_path = {}
    for variable in optimizer.variables:
        by_path.setdefault(variable.path, []).append(variable)
    for variable in fresh.variables:
        old = by_path.get(variable.path, [])
        if len(old) == 1 and tuple(old[0].shape) == tuple(variable.shape):
            # A copy, not the same buffer: JAX donates the state buffers to the
            # train step, which would delete them under the old optimizer too.
            variable.assign(keras.ops.convert_to_numpy(old[0].value))
    model.optimizer = fresh
    compat.replace_compiled_optimizer(model, optimizer, fresh)  # what `model.save` writes
    return True


def _check_record_shape(record):
    """Raises a ValueError unless `record` has the fields and types `_write_record` writes."""
    if not isinstance(record, dict):
        raise ValueError(f"not a JSON object but {type(record).__name__}")
    missing = sorted({"seed", "mode", "by", "target", "frozen_sets"} - set(record))
    if missing:
        raise ValueError(f"missing keys {missing}")
    sets = record["frozen_sets"]
    well_formed = isinstance(sets, list) and all(
        isinstance(entry, list)
        and len(entry) == 2
        and isinstance(entry[0], (int, float))
        and isinstance(entry[1], list)
        and all(isinstance(i, int) for i in entry[1])
        for entry in sets
    )
    if not well_formed or not (record["seed"] is None or isinstance(record["seed"], int)):
        raise ValueError("unexpected seed or frozen_sets")


@keras.saving.register_keras_serializable(package="keras_freeze")
class GradualUnfreezing(keras.callbacks.Callback):
    """Unfreezes a model step by step during `fit` (ULMFiT-style fine-tuning).

    At the start of every epoch the callback looks up the frozen fraction in
    force and, when it differs from the one applied last, calls
    `freeze_fraction(model, fraction, mode, by=by)`. With `mode="ordered"` the
    first `floor(fraction * N)` layers of `flatten_layers(model)` are frozen,
    so lowering the fraction unfreezes the model from the top (output side)
    down. `{0: 0.5, 3: 0.25, 6: 0.0}` trains the paper's Mobile Freeze-Net
    (half frozen) for three epochs, then unfreezes another quarter, then all.

    Changing `trainable` inside `fit` needs a new train function, so the
    callback calls `model.make_train_function(force=True)` after each change
    (see the `trainable` setter of `keras.layers.Layer`). It also keeps the
    optimizer in step with the trainable variables: a Keras optimizer can
    only update the variables it was built with, so when the trainable set
    changes the callback builds a fresh optimizer of the same class and
    config over the new set and carries over the state of every variable it
    already tracked (iteration count, learning rate, Adam moments of layers
    that stay trainable); newly unfrozen variables start with zero moments.
    `model.optimizer` is therefore a new object after a change.

    The fraction applied is written to the epoch logs as `frozen_fraction`
    (and the number of frozen layers as `frozen_layers`), so it shows in
    `History` and `CSVLogger`. Each change is also recorded in `self.reports`
    as `(epoch, FreezeReport)`.

    **Resuming.** With `keras.callbacks.BackupAndRestore` (in either order in
    the callback list), a fit interrupted mid-schedule and run again, in a new
    process with a fresh model and optimizer too, continues as the
    uninterrupted run would: at the first epoch the callback re-applies the
    frozen set in force when the backup was written, loads the backed-up
    optimizer state into an optimizer built for that set (Keras alone would
    skip or misplace it, as its variables depend on the trainable set), then
    moves on with the schedule. Give the backup folder as `backup_dir` too,
    and the callback records its seed and frozen sets there when the set
    changes (`gradual_unfreezing.json`): a resume with another seed, `mode`, `by`,
    `target` or frozen set is then refused, and a stochastic schedule with
    `seed=None` resumes with the seed recorded. Without `backup_dir`, a
    stochastic schedule resumes identically only with the same fixed `seed`
    in both runs (unchecked: a warning says so), and a resume with
    `seed=None` (which would draw a new seed, hence another frozen set) is
    refused.

    `freeze_fraction` resets every other layer of the model (or of `target`)
    to trainable, so flags set by hand before `fit` do not survive the first
    step; use `target` to confine the schedule to a backbone.

    Args:
        schedule: Either a dict `{epoch: fraction}`: `fraction` is frozen from
            that (0-based) epoch until the next key; key `0` is required so
            that the first epochs are defined. Or a callable
            `epoch -> fraction`, called at the start of every epoch.
            Fractions are floats in [0, 1].
        mode: `"ordered"` (freeze a prefix: unfreeze from the top down) or
            `"stochastic"` (freeze a random subset). Defaults to `"ordered"`.
            With a fixed seed the stochastic frozen sets are nested (each
            step unfreezes a random part of the layers still frozen).
        by: `"layers"` or `"params"`, as in `freeze_fraction`. Defaults to
            `"layers"`.
        seed: Integer seed for `mode="stochastic"`; `None` draws one seed per
            `fit` call (so the sets are still nested within a run). Must be
            `None` for `mode="ordered"`.
        target: Optional name of a layer of the model (a nested model, such
            as the MobileNetV2 backbone) to which the schedule applies; `None`
            (default) applies it to the whole model.
        verbose: `0` (silent) or `1` (print a line at every change).
        backup_dir: Optional folder of the `BackupAndRestore` callback used
            with this one, where the seed and frozen set are recorded for a
            resume to check (see "Resuming"). Defaults to `None` (no record).

    Raises:
        ValueError: On an invalid schedule (non-integer or negative epochs,
            fractions outside [0, 1], no key 0), unknown `mode` or `by`, a seed
            with `mode="ordered"`, or a `target` the model does not have (at
            the start of `fit`).

    Example:

    >>> import keras
    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
    ...                           keras.layers.Dense(8), keras.layers.Dense(3)])
    >>> model.compile("adam", "sparse_categorical_crossentropy")
    >>> x, y = np.zeros((8, 4)), np.zeros((8,), "int32")
    >>> history = model.fit(x, y, epochs=3, verbose=0,
    ...                     callbacks=[GradualUnfreezing({0: 2 / 3, 2: 0.0})])
    >>> [round(f, 3) for f in history.history["frozen_fraction"]]
    [0.667, 0.667, 0.0]
    >>> [layer.trainable for layer in model.layers]
    [True, True, True]
    """

    def __init__(
        self,
        schedule: dict[int, float] | Callable[[int], float],
        mode: str = "ordered",
        by: str = "layers",
        seed: int | None = None,
        target: str | None = None,
        verbose: int = 0,
        backup_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        check.mode_by_seed(mode, by, seed)
        if target is not None and not isinstance(target, str):
            raise ValueError(
                "Expected target to be the name (a string) of a layer of the model, "
                f"or None. Received: target={target!r}"
            )
        self.schedule = _check_schedule(schedule)
        self.mode = mode
        self.by = by
        self.seed = None if seed is None else int(seed)
        self.target = target
        self.verbose = check.verbose(verbose)
        if backup_dir is not None and not isinstance(backup_dir, (str, os.PathLike)):
            raise ValueError(
                "Expected backup_dir to be a folder path (the `backup_dir` of the "
                f"BackupAndRestore callback) or None. Received: backup_dir={backup_dir!r}"
            )
        self.backup_dir = None if backup_dir is None else os.fspath(backup_dir)
        self.reports = []
        self._applied = None
        self._last_report = None
        self._run_seed = self.seed
        self._restored = []
        self._hooked = None
        self._first_epoch = True
        self._recorded = []

    def fraction_for_epoch(self, epoch: int) -> float:
        """Returns the frozen fraction the schedule sets for 0-based `epoch`."""
        return _fraction_for_epoch(self.schedule, epoch)

    def _target_model(self):
        if self.target is None:
            return self.model
        try:
            return self.model.get_layer(self.target)
        except ValueError as error:
            raise ValueError(
                f"GradualUnfreezing(target={self.target!r}): the model "
                f"{self.model.name!r} has no such layer. Received: target={self.target!r}; "
                f"top-level layers are {[layer.name for layer in self.model.layers]}."
            ) from error

    def on_train_begin(self, logs=None):
        self._applied = None
        self._last_report = None
        self._recorded = []
        self._first_epoch = True
        self._target_model()  # fail early on a wrong target
        if self.mode == "stochastic" and self.seed is None:
            self._run_seed = int(np.random.SeedSequence().generate_state(1)[0])
        else:
            self._run_seed = self.seed

    def set_model(self, model):
        super().set_model(model)
        self._restored = []
        if getattr(model, "optimizer", None) is not None and not self._hooked:
            # A BackupAndRestore resume loads optimizer state saved for the
            # trainable set of the epoch it was saved in; keep the arrays until
            # the first epoch says which set that was (see `_resume`).
            compat.intercept_optimizer_load(model.optimizer, self._restored)
            self._hooked = model.optimizer

    def _release(self):
        if self._hooked is not None:
            compat.release_optimizer_load(self._hooked)
            self._hooked = None

    def on_train_end(self, logs=None):
        self._release()

    def on_test_begin(self, logs=None):  # a standalone evaluate(): no resume to handle
        self._release()

    def on_predict_begin(self, logs=None):
        self._release()

    def _resume(self, epoch, arrays):
        """Loads optimizer state saved at `epoch - 1`'s end (or in `epoch`) into its own set.

        The state fits the trainable set the schedule gave when it was saved:
        that of `epoch - 1` for a backup at an epoch's end, of `epoch` for one
        saved mid-epoch. The set whose fresh optimizer has exactly the saved
        variables' shapes is taken, and the state assigned to it.
        """
        record = self._read_record()
        if record is not None:
            self._check_record(record, epoch)
        elif self.mode == "stochastic" and self.seed is not None:
            warnings.warn(
                f"GradualUnfreezing: resuming a stochastic schedule (seed={self.seed}) from a "
                f"backup (restored at epoch {epoch}) without a record of the interrupted run's "
                f"seed and frozen set, so a different seed goes unnoticed. {self._no_record()}",
                stacklevel=2,
            )
        elif self.mode == "stochastic":
            raise ValueError(
                "GradualUnfreezing: cannot resume a stochastic schedule with seed=None from a "
                f"backup (restored at epoch {epoch}): this run drew a new seed, so it would "
                "freeze a different set of layers than the interrupted run and load the "
                "backed-up optimizer state into the wrong variables. Received: "
                "mode='stochastic', seed=None. Pass the same integer seed in both runs, e.g. "
                "GradualUnfreezing(schedule, mode='stochastic', seed=0), or delete the backup to "
                f"start over. {self._no_record()}"
            )
        optimizer = self.model.optimizer
        candidates = [self.fraction_for_epoch(e) for e in (epoch - 1, epoch) if e >= 0]
        for fraction in dict.fromkeys(candidates):
            report = self._apply(fraction)
            fresh = optimizer.__class__.from_config(optimizer.get_config())
            _build_optimizer(self.model, fresh, list(self.model.trainable_variables))
            if [tuple(v.shape) for v in fresh.variables] == [a.shape for a in arrays]:
                for variable, value in zip(fresh.variables, arrays, strict=True):
                    variable.assign(value)
                self.model.optimizer = fresh
                compat.replace_compiled_optimizer(self.model, optimizer, fresh)
                self._applied, self._last_report = fraction, report
                self.reports.append((epoch, report))
                positions = self._frozen_positions(report)
                recorded = dict(record["frozen_sets"]) if record is not None else {}
                if fraction in recorded:
                    self._check_frozen(fraction, recorded[fraction], positions)
                self._recorded = [[fraction, positions]]
                return
        warnings.warn(
            f"GradualUnfreezing: the optimizer state restored at epoch {epoch} (by "
            "BackupAndRestore or load_weights) fits neither the trainable set of epoch "
            f"{epoch - 1} nor of epoch {epoch} of the schedule; the optimizer restarts "
            "from zero state. Resume with the same schedule, model and optimizer.",
            stacklevel=2,
        )

    def _record_path(self):
        return os.path.join(self.backup_dir, "gradual_unfreezing.json")

    def _no_record(self):
        """What to do when a resume finds no record (for the messages)."""
        if self.backup_dir is None:
            return (
                "Pass backup_dir=<the BackupAndRestore folder> to GradualUnfreezing (in both "
                "runs) to have the seed recorded and checked."
            )
        return (
            f"No record was found in backup_dir={self.backup_dir!r}: is it the folder of the "
            "BackupAndRestore callback, and was it given to the interrupted run too?"
        )

    def _read_record(self):
        """The record of the interrupted run in `backup_dir`, or None."""
        if self.backup_dir is None or not os.path.exists(self._record_path()):
            return None
        try:
            with open(self._record_path(), encoding="utf-8") as f:
                record = json.load(f)
            _check_record_shape(record)
        except ValueError as error:
            raise ValueError(
                f"GradualUnfreezing: the record {self._record_path()!r} is damaged ({error}), "
                "so the frozen set of the interrupted run is unknown. Delete the backup folder "
                "to start over."
            ) from error
        return record

    def _check_record(self, record, epoch):
        """Refuses a resume whose settings differ from the recorded ones."""
        ours = {"mode": self.mode, "by": self.by, "target": self.target}
        if self.mode == "stochastic" and self.seed is None:
            self._run_seed = record["seed"]  # seed=None: continue the recorded run's draw
        ours["seed"] = self._run_seed if self.mode == "stochastic" else None
        differ = {k: (record[k], v) for k, v in ours.items() if record[k] != v}
        if differ:
            said = ", ".join(
                f"{k}={old!r} then, {k}={new!r} now" for k, (old, new) in differ.items()
            )
            raise ValueError(
                f"GradualUnfreezing: cannot resume from the backup in {self.backup_dir!r} "
                f"(restored at epoch {epoch}): it was written with other settings, so this run "
                "would freeze another set of layers and load the backed-up optimizer state into "
                f"the wrong variables. Received: {said}. Resume with the settings of the "
                "interrupted run, or delete the backup folder to start over."
            )

    def _frozen_positions(self, report):
        """Positions of `report.frozen` in `flatten_layers` (names vary between builds)."""
        frozen = set(report.frozen)
        layers = flatten_layers(self._target_model())
        return [i for i, layer in enumerate(layers) if layer.name in frozen]

    def _check_frozen(self, fraction, theirs, ours):
        """Refuses a resume whose frozen set at `fraction` differs from the recorded one."""
        if ours != theirs:
            changed = sorted(set(ours) ^ set(theirs))
            raise ValueError(
                f"GradualUnfreezing: cannot resume from the backup in {self.backup_dir!r}: at "
                f"frozen fraction {fraction:g} the interrupted run froze {len(theirs)} layers, "
                f"this model {len(ours)}; they differ at layer positions {changed[:5]}"
                f"{' ...' if len(changed) > 5 else ''}. Resume with the same model, or delete "
                "the backup folder to start over."
            )

    def _write_record(self):
        """Records the seed and the frozen sets of the fraction in force and of the one before.

        Written at a fit's first epoch and when the fraction changes. A backup written at the
        end of the epoch before a change holds the optimizer state of the earlier set, so both
        are kept for the resume to check.
        """
        if not self._recorded or self._recorded[-1][0] != self._applied:
            positions = self._frozen_positions(self._last_report)
            self._recorded = [*self._recorded[-1:], [self._applied, positions]]
        record = {
            "seed": self._run_seed if self.mode == "stochastic" else None,
            "mode": self.mode,
            "by": self.by,
            "target": self.target,
            "frozen_sets": self._recorded,  # [[fraction, frozen layer positions], ...]
        }
        os.makedirs(self.backup_dir, exist_ok=True)
        temporary = self._record_path() + ".tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(temporary, self._record_path())

    def _apply(self, fraction):
        # No "compiled model" warning: the train function is rebuilt by the caller.
        return apply_freeze(
            self._target_model(),
            fraction,
            self.mode,
            self.by,
            self._run_seed if self.mode == "stochastic" else None,
            warn_if_compiled=False,
        )

    def on_epoch_begin(self, epoch, logs=None):
        first = self._first_epoch
        if first:
            self._first_epoch = False
            self._release()
            if self._restored:
                self._resume(epoch, self._restored[-1])
                if getattr(self.model, "compiled", False):
                    self.model.make_train_function(force=True)
        changed = self._step(epoch)
        if self.backup_dir is not None and (changed or first):
            self._write_record()

    def _step(self, epoch):
        """Applies the schedule's fraction for `epoch` if it changed; returns whether it did."""
        fraction = self.fraction_for_epoch(epoch)
        if fraction == self._applied:
            return False
        report = self._apply(fraction)
        self._applied = fraction
        self._last_report = report
        self.reports.append((epoch, report))
        _sync_optimizer(self.model)
        if getattr(self.model, "compiled", False):
            self.model.make_train_function(force=True)
        if self.verbose:
            print(
                f"GradualUnfreezing: epoch {epoch + 1}: frozen fraction {fraction:g}, "
                f"{report.n_frozen}/{report.n_layers} layers frozen."
            )
        return True

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._last_report is not None:
            logs["frozen_fraction"] = float(self._applied)
            logs["frozen_layers"] = float(self._last_report.n_frozen)

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments (dict schedules only).

        Raises:
            NotImplementedError: If the schedule is a callable: a Python
                function cannot be stored in a JSON config. Use a dict
                schedule to serialise the callback.
        """
        if not isinstance(self.schedule, dict):
            raise NotImplementedError(
                "GradualUnfreezing with a callable schedule cannot be serialised: "
                f"a Python callable is not JSON. Received: schedule={self.schedule!r}. "
                "Pass a dict {epoch: fraction} instead to get a config."
            )
        return {
            # JSON keys are strings; from_config turns them back into ints.
            "schedule": {str(epoch): fraction for epoch, fraction in self.schedule.items()},
            "mode": self.mode,
            "by": self.by,
            "seed": self.seed,
            "target": self.target,
            "verbose": self.verbose,
            "backup_dir": self.backup_dir,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> GradualUnfreezing:
        config = dict(config)
        schedule = config.pop("schedule")
        if isinstance(schedule, dict):
            parsed = {}
            for key, value in schedule.items():
                if isinstance(key, str):
                    if not key.strip().isdigit():
                        raise ValueError(
                            "Expected schedule keys to be integer epochs. Received: "
                            f"key {key!r} in config schedule={schedule!r}"
                        )
                    key = int(key)
                parsed[key] = value
            schedule = parsed
        return cls(schedule, **config)
