"""The paper's classification metrics, in NumPy, and a callback that logs them.

Roy & Khurana, "Mobile Freeze-Net with Attention-based Loss Function for
Covid-19 Detection from an Imbalanced CXR Dataset", ACM SAC 2023
(https://doi.org/10.1145/3555776.3577825), report macro (Table 1) and weighted
(Table 2) F1, accuracy, precision, recall and AUC. `classification_metrics`
computes all of them, per-class values and the confusion matrix from predicted
probabilities; `ClassificationMetrics` does it on validation data at every
epoch end and writes the values into the Keras `logs`.

Everything is NumPy: the values equal scikit-learn's
(`precision_recall_fscore_support`, `accuracy_score`, `roc_auc_score`,
`confusion_matrix`), which the tests use as the oracle, but scikit-learn is
not needed at run time.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_freeze import _validation as check

__all__ = ["ClassificationMetrics", "ClassificationReport", "classification_metrics"]

_AVERAGED = ("f1", "accuracy", "precision", "recall", "auc")
_PER_CLASS = ("precision", "recall", "f1", "auc")


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------


def _key_name(name):
    return re.sub(r"\W+", "_", str(name)).strip("_")


def _class_names(class_names, num_classes):
    """(names, keys): names as str, keys safe for `recall_<key>` log names."""
    if class_names is None:
        names = [str(i) for i in range(num_classes)]
        return names, names
    names = check.name_list(class_names)
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
    return names, keys


def _as_probabilities(y_prob, from_logits):
    y_prob = np.asarray(check.to_numpy(y_prob), dtype=np.float64)
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
        elif p.min() < 0.0 or p.max() > 1.0:
            raise ValueError(
                "Expected sigmoid probabilities in [0, 1] for a single output column. "
                f"Received: scores in [{p.min():.6g}, {p.max():.6g}]. If the model outputs "
                "logits (no sigmoid), pass from_logits=True; thresholding such scores at 0.5 "
                "would be meaningless."
            )
        return np.stack([1.0 - p, p], axis=1)
    if from_logits:
        exp = np.exp(y_prob - y_prob.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)
    return y_prob


def _as_labels(y_true, num_classes, n):
    labels, _ = check.class_labels(y_true, num_classes)
    if labels.shape[0] != n:
        raise ValueError(
            f"Expected as many labels as predictions. Received: {labels.shape[0]} labels "
            f"and {n} predictions."
        )
    return labels


# --------------------------------------------------------------------------
# NumPy formulas (scikit-learn's definitions)
# --------------------------------------------------------------------------


def _divide(numerator, denominator, zero_division):
    """numerator / denominator, `zero_division` where the denominator is 0."""
    numerator = numerator.astype(np.float64)
    denominator = denominator.astype(np.float64)
    zero = denominator == 0
    out = numerator / np.where(zero, 1.0, denominator)
    out[zero] = zero_division
    return out


def _nan_average(values, weights=None):
    """Average ignoring NaN entries, as scikit-learn's `_nanaverage`.

    All NaN -> NaN; weights summing to 0 over the kept entries -> plain mean.
    """
    keep = ~np.isnan(values)
    if not keep.any():
        return float("nan")
    if weights is None or weights[keep].sum() == 0:
        return float(np.mean(values[keep]))
    return float(np.average(values[keep], weights=weights[keep]))


def _average_ranks(scores):
    """1-based ranks of `scores`, tied values sharing their average rank."""
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    starts = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    first = np.flatnonzero(starts)
    sizes = np.diff(np.append(first, len(scores)))
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.repeat(first + (sizes + 1) / 2.0, sizes)
    return ranks


def _binary_auc(positive, scores):
    """ROC AUC as the Mann-Whitney U statistic (ties count one half)."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    rank_sum = _average_ranks(scores)[positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _one_vs_rest_aucs(labels, prob, support):
    n, k = prob.shape
    aucs = np.full(k, np.nan)
    for c in range(k):
        if 0 < support[c] < n:  # a ROC curve needs positives and negatives
            aucs[c] = _binary_auc(labels == c, prob[:, c])
    return aucs


def _averaged_auc(aucs, support):
    """(macro, weighted): NaN if a class counted in the average is undefined."""
    macro = float("nan") if np.isnan(aucs).any() else float(np.mean(aucs))
    present = support > 0  # an absent class has weight 0
    if np.isnan(aucs[present]).any():
        return macro, float("nan")
    return macro, float(np.average(aucs[present], weights=support[present]))


# --------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------


class ClassificationReport(Mapping):
    """The metrics of one set of predictions, from `classification_metrics`.

    A read-only mapping of flat float keys (`accuracy`, `macro_f1`,
    `weighted_f1`, `macro_precision`, `weighted_precision`, `macro_recall`,
    `weighted_recall`, `macro_auc`, `weighted_auc`, `recall_<key>`,
    `auc_<key>`, where `<key>` is the class name with non-alphanumerics
    replaced by `_`), so `report["macro_f1"]` and `dict(report)` work, plus
    structured attributes.

    Attributes:
        class_names: Tuple of class names (`"0"`, `"1"`, ... when none given).
        n: Number of samples.
        accuracy: Share of samples whose arg-max prediction is the label.
        balanced_accuracy: Mean per-class recall (the macro recall).
        macro: Dict with keys `f1`, `accuracy`, `precision`, `recall`, `auc`:
            unweighted means over the classes (`accuracy` is plain accuracy).
        weighted: The same keys, averaged with weights = class support.
        per_class: Dict class name -> dict with keys `precision`, `recall`,
            `f1`, `auc` and `support` (an int).
        confusion_matrix: `(K, K)` int64 array, rows true, columns predicted
            (read-only).

    Example:

    >>> import json
    >>> import numpy as np
    >>> from keras_freeze import classification_metrics
    >>> y = np.array([0, 1, 1])
    >>> report = classification_metrics(y, [[.9, .1], [.2, .8], [.6, .4]], ["neg", "pos"])
    >>> report["macro_f1"] == report.macro["f1"]
    True
    >>> report.per_class["pos"]["support"], report.confusion_matrix.tolist()
    (2, [[1, 0], [1, 1]])
    >>> list(json.loads(json.dumps(report.to_dict())))
    ['n', 'macro', 'weighted', 'balanced_accuracy', 'per_class', 'confusion_matrix']
    """

    def __init__(
        self,
        class_names: Sequence[str],
        keys: Sequence[str],
        confusion_matrix: np.ndarray,
        scores: dict[str, np.ndarray],
        averages: dict[str, dict[str, float]],
    ) -> None:
        self._class_names = tuple(str(c) for c in class_names)
        matrix = np.array(confusion_matrix, dtype=np.int64, copy=True)
        matrix.setflags(write=False)
        self._matrix = matrix
        support = matrix.sum(axis=1)
        self._per_class = {
            name: {
                **{metric: float(scores[metric][c]) for metric in _PER_CLASS},
                "support": int(support[c]),
            }
            for c, name in enumerate(self._class_names)
        }
        self._macro = {metric: float(averages["macro"][metric]) for metric in _AVERAGED}
        self._weighted = {metric: float(averages["weighted"][metric]) for metric in _AVERAGED}
        self._flat = self._flatten(keys)

    def _flatten(self, keys):
        flat = {"accuracy": self.accuracy}
        for average, values in (("macro", self._macro), ("weighted", self._weighted)):
            for metric in ("f1", "precision", "recall"):
                flat[f"{average}_{metric}"] = values[metric]
        flat["macro_auc"] = self._macro["auc"]
        flat["weighted_auc"] = self._weighted["auc"]
        for metric in ("recall", "auc"):
            for key, name in zip(keys, self._class_names, strict=True):
                flat[f"{metric}_{key}"] = self._per_class[name][metric]
        return flat

    # -- Mapping ---------------------------------------------------------
    def __getitem__(self, key: str) -> float:
        return self._flat[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._flat)

    def __len__(self) -> int:
        return len(self._flat)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{key}={self._flat[key]:.4f}" for key in ("accuracy", "macro_f1", "macro_auc")
        )
        return f"ClassificationReport(n={self.n}, classes={list(self.class_names)}, {shown})"

    # -- attributes ------------------------------------------------------
    @property
    def class_names(self) -> tuple[str, ...]:
        return self._class_names

    @property
    def n(self) -> int:
        return int(self._matrix.sum())

    @property
    def accuracy(self) -> float:
        return self._macro["accuracy"]

    @property
    def balanced_accuracy(self) -> float:
        return self._macro["recall"]

    @property
    def macro(self) -> dict[str, float]:
        return dict(self._macro)

    @property
    def weighted(self) -> dict[str, float]:
        return dict(self._weighted)

    @property
    def per_class(self) -> dict[str, dict[str, Any]]:
        return {name: dict(values) for name, values in self._per_class.items()}

    @property
    def confusion_matrix(self) -> np.ndarray:
        return self._matrix

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready Python types (NaN stays `float('nan')`).

        Returns:
            `{"n", "macro", "weighted", "balanced_accuracy", "per_class",
            "confusion_matrix"}`; the matrix as a list of lists of ints.
        """
        return {
            "n": self.n,
            "macro": self.macro,
            "weighted": self.weighted,
            "balanced_accuracy": self.balanced_accuracy,
            "per_class": self.per_class,
            "confusion_matrix": self._matrix.tolist(),
        }


# --------------------------------------------------------------------------
# The function
# --------------------------------------------------------------------------


def _compute(y_true, y_prob, class_names, zero_division, from_logits):
    """Returns (report, names of the classes whose AUC is undefined)."""
    zero_division = check.zero_division(zero_division)
    from_logits = check.boolean("from_logits", from_logits)
    prob = _as_probabilities(y_prob, from_logits)
    n, k = prob.shape
    names, keys = _class_names(class_names, k)
    labels = _as_labels(y_true, k, n)
    pred = np.argmax(prob, axis=1)
    matrix = np.bincount(labels * k + pred, minlength=k * k).reshape(k, k)
    tp, predicted, support = np.diag(matrix), matrix.sum(axis=0), matrix.sum(axis=1)
    scores = {
        "precision": _divide(tp, predicted, zero_division),
        "recall": _divide(tp, support, zero_division),
        "f1": _divide(2 * tp, support + predicted, zero_division),
        "auc": _one_vs_rest_aucs(labels, prob, support),
    }
    accuracy = float(np.mean(pred == labels))
    macro_auc, weighted_auc = _averaged_auc(scores["auc"], support)
    averages = {"macro": {"accuracy": accuracy, "auc": macro_auc}}
    averages["weighted"] = {"accuracy": accuracy, "auc": weighted_auc}
    for metric in ("precision", "recall", "f1"):
        averages["macro"][metric] = _nan_average(scores[metric])
        averages["weighted"][metric] = _nan_average(scores[metric], support)
    undefined = [keys[c] for c in range(k) if np.isnan(scores["auc"][c])]
    return ClassificationReport(names, keys, matrix, scores, averages), undefined


def _undefined_auc_message(undefined, where):
    return (
        f"{where}: one-vs-rest AUC is undefined for class(es) {undefined}: the labels "
        "hold no positive (class absent) or no negative example of them, so no ROC "
        "curve exists. Their per-class AUC and the macro AUC are NaN; the weighted "
        "AUC averages the defined classes by support (an absent class has weight 0) "
        "and is NaN if a present class is undefined."
    )


def classification_metrics(
    y_true: Any,
    y_prob: Any,
    class_names: Sequence[str] | None = None,
    *,
    zero_division: float = 0.0,
    from_logits: bool = False,
) -> ClassificationReport:
    """Computes the paper's classification metrics from predicted probabilities.

    Roy & Khurana (ACM SAC 2023) report, macro (Table 1) and weighted
    (Table 2): F1, accuracy, precision, recall and AUC. This returns all of
    them, per-class values with support, and the confusion matrix. The
    predicted class is `argmax(y_prob)`. The values are scikit-learn's:

    - `accuracy`: `accuracy_score`;
    - `{macro,weighted}` precision / recall / F1:
      `precision_recall_fscore_support(labels=range(K), average=...,
      zero_division=zero_division)`; `balanced_accuracy` is the macro recall;
    - per-class AUC: one-vs-rest `roc_auc_score(y == c, y_prob[:, c])` (the
      Mann-Whitney statistic, tied scores counting one half), averaged
      uniformly (macro) or by class support (weighted);
    - `confusion_matrix(labels=range(K))`.

    **Absent classes.** A class with no positive (absent from `y_true`) or no
    negative example has no ROC curve: its AUC is NaN, the macro AUC is NaN
    (never an average over the other classes), and the weighted AUC gives an
    absent class weight 0 (so it stays defined; NaN if a present class is
    undefined). Its precision / recall / F1 take `zero_division`. A warning
    names the classes.

    Args:
        y_true: Integer labels `(n,)` or one-hot `(n, K)` (a single 1 per row;
            other rows are refused, naming the row).
        y_prob: Predicted probabilities `(n, K)` (a sigmoid output `(n,)` or
            `(n, 1)` is read as two classes).
        class_names: Optional sequence of K names. Defaults to `"0"`, `"1"`, ...
        zero_division: Value of precision / recall / F1 where it divides by
            zero (a class never predicted or absent): `0.0` (default), `1.0`,
            or `float("nan")` to leave such classes out of the averages.
        from_logits: Whether `y_prob` holds logits (softmax, or sigmoid for
            one column, is applied first). Defaults to `False`.

    Returns:
        A `ClassificationReport`.

    Raises:
        ValueError: On shapes that do not match, labels outside `[0, K)`,
            non-finite predictions, single-column scores outside [0, 1]
            without `from_logits=True`, a non-bool `from_logits`, a wrong
            number of class names or a bare string as `class_names`, or an
            invalid `zero_division`.

    Example:

    >>> import numpy as np
    >>> y = np.array([0, 1, 2, 2])
    >>> p = np.array([[.8, .1, .1], [.2, .7, .1], [.1, .2, .7], [.5, .3, .2]])
    >>> m = classification_metrics(y, p, class_names=["a", "b", "c"])
    >>> round(m["accuracy"], 2), round(m["macro_f1"], 3), m["recall_c"]
    (0.75, 0.778, 0.5)
    >>> m.per_class["c"]
    {'precision': 1.0, 'recall': 0.5, 'f1': 0.6666666666666666, 'auc': 1.0, 'support': 2}
    """
    report, undefined = _compute(y_true, y_prob, class_names, zero_division, from_logits)
    if undefined:
        warnings.warn(_undefined_auc_message(undefined, "classification_metrics"), stacklevel=2)
    return report


# --------------------------------------------------------------------------
# The callback
# --------------------------------------------------------------------------


# `tf.data.INFINITE_CARDINALITY`, without importing TensorFlow.
_TF_INFINITE = -1


def _is_endless_tf_dataset(data):
    module = type(data).__module__ or ""
    if not module.startswith("tensorflow") or not hasattr(data, "cardinality"):
        return False
    return int(data.cardinality()) == _TF_INFINITE


def _check_validation_data(validation_data):
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
    elif _is_endless_tf_dataset(validation_data):
        raise ValueError(
            "Expected validation_data that ends (the metrics are computed once the model has "
            "predicted all of it, at every epoch end). Received: a tf.data.Dataset of "
            "infinite cardinality (e.g. `.repeat()` without a count), which would never end. "
            "Pass the dataset before `.repeat()`, or `dataset.take(n)`."
        )
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


@keras.saving.register_keras_serializable(package="keras_freeze")
class ClassificationMetrics(keras.callbacks.Callback):
    """Logs the paper's per-class metrics on validation data at every epoch end.

    At the end of each epoch the model predicts on `validation_data`, and
    `classification_metrics` turns the predictions into
    `{prefix}accuracy`, `{prefix}macro_f1`, `{prefix}weighted_f1`,
    `{prefix}macro_precision`, `{prefix}weighted_precision`,
    `{prefix}macro_recall`, `{prefix}weighted_recall`, `{prefix}macro_auc`,
    `{prefix}weighted_auc`, `{prefix}recall_<class>` and `{prefix}auc_<class>`
    (e.g. `val_recall_COVID`, or `val_recall_0` without class names). They are
    written into the epoch `logs`, so `History`, `EarlyStopping`,
    `ModelCheckpoint`, `CSVLogger` and `ReduceLROnPlateau` can monitor them.
    The full `ClassificationReport` of the last epoch is `self.last_report`.

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
        zero_division: See `classification_metrics`. Defaults to `0.0`.
        from_logits: Whether the model outputs logits. Defaults to `False`.
        verbose: `0` (silent) or `1` (print the metrics each epoch).

    Raises:
        ValueError: On validation data of an unsupported kind (a one-shot
            iterator, an endless `tf.data.Dataset`), or invalid arguments
            (e.g. a non-bool `from_logits`, a bare string as `class_names`).

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
        validation_data: Any,
        class_names: Sequence[str] | None = None,
        batch_size: int | None = None,
        prefix: str = "val_",
        keep_confusion_matrix: bool = True,
        zero_division: float = 0.0,
        from_logits: bool = False,
        verbose: int = 0,
    ) -> None:
        super().__init__()
        _check_validation_data(validation_data)
        if not isinstance(prefix, str):
            raise ValueError(f"Expected prefix to be a string. Received: prefix={prefix!r}")
        self.validation_data = validation_data
        self.class_names = None if class_names is None else check.name_list(class_names)
        self.batch_size = check.integer("batch_size", batch_size, 1, allow_none=True)
        self.prefix = prefix
        self.keep_confusion_matrix = bool(keep_confusion_matrix)
        self.zero_division = check.zero_division(zero_division)
        self.from_logits = check.boolean("from_logits", from_logits)
        self.verbose = int(verbose)
        self.confusion_matrix = None
        self.last_metrics = None
        self.last_report = None
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
            x = keras.tree.map_structure(check.to_numpy, batch[0])
            ys.append(check.to_numpy(batch[1]))
            probs.append(keras.ops.convert_to_numpy(self.model.predict_on_batch(x)))
        if not ys:
            raise ValueError("Expected validation_data with at least one batch. Received: none.")
        return np.concatenate(ys), np.concatenate(probs)

    def _write_logs(self, metrics, logs):
        clashes = [self.prefix + key for key in metrics if self.prefix + key in logs]
        if clashes and not self._warned_keys:
            self._warned_keys = True
            warnings.warn(
                f"ClassificationMetrics: keys {clashes} are already in the logs (from "
                "compile metrics or another callback) and are left as they are. Pass "
                "another prefix, e.g. prefix='val_sk_', to log these metrics too.",
                stacklevel=3,
            )
        for key, value in metrics.items():
            if self.prefix + key not in logs:
                logs[self.prefix + key] = value

    def on_epoch_end(self, epoch, logs=None):
        y_true, y_prob = self._predict()
        report, undefined = _compute(
            y_true, y_prob, self.class_names, self.zero_division, self.from_logits
        )
        if undefined and not self._warned_auc:
            self._warned_auc = True
            warnings.warn(_undefined_auc_message(undefined, "ClassificationMetrics"), stacklevel=2)
        metrics = dict(report)
        self.last_report = report
        self.last_metrics = metrics
        if self.keep_confusion_matrix:
            self.confusion_matrix = np.array(report.confusion_matrix)
        if logs is not None:
            self._write_logs(metrics, logs)
        if self.verbose:
            shown = ", ".join(f"{self.prefix}{k}={v:.4f}" for k, v in metrics.items())
            print(f"ClassificationMetrics: epoch {epoch + 1}: {shown}")

    def get_config(self) -> dict[str, Any]:
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
    def from_config(cls, config: dict[str, Any]) -> ClassificationMetrics:
        config = dict(config)
        if "validation_data" not in config:
            raise ValueError(
                "ClassificationMetrics.from_config needs the data, which get_config leaves "
                "out. Received: config without 'validation_data'. Use "
                "ClassificationMetrics.from_config({**config, 'validation_data': (x, y)})."
            )
        return cls(**config)
