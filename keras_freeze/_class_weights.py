"""Class weights computed from the labels: balanced, effective number, inverse square root.

`class_weights` turns the training labels into one weight per class, for
`model.fit(class_weight=...)` or as the `alpha` of the attention-weighted
losses (`AttentionWeightedCCE(alpha=class_weights(y))`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from keras_freeze import _validation as check
from keras_freeze._estimator import _batch_source

__all__ = ["ClassWeights", "class_weights"]

METHODS = ("balanced", "effective_number", "inverse_sqrt")


@dataclasses.dataclass(frozen=True)
class ClassWeights:
    """One weight per class, with the counts they were computed from.

    Accepted wherever keras-freeze takes `alpha` (it has a `.weights`
    attribute) and by NumPy (`np.asarray(w)`); `to_class_weight()` gives the
    dict `model.fit(class_weight=...)` expects.

    Attributes:
        weights: Tuple of K positive Python floats, in class order.
        counts: Tuple of K sample counts per class.
        method: `"balanced"`, `"effective_number"` or `"inverse_sqrt"`.
        beta: The `beta` of `"effective_number"` (`None` for the others).
    """

    weights: tuple
    counts: tuple
    method: str
    beta: float | None = None

    def to_class_weight(self) -> dict[int, float]:
        """Returns `{class_index: weight}`, the `class_weight` of `model.fit`."""
        return dict(enumerate(self.weights))

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.weights, dtype=dtype or np.float64)

    def __len__(self):
        return len(self.weights)

    def __iter__(self):
        return iter(self.weights)

    def __getitem__(self, index):
        return self.weights[index]


def _labels_of_batches(labels, num_classes):
    """Integer labels and the one-hot width from an iterable of `(x, y, ...)` batches."""
    batches, _ = _batch_source(labels)
    parts, width = [], None
    for i, batch in enumerate(batches):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(
                "Expected a data set of (x, y) or (x, y, sample_weight) batches. Received: "
                f"batch {i} of type {type(batch).__name__}"
            )
        y, k = check.class_labels(batch[1], num_classes or width, where=f", in batch {i}")
        width = width or k
        parts.append(y)
    if not parts:
        raise ValueError("Expected labels for at least one sample. Received: an empty data set.")
    return np.concatenate(parts), width


def _is_array_like(labels):
    if isinstance(labels, np.ndarray) or hasattr(labels, "shape"):
        return True
    if isinstance(labels, (list, tuple)):
        return (
            not labels
            or not isinstance(labels[0], (tuple, list, dict))
            or (isinstance(labels[0], (tuple, list)) and not hasattr(labels[0][0], "__len__"))
        )
    return False


def _counts(labels, num_classes):
    """Per-class counts (int64, length K) of integer labels, one-hot rows or batches."""
    if _is_array_like(labels):
        y, width = check.class_labels(labels, num_classes)
    else:
        y, width = _labels_of_batches(labels, num_classes)
    if y.size == 0:
        raise ValueError("Expected labels for at least one sample. Received: no labels.")
    k = num_classes or width or int(y.max()) + 1
    if k > y.size:  # some class is empty: say so before allocating k counts
        present = np.unique(y)
        missing = np.setdiff1d(np.arange(min(k, present.size + 3)), present)[:3].tolist()
        more = f" and {k - present.size - len(missing):_} more" if k - present.size > 3 else ""
        raise ValueError(
            f"Expected every class to have samples. Received: no sample of class(es) "
            f"{missing}{more} among {k:_} classes: {y.size} label(s), up to "
            f"{int(y.max()):_}, so {k - present.size:_} classes are empty. Labels out of "
            "range? Relabel the classes to 0..K-1 (or pass the right `num_classes`)."
        )
    counts = np.bincount(y, minlength=k)
    absent = np.flatnonzero(counts == 0).tolist()
    if absent:
        raise ValueError(
            f"Expected every class to have samples. Received: no sample of class(es) "
            f"{absent} among {k} classes (counts {counts.tolist()}). A weight for a class "
            "absent from the labels is undefined (infinite); drop the class or pass labels "
            "that contain it."
        )
    return counts


def class_weights(
    labels: Any,
    method: str = "balanced",
    beta: float = 0.9999,
    *,
    num_classes: int | None = None,
) -> ClassWeights:
    """Class weights from the labels, for `class_weight=` or a loss's `alpha`.

    With `n_c` samples of class c, `n` samples and `K` classes:

    - `"balanced"`: `n / (K * n_c)`, scikit-learn's
      `compute_class_weight("balanced")` (its weighted classes each weigh
      `n / K` in total; not normalised).
    - `"effective_number"`: Cui et al., "Class-Balanced Loss Based on
      Effective Number of Samples", CVPR 2019: `(1 - beta) / (1 - beta ** n_c)`,
      normalised to sum to `K`. `beta = 0` gives every class weight 1; as
      `beta -> 1` the weights tend to the inverse frequencies.
    - `"inverse_sqrt"`: `1 / sqrt(n_c)`, normalised to sum to `K` (a milder
      reweighting, as in Mahajan et al. 2018 and Mikolov et al.'s
      subsampling).

    Every class must have at least one sample: a class absent from the
    labels has no finite weight, and is refused with its index.

    Args:
        labels: Integer labels `(n,)`, one-hot rows `(n, K)`, or a data set:
            a `tf.data.Dataset`, `keras.utils.PyDataset` or any iterable of
            `(x, y)` / `(x, y, sample_weight)` batches, read once to the end.
        method: `"balanced"` (default), `"effective_number"` or
            `"inverse_sqrt"`.
        beta: Hyper-parameter of `"effective_number"`, a real number in
            `[0, 1)` (int, float, `Fraction`, `Decimal`, NumPy scalar).
            Defaults to `0.9999`, as in the paper for long-tailed data sets.
        num_classes: Number of classes K. Defaults to the one-hot width, or
            `max(label) + 1` for integer labels.

    Returns:
        A `ClassWeights` (`.weights`, `.counts`, `.to_class_weight()`).

    Raises:
        ValueError: On an unknown `method`, `beta` outside `[0, 1)`, labels
            that are not integers in `[0, K)` or one-hot rows, no labels, or a
            class with no sample.

    Example:

    >>> from keras_freeze import AttentionWeightedCCE
    >>> w = class_weights([0, 0, 0, 1])
    >>> w.weights, w.to_class_weight()
    ((0.6666666666666666, 2.0), {0: 0.6666666666666666, 1: 2.0})
    >>> loss = AttentionWeightedCCE(alpha=w)
    >>> round(sum(class_weights([0, 0, 0, 1], "effective_number", beta=0.5)), 12)
    2.0
    """
    check.one_of("method", method, METHODS)
    received_beta, beta = beta, check.as_real(beta)
    if method == "effective_number" and (beta is None or not 0 <= beta < 1):
        raise ValueError(
            "Expected beta in [0, 1), a real number (an int, float, Fraction, Decimal or 0-d "
            f"NumPy array; not a bool). Received: beta={received_beta!r}"
        )
    num_classes = check.integer("num_classes", num_classes, 1, allow_none=True)
    counts = _counts(labels, num_classes)
    k = len(counts)
    if method == "balanced":
        weights = int(counts.sum()) / (k * counts.astype(np.float64))
    elif method == "effective_number":
        weights = (1.0 - beta) / (1.0 - np.power(float(beta), counts.astype(np.float64)))
        weights = weights / weights.sum() * k
    else:
        weights = 1.0 / np.sqrt(counts.astype(np.float64))
        weights = weights / weights.sum() * k
    return ClassWeights(
        weights=tuple(float(w) for w in weights),
        counts=tuple(int(c) for c in counts),
        method=method,
        beta=float(beta) if method == "effective_number" else None,
    )
