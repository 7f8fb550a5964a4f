"""Callbacks: gradual unfreezing during `fit` and the paper's per-class metrics.

`GradualUnfreezing` moves a model through a schedule of frozen fractions
(ULMFiT / fastai's `fine_tune` idea) using `freeze_fraction`.
`ClassificationMetrics` computes the metrics of Roy & Khurana, "Mobile
Freeze-Net with Attention-based Loss Function for Covid-19 Detection from an
Imbalanced CXR Dataset", ACM SAC 2023 (macro and weighted F1, precision,
recall, accuracy, one-vs-rest AUC, per-class recall) with scikit-learn at every
epoch end and writes them into `logs`, where `EarlyStopping`,
`ModelCheckpoint` and `CSVLogger` can use them. `classification_metrics` is the
same computation as a plain function, for a held-out test set.
"""

from __future__ import annotations

import bisect
import math
import numbers
import re
import warnings

import keras
import numpy as np

from keras_freeze._attention import _to_numpy
from keras_freeze._freeze import _validate_fraction
from keras_freeze._freeze import _validate_mode_by_seed
from keras_freeze._freeze import freeze_fraction

# --------------------------------------------------------------------------
# Gradual unfreezing
# --------------------------------------------------------------------------


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
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(
                "Expected schedule keys to be non-negative integer epochs. "
                f"Received: key {epoch!r} in schedule={schedule!r}"
            )
        checked[int(epoch)] = _validate_fraction(fraction, f"schedule[{epoch!r}]")
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
        return _validate_fraction(schedule(epoch), f"schedule({epoch})")
    keys = list(schedule)
    return schedule[keys[bisect.bisect_right(keys, epoch) - 1]]


def _same_variables(a, b):
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _build_optimizer(model, optimizer, variables):
    strategy = getattr(model, "distribute_strategy", None)  # TF trainer only
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
    if _same_variables(getattr(optimizer, "_trainable_variables", []), variables):
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
    compile_config = getattr(getattr(model, "_compile_config", None), "config", None)
    if isinstance(compile_config, dict) and compile_config.get("optimizer") is optimizer:
        compile_config["optimizer"] = fresh  # what `model.save` writes as compile config
    return True


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

    def __init__(self, schedule, mode="ordered", by="layers", seed=None, target=None, verbose=0):
        super().__init__()
        _validate_mode_by_seed(mode, by, seed)
        if target is not None and not isinstance(target, str):
            raise ValueError(
                "Expected target to be the name (a string) of a layer of the model, "
                f"or None. Received: target={target!r}"
            )
        if verbose not in (0, 1, False, True):
            raise ValueError(f"Expected verbose to be 0 or 1. Received: verbose={verbose!r}")
        self.schedule = _check_schedule(schedule)
        self.mode = mode
        self.by = by
        self.seed = None if seed is None else int(seed)
        self.target = target
        self.verbose = int(verbose)
        self.reports = []
        self._applied = None
        self._last_report = None
        self._run_seed = self.seed

    def fraction_for_epoch(self, epoch):
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
        self._target_model()  # fail early on a wrong target
        if self.mode == "stochastic" and self.seed is None:
            self._run_seed = int(np.random.SeedSequence().generate_state(1)[0])
        else:
            self._run_seed = self.seed

    def on_epoch_begin(self, epoch, logs=None):
        fraction = self.fraction_for_epoch(epoch)
        if fraction == self._applied:
            return
        target = self._target_model()
        report = freeze_fraction(
            target,
            fraction,
            self.mode,
            by=self.by,
            seed=self._run_seed if self.mode == "stochastic" else None,
        )
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

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._last_report is not None:
            logs["frozen_fraction"] = float(self._applied)
            logs["frozen_layers"] = float(self._last_report.n_frozen)

    def get_config(self):
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
        }

    @classmethod
    def from_config(cls, config):
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


# --------------------------------------------------------------------------
# Classification metrics
# --------------------------------------------------------------------------

_ZERO_DIVISION_HELP = "0.0, 1.0 or float('nan')"


def _import_sklearn_metrics():
    try:
        from sklearn import metrics
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "keras_freeze.ClassificationMetrics and classification_metrics need "
            "scikit-learn, an optional dependency. Install it with "
            "`pip install scikit-learn` or `pip install keras-freeze[test]`."
        ) from error
    return metrics


def _check_zero_division(zero_division):
    if isinstance(zero_division, bool) or not isinstance(zero_division, numbers.Real):
        raise ValueError(
            f"Expected zero_division to be {_ZERO_DIVISION_HELP}. "
            f"Received: zero_division={zero_division!r}"
        )
    value = float(zero_division)
    if not (math.isnan(value) or value in (0.0, 1.0)):
        raise ValueError(
            f"Expected zero_division to be {_ZERO_DIVISION_HELP}. "
            f"Received: zero_division={zero_division!r}"
        )
    return value


def _key_name(name):
    return re.sub(r"\W+", "_", str(name)).strip("_")


def _class_keys(class_names, num_classes):
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    names = list(class_names)
    if len(names) != num_classes:
        raise ValueError(
            f"Expected {num_classes} class names, one per output column. "
            f"Received: class_names={names!r} ({len(names)} names)"
        )
    keys = [_key_name(name) for name in names]
    if any(not key for key in keys) or len(set(keys)) != len(keys):
        raise ValueError(
            "Expected class names that stay distinct and non-empty as metric keys "
            f"(non-alphanumerics become '_'). Received: class_names={names!r} -> {keys!r}"
        )
    return keys


def _as_probabilities(y_prob, from_logits):
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_prob.ndim == 1:
        y_prob = y_prob[:, None]
    if y_prob.ndim != 2 or y_prob.shape[0] == 0:
        raise ValueError(
            "Expected y_prob of shape (n_samples, n_classes) with n_samples > 0 "
            f"(or (n_samples,) / (n_samples, 1) for a sigmoid). Received: shape {y_prob.shape}"
        )
    if not np.all(np.isfinite(y_prob)):
        raise ValueError("Expected finite predictions. Received: y_prob with NaN or inf values.")
    if y_prob.shape[1] == 1:
        p = y_prob[:, 0]
        if from_logits:
            p = 1.0 / (1.0 + np.exp(-p))
        return np.stack([1.0 - p, p], axis=1)
    if from_logits:
        shifted = y_prob - y_prob.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)
    return y_prob


def _as_labels(y_true, num_classes):
    y_true = np.asarray(y_true)
    if y_true.ndim == 2 and y_true.shape[1] == 1:
        y_true = y_true[:, 0]
    if y_true.ndim == 2:
        if y_true.shape[1] != num_classes:
            raise ValueError(
                f"Expected one-hot y_true with {num_classes} columns, as many as the "
                f"predictions. Received: y_true of shape {y_true.shape}"
            )
        return np.argmax(y_true, axis=1)
    if y_true.ndim != 1:
        raise ValueError(
            "Expected y_true as integer labels (n_samples,) or one-hot "
            f"(n_samples, n_classes). Received: shape {y_true.shape}"
        )
    labels = y_true.astype(np.int64)
    if not np.array_equal(labels, y_true) or labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"Expected integer labels in [0, {num_classes - 1}]. Received: y_true with "
            f"values in [{y_true.min()}, {y_true.max()}]"
        )
    return labels


def _compute(y_true, y_prob, class_names, zero_division, from_logits):
    """Returns (metrics, confusion_matrix, names of classes with undefined AUC)."""
    sk = _import_sklearn_metrics()
    zero_division = _check_zero_division(zero_division)
    prob = _as_probabilities(y_prob, from_logits)
    n, k = prob.shape
    keys = _class_keys(class_names, k)
    labels = _as_labels(y_true, k)
    if labels.shape[0] != n:
        raise ValueError(
            f"Expected as many labels as predictions. Received: {labels.shape[0]} labels "
            f"and {n} predictions."
        )
    pred = np.argmax(prob, axis=1)
    classes = list(range(k))
    metrics = {"accuracy": float(sk.accuracy_score(labels, pred))}
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = sk.precision_recall_fscore_support(
            labels, pred, labels=classes, average=average, zero_division=zero_division
        )
        metrics[f"{average}_f1"] = float(f1)
        metrics[f"{average}_precision"] = float(precision)
        metrics[f"{average}_recall"] = float(recall)

    support = np.bincount(labels, minlength=k)
    aucs = np.full(k, np.nan)
    for c in classes:
        if 0 < support[c] < n:  # one-vs-rest AUC needs positives and negatives
            aucs[c] = sk.roc_auc_score(labels == c, prob[:, c])
    undefined = [keys[c] for c in classes if np.isnan(aucs[c])]
    metrics["macro_auc"] = float(np.mean(aucs)) if not undefined else float("nan")
    weighted = support > 0  # a class absent from y_true has weight 0
    if np.isnan(aucs[weighted]).any():
        metrics["weighted_auc"] = float("nan")
    else:
        metrics["weighted_auc"] = float(np.average(aucs[weighted], weights=support[weighted]))

    per_class_recall = sk.recall_score(
        labels, pred, labels=classes, average=None, zero_division=zero_division
    )
    for c in classes:
        metrics[f"recall_{keys[c]}"] = float(per_class_recall[c])
    for c in classes:
        metrics[f"auc_{keys[c]}"] = float(aucs[c])
    matrix = sk.confusion_matrix(labels, pred, labels=classes)
    return metrics, matrix, undefined


def _undefined_auc_message(undefined, where):
    return (
        f"{where}: one-vs-rest AUC is undefined for class(es) {undefined}: the labels "
        "hold no positive (class absent) or no negative example of them, so no ROC "
        "curve exists. Their per-class AUC and the macro AUC are NaN; the weighted "
        "AUC averages the defined classes by support (an absent class has weight 0) "
        "and is NaN if a present class is undefined."
    )


def classification_metrics(
    y_true, y_prob, class_names=None, *, zero_division=0.0, from_logits=False
):
    """Computes the paper's classification metrics with scikit-learn.

    Roy & Khurana (ACM SAC 2023) report, macro (Table 1) and weighted
    (Table 2): F1, accuracy, precision, recall and AUC. This returns all of
    them from predicted probabilities, plus per-class recall and per-class
    one-vs-rest AUC. The predicted class is `argmax(y_prob)`.

    - `accuracy`: `sklearn.metrics.accuracy_score`.
    - `{macro,weighted}_{f1,precision,recall}`:
      `precision_recall_fscore_support(labels=range(K), average=...,
      zero_division=zero_division)`.
    - `{macro,weighted}_auc`: one-vs-rest ROC AUC per class
      (`roc_auc_score(y == c, y_prob[:, c])`), averaged uniformly (macro) or
      by class support (weighted); equal to
      `roc_auc_score(y, y_prob, multi_class="ovr", average=...)` when every
      class is present.
    - `recall_<class>` and `auc_<class>` per class, `<class>` being the
      class name with non-alphanumerics replaced by `_`, or the index.

    A class with no positive (absent) or no negative example in `y_true` has
    no ROC curve: its AUC and the macro AUC are NaN (never a made-up number)
    and a warning says so; the weighted AUC gives an absent class weight 0.

    Args:
        y_true: Integer labels `(n,)` or one-hot `(n, K)`.
        y_prob: Predicted probabilities `(n, K)` (a sigmoid output `(n,)` or
            `(n, 1)` is read as two classes).
        class_names: Optional sequence of K names for the per-class keys.
        zero_division: Value of precision/recall/F1 where it divides by zero
            (a class never predicted or absent): `0.0` (default), `1.0`, or
            `float("nan")` to leave such classes out of the averages.
        from_logits: Whether `y_prob` holds logits (softmax, or sigmoid for
            one column, is applied first). Defaults to `False`.

    Returns:
        A dict of Python floats, keys as above.

    Raises:
        ImportError: If scikit-learn is not installed.
        ValueError: On shapes that do not match, labels outside
            `[0, K)`, non-finite predictions, a wrong number of class names
            or an invalid `zero_division`.

    Example:

    >>> import numpy as np
    >>> y = np.array([0, 1, 2, 2])
    >>> p = np.array([[.8, .1, .1], [.2, .7, .1], [.1, .2, .7], [.5, .3, .2]])
    >>> m = classification_metrics(y, p, class_names=["a", "b", "c"])
    >>> round(m["accuracy"], 2), round(m["macro_f1"], 3), m["recall_c"]
    (0.75, 0.778, 0.5)
    """
    metrics, _, undefined = _compute(y_true, y_prob, class_names, zero_division, from_logits)
    if undefined:
        warnings.warn(_undefined_auc_message(undefined, "classification_metrics"), stacklevel=2)
    return metrics


@keras.saving.register_keras_serializable(package="keras_freeze")
class ClassificationMetrics(keras.callbacks.Callback):
    """Logs the paper's per-class metrics on validation data at every epoch end.

    At the end of each epoch the model predicts on `validation_data`, and
    `classification_metrics` (scikit-learn) turns the predictions into
    `{prefix}accuracy`, `{prefix}macro_f1`, `{prefix}weighted_f1`,
    `{prefix}macro_precision`, `{prefix}weighted_precision`,
    `{prefix}macro_recall`, `{prefix}weighted_recall`, `{prefix}macro_auc`,
    `{prefix}weighted_auc`, `{prefix}recall_<class>` and `{prefix}auc_<class>`
    (e.g. `val_recall_COVID`, or `val_recall_0` without class names). They are
    written into the epoch `logs`, so `History`, `EarlyStopping`,
    `ModelCheckpoint`, `CSVLogger` and `ReduceLROnPlateau` can monitor them.

    **Order matters**: Keras hands the same `logs` dict to the callbacks in
    list order, so put this callback *before* the callbacks that read its
    keys: `callbacks=[ClassificationMetrics(...), EarlyStopping(...)]`.
    (`History` and the progress bar are appended by Keras after yours.)

    A key already in `logs` (say `val_accuracy` from `compile(metrics=...)`
    with `fit(validation_data=...)`) is not overwritten: a warning asks for
    another `prefix`.

    When a class is absent from the validation labels its AUC is undefined:
    the callback logs NaN for it and for the macro AUC, and warns once why.

    Args:
        validation_data: Either a tuple `(x, y)` of arrays (`y` integer labels
            or one-hot), or a re-iterable source of `(x, y)` batches: a
            `keras.utils.PyDataset`, a `tf.data.Dataset`, a torch
            `DataLoader`, a list of batches. One-shot iterators (generators)
            are refused since they would be empty from the second epoch.
        class_names: Optional list of class names, in output order, for the
            per-class keys.
        batch_size: Batch size for `model.predict` on array data. Defaults to
            `None` (Keras' default, 32).
        prefix: Prefix of every key. Defaults to `"val_"`.
        keep_confusion_matrix: Whether to keep the last confusion matrix
            (rows true, columns predicted) in `self.confusion_matrix`.
            Defaults to `True`.
        zero_division: Passed to scikit-learn, see `classification_metrics`.
            Defaults to `0.0`.
        from_logits: Whether the model outputs logits. Defaults to `False`.
        verbose: `0` (silent) or `1` (print the metrics each epoch).

    Raises:
        ValueError: On validation data of an unsupported kind, or invalid
            arguments.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.normal(size=(32, 4)), rng.integers(0, 3, size=32)
    >>> model = keras.Sequential([keras.Input((4,)),
    ...                           keras.layers.Dense(3, activation="softmax")])
    >>> model.compile("adam", "sparse_categorical_crossentropy")
    >>> metrics = ClassificationMetrics((x, y), class_names=["a", "b", "c"])
    >>> stop = keras.callbacks.EarlyStopping(monitor="val_macro_f1", mode="max",
    ...                                      patience=1)
    >>> history = model.fit(x, y, epochs=2, verbose=0, callbacks=[metrics, stop])
    >>> "val_macro_f1" in history.history, "val_recall_c" in history.history
    (True, True)
    >>> metrics.confusion_matrix.shape
    (3, 3)
    """

    def __init__(
        self,
        validation_data,
        class_names=None,
        batch_size=None,
        prefix="val_",
        keep_confusion_matrix=True,
        zero_division=0.0,
        from_logits=False,
        verbose=0,
    ):
        super().__init__()
        if isinstance(validation_data, tuple):
            if len(validation_data) != 2:
                raise ValueError(
                    "Expected validation_data as a tuple (x, y) or an iterable of (x, y) "
                    f"batches. Received: a tuple of length {len(validation_data)} (sample "
                    "weights are not used by these metrics; pass (x, y))."
                )
            y = np.asarray(validation_data[1])
            n_x = len(keras.tree.flatten(validation_data[0])[0])
            if y.ndim == 0 or len(y) != n_x or len(y) == 0:
                raise ValueError(
                    "Expected x and y of the same non-zero length. Received: "
                    f"{n_x} inputs and y of shape {y.shape}"
                )
        elif isinstance(validation_data, keras.utils.PyDataset):
            pass
        elif hasattr(validation_data, "__iter__") and not isinstance(
            validation_data, (str, bytes, dict, np.ndarray)
        ):
            if iter(validation_data) is validation_data:
                raise ValueError(
                    "Expected validation_data that can be iterated once per epoch. "
                    f"Received: a one-shot iterator {type(validation_data).__name__}; "
                    "pass a list of batches, a PyDataset, a tf.data.Dataset or arrays (x, y)."
                )
        else:
            raise ValueError(
                "Expected validation_data as a tuple (x, y) of arrays or an iterable of "
                f"(x, y) batches. Received: {type(validation_data).__name__}"
            )
        if batch_size is not None and (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, numbers.Integral)
            or batch_size < 1
        ):
            raise ValueError(
                "Expected batch_size to be a positive integer or None. "
                f"Received: batch_size={batch_size!r}"
            )
        if not isinstance(prefix, str):
            raise ValueError(f"Expected prefix to be a string. Received: prefix={prefix!r}")
        self.validation_data = validation_data
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.batch_size = None if batch_size is None else int(batch_size)
        self.prefix = prefix
        self.keep_confusion_matrix = bool(keep_confusion_matrix)
        self.zero_division = _check_zero_division(zero_division)
        self.from_logits = bool(from_logits)
        self.verbose = int(verbose)
        self.confusion_matrix = None
        self.last_metrics = None
        self._warned_auc = False
        self._warned_keys = False

    def _predict(self):
        data = self.validation_data
        if isinstance(data, tuple):
            x, y = data
            prob = self.model.predict(x, batch_size=self.batch_size, verbose=0)
            return np.asarray(y), keras.ops.convert_to_numpy(prob)
        if isinstance(data, keras.utils.PyDataset):
            batches = (data[i] for i in range(len(data)))
        else:
            batches = iter(data)
        ys, probs = [], []
        for batch in batches:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise ValueError(
                    "Expected validation_data batches of the form (x, y). Received: "
                    f"a batch of type {type(batch).__name__}"
                )
            x = keras.tree.map_structure(_to_numpy, batch[0])
            ys.append(_to_numpy(batch[1]))
            probs.append(keras.ops.convert_to_numpy(self.model.predict_on_batch(x)))
        if not ys:
            raise ValueError("Expected validation_data with at least one batch. Received: none.")
        return np.concatenate(ys), np.concatenate(probs)

    def on_epoch_end(self, epoch, logs=None):
        y_true, y_prob = self._predict()
        metrics, matrix, undefined = _compute(
            y_true, y_prob, self.class_names, self.zero_division, self.from_logits
        )
        if undefined and not self._warned_auc:
            self._warned_auc = True
            warnings.warn(_undefined_auc_message(undefined, "ClassificationMetrics"), stacklevel=2)
        self.last_metrics = metrics
        if self.keep_confusion_matrix:
            self.confusion_matrix = matrix
        if logs is not None:
            clashes = [self.prefix + key for key in metrics if self.prefix + key in logs]
            if clashes and not self._warned_keys:
                self._warned_keys = True
                warnings.warn(
                    f"ClassificationMetrics: keys {clashes} are already in the logs (from "
                    "compile metrics or another callback) and are left as they are. Pass "
                    "another prefix, e.g. prefix='val_sk_', to log these metrics too.",
                    stacklevel=2,
                )
            for key, value in metrics.items():
                if self.prefix + key not in logs:
                    logs[self.prefix + key] = value
        if self.verbose:
            shown = ", ".join(f"{self.prefix}{k}={v:.4f}" for k, v in metrics.items())
            print(f"ClassificationMetrics: epoch {epoch + 1}: {shown}")

    def get_config(self):
        """Returns the constructor arguments except `validation_data`.

        Data is not configuration: rebuild with
        `ClassificationMetrics.from_config({**config, "validation_data": (x, y)})`.
        """
        return {
            "class_names": self.class_names,
            "batch_size": self.batch_size,
            "prefix": self.prefix,
            "keep_confusion_matrix": self.keep_confusion_matrix,
            "zero_division": self.zero_division,
            "from_logits": self.from_logits,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "validation_data" not in config:
            raise ValueError(
                "ClassificationMetrics.from_config needs the data, which get_config leaves "
                "out. Received: config without 'validation_data'. Use "
                "ClassificationMetrics.from_config({**config, 'validation_data': (x, y)})."
            )
        return cls(**config)
