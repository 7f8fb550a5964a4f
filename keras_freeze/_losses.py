"""The attention-based loss of the paper (eq. 1) as first-class Keras losses.

Roy & Khurana, "Mobile Freeze-Net with Attention-based Loss Function for
Covid-19 Detection from an Imbalanced CXR Dataset", ACM SAC 2023
(https://doi.org/10.1145/3555776.3577825), train with a weighted categorical
cross-entropy whose per-sample value is

    loss = -sum_c alpha_c * y_c * log(p_c)                                  (1)

with one attention weight `alpha_c` per class (eqs. 2-3, see
`keras_freeze.estimate_class_attention` and `keras_freeze.attention_weights`).

This module follows Keras' own `CategoricalCrossentropy` exactly: the pure
per-sample functions `attention_weighted_cce` / `sparse_attention_weighted_cce`
never reduce, and the `keras.losses.Loss` subclasses leave reduction,
`sample_weight`, masks and dtype to the base class. With every `alpha_c = 1`
the losses equal `keras.losses.CategoricalCrossentropy` /
`SparseCategoricalCrossentropy`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_freeze import _keras_compat as compat
from keras_freeze import _validation as check

__all__ = [
    "PAPER_ALPHA",
    "PAPER_CLASS_NAMES",
    "AttentionWeightedCCE",
    "CustomWeightedBalancedCCE",
    "SparseAttentionWeightedCCE",
    "attention_weighted_cce",
    "custom_weighted_balanced_cce",
    "cwbcce_weights",
    "sparse_attention_weighted_cce",
]

#: The authors' published attention weights (eq. 3), in `PAPER_CLASS_NAMES` order.
PAPER_ALPHA = (0.00525, 0.00579, 0.00566, 0.00513)
#: Class order of `PAPER_ALPHA`: the COVID-19 Radiography Database folders.
PAPER_CLASS_NAMES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")

# The range of each `alpha` (and CWBCCE weight), so that the loss of a batch
# neither overflows nor vanishes in float32. A per-sample loss on probabilities
# lies in [-log(1 - eps), -log(eps)] = [1e-7, 16.12] times alpha (eps = 1e-7):
# with alpha >= 1e-30 every non-zero per-sample loss stays a normal float32
# (>= 1e-37 > 1.18e-38), and with alpha <= 1e30 the sum of a batch of up to
# 10**7 samples stays below float32's 3.4e38.
_ALPHA_MIN = 1e-30
_ALPHA_MAX = 1e30
# float16 tops out at 65504: a float16 loss (the `mixed_float16` policy, or
# float16 `y_pred` to the functions) needs alpha * 16.12 <= 65504.
_ALPHA_MAX_FLOAT16 = 4000.0
# The largest per-sample loss on probabilities: -log(epsilon).
_MAX_CCE = float(-np.log(1e-7))

# Inputs in these dtypes are computed in float32 (and the result cast back),
# so that the softmax / log / weighted sum never overflow or underflow.
_LOW_PRECISION = ("float16", "bfloat16")


# --------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------


def _resolve_alpha(alpha):
    """Returns `alpha` as a tuple of K positive finite Python floats.

    Accepts a sequence / array / tensor of numbers, any object with a
    `.weights` attribute (e.g. `ClassAttention`), or the string `"paper"`.
    """
    received = alpha
    if isinstance(alpha, str):
        if alpha.lower() == "paper":
            return tuple(float(a) for a in PAPER_ALPHA)
        raise ValueError(
            'Expected `alpha` to be "paper", a sequence of positive finite floats (one per '
            f"class) or an object with a `.weights` attribute. Received: alpha={alpha!r}"
        )
    if alpha is None:
        raise ValueError(
            "Expected `alpha` to be a sequence of positive finite floats (one per class), "
            'a `ClassAttention` or "paper". Received: alpha=None'
        )
    if hasattr(alpha, "weights") and not isinstance(alpha, (list, tuple, np.ndarray)):
        # Duck-typed `ClassAttention` (or anything exposing per-class weights).
        alpha = alpha.weights
    try:
        values = np.asarray(alpha)
    except Exception:  # e.g. a torch tensor that requires grad
        try:
            values = np.asarray(ops.convert_to_numpy(alpha))
        except Exception as e:
            raise ValueError(
                "Expected `alpha` to be a sequence of positive finite floats (one per class). "
                f"Received: alpha={received!r}"
            ) from e
    if values.dtype == bool or not (
        np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)
    ):
        raise ValueError(
            "Expected `alpha` to be a sequence of positive finite floats (one per class). "
            f"Received: alpha={received!r} (dtype {values.dtype})"
        )
    if values.ndim != 1:
        hint = f" Use alpha=[{float(values)}] * num_classes." if values.ndim == 0 else ""
        raise ValueError(
            "Expected `alpha` to be one-dimensional, one weight per class. "
            f"Received: alpha={received!r} with shape {values.shape}.{hint}"
        )
    if values.size == 0:
        raise ValueError(
            "Expected `alpha` to hold one positive weight per class. "
            f"Received: an empty alpha={received!r}"
        )
    values = values.astype(np.float64)
    _check_alpha_values(values)
    return tuple(float(v) for v in values)


def _check_alpha_values(values):
    """Raises unless every weight is a positive finite number, normal in float32."""
    bad = [i for i, v in enumerate(values) if not (math.isfinite(v) and v > 0)]
    if bad:
        raise ValueError(
            "Expected every entry of `alpha` to be a finite number > 0. "
            f"Received: alpha={values.tolist()} (invalid at index {bad}: "
            f"{[values[i].item() for i in bad]})"
        )
    bad = [i for i, v in enumerate(values) if not _ALPHA_MIN <= v <= _ALPHA_MAX]
    if bad:
        raise ValueError(
            "Expected every entry of `alpha` to be a finite number > 0 in float32 range "
            f"[{_ALPHA_MIN:g}, {_ALPHA_MAX:g}], so that the loss of a batch can neither "
            "vanish nor overflow in float32 (1.2e-38 * a small loss rounds to 0, weighting "
            f"the class by nothing; 3e38 * a batch's loss is inf). Received: "
            f"alpha={values.tolist()} (out of range at index {bad}: "
            f"{[values[i].item() for i in bad]}). Rescale alpha: only the ratios between "
            "classes and the overall scale of the loss matter."
        )


def _check_float16_range(alpha, dtype, name="alpha"):
    """Raises if a float16 loss could overflow: `max(alpha) * -log(eps)` > 65504."""
    if dtype != "float16" or max(alpha) <= _ALPHA_MAX_FLOAT16:
        return
    raise ValueError(
        f"Expected every entry of `{name}` <= {_ALPHA_MAX_FLOAT16:g} for a float16 loss: a "
        f"sample's loss reaches {name} * {_MAX_CCE:.2f} and float16 tops out at 65504. "
        f"Received: {name}={list(alpha)} with dtype float16. Rescale {name} (only the "
        "ratios between classes matter) or use a float32 loss."
    )


def _float_dtype(dtype):
    """Refuses a loss dtype that is not floating point (as Keras' cross-entropies need)."""
    name = keras.backend.standardize_dtype(dtype)
    if "float" not in name:
        raise ValueError(
            "Expected a floating-point loss `dtype` (a cross-entropy is a real number; an "
            f"integer dtype would truncate it to 0). Received: dtype={name!r}. Pass "
            "dtype='float32' (the default), 'float16', 'bfloat16' or 'float64'."
        )
    return name


def _check_options(from_logits, label_smoothing, axis):
    check.boolean("from_logits", from_logits)
    if (
        isinstance(label_smoothing, bool)
        or not isinstance(label_smoothing, numbers.Real)
        or not (0.0 <= float(label_smoothing) <= 1.0)
    ):
        raise ValueError(
            f"Expected `label_smoothing` in [0, 1]. Received: label_smoothing={label_smoothing!r}"
        )
    if not check.is_integer(axis):
        raise ValueError(
            f"Expected `axis` to be an int. Received: axis={axis!r} of type {type(axis)}"
        )


def _shape(x):
    return tuple(None if d is None else int(d) for d in x.shape)


def _canonical_axis(axis, rank, y_pred_shape):
    if rank < 1 or not -rank <= axis < rank:
        raise ValueError(
            f"Expected `axis` in [-{rank}, {rank}) for y_pred.shape={y_pred_shape}. "
            f"Received: axis={axis}"
        )
    return axis % rank


def _check_alpha_length(alpha, y_pred_shape, axis, name="alpha"):
    """One weight per class; ``name`` is the argument the error names (`alpha`, `weights`)."""
    num_classes = y_pred_shape[axis]
    if num_classes is not None and num_classes != len(alpha):
        raise ValueError(
            f"Expected `{name}` to hold one weight per class: {num_classes} values for "
            f"y_pred.shape={y_pred_shape} (class axis={axis}). Received: {name} of length "
            f"{len(alpha)}, {name}={list(alpha)}"
        )


def _compatible(a, b):
    if len(a) != len(b):
        return False
    return all(x is None or y is None or x == y for x, y in zip(a, b, strict=True))


def _float_input(x):
    x = ops.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if "float" not in dtype:
        x = ops.cast(x, keras.config.floatx())
    return x


def _maybe_keras_logits(y_pred, from_logits, fn_name):
    """Mirrors Keras on TensorFlow: use the logits that `softmax` attached.

    On the TensorFlow backend `keras.activations.softmax` stores its input on
    the output tensor (`_keras_logits`) and Keras' cross-entropies compute from
    those logits instead of the saturating probabilities. Doing the same keeps
    `alpha = 1` identical to `CategoricalCrossentropy` there; the other
    backends' cross-entropies ignore the attribute, and so does this loss.
    """
    if keras.backend.backend() != "tensorflow":
        return y_pred, from_logits
    logits = compat.softmax_logits(y_pred)
    if logits is None:
        return y_pred, from_logits
    if from_logits:
        warnings.warn(
            f'"`{fn_name}` received `from_logits=True`, but the `y_pred` argument was '
            "produced by a Softmax activation and thus does not represent logits. "
            "Was this intended?",
            stacklevel=3,
        )
    return logits, True


# --------------------------------------------------------------------------
# Core math (no validation of alpha; callers pass a validated tuple)
# --------------------------------------------------------------------------


def _cast(x, dtype):
    if keras.backend.standardize_dtype(x.dtype) == dtype:
        return x
    return ops.cast(x, dtype)


def _log_probs(y_pred, from_logits, axis):
    # Not `keras.ops.categorical_crossentropy(alpha * y, ...)`: TensorFlow's fused
    # softmax_cross_entropy_with_logits assumes targets that sum to 1 in its
    # gradient (softmax - labels), which `alpha * y` does not.
    if from_logits:
        return ops.log_softmax(y_pred, axis=axis)
    # As Keras: renormalise so each sample's probabilities sum to 1, then
    # clip to [eps, 1 - eps] before the log.
    # An all-zero row (sum 0) is left at 0, i.e. clipped to eps below: a finite
    # loss of -alpha_c * log(eps) where Keras divides 0 by 0 (NaN).
    eps = keras.config.epsilon()
    total = ops.sum(y_pred, axis=axis, keepdims=True)
    y_pred = y_pred / ops.where(total > 0, total, ops.ones_like(total))
    y_pred = ops.clip(y_pred, eps, 1.0 - eps)
    return ops.log(y_pred)


def _check_numeric_labels(y_true, fn_name):
    """Refuses string (or other non-numeric) labels before any backend sees them."""
    dtype = getattr(y_true, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(y_true).dtype
        except (TypeError, ValueError):  # ragged nested lists: let the backend say
            return
    try:
        name = keras.backend.standardize_dtype(dtype)
    except (TypeError, ValueError):
        name = str(dtype)
    if name == "bool" or name.startswith(("int", "uint", "float", "bfloat")):
        return
    sparse = fn_name.startswith("sparse")
    expected = "integer class indices" if sparse else "one-hot (or soft) float labels"
    raise ValueError(
        f"Expected numeric `y_true` for `{fn_name}`: {expected}. Received: y_true of dtype "
        f"{name}. Map string labels to class indices first (e.g. "
        "`keras.layers.StringLookup(vocabulary=class_names, num_oov_indices=0)`"
        f"{'' if sparse else ', then `keras.ops.one_hot`'})."
    )


def _prepare(y_true, y_pred, from_logits, axis, fn_name):
    """Tensors, shapes and the canonical class axis, shared by both losses."""
    _check_numeric_labels(y_true, fn_name)
    y_pred, from_logits = _maybe_keras_logits(_float_input(y_pred), from_logits, fn_name)
    y_true = ops.convert_to_tensor(y_true)
    pred_shape = _shape(y_pred)
    axis = _canonical_axis(axis, len(pred_shape), pred_shape)
    return y_true, y_pred, from_logits, pred_shape, axis


def _compute_dtype(y_pred):
    """float16 / bfloat16 inputs are computed in float32; others as they are."""
    dtype = keras.backend.standardize_dtype(y_pred.dtype)
    return "float32" if dtype in _LOW_PRECISION else dtype


def _weighted_cce(targets, y_pred, alpha, from_logits, axis, compute_dtype):
    """`-sum_c alpha_c * targets_c * log p_c`, returned in `y_pred`'s dtype."""
    out_dtype = keras.backend.standardize_dtype(y_pred.dtype)
    _check_float16_range(alpha, out_dtype)
    log_prob = _log_probs(_cast(y_pred, compute_dtype), from_logits, axis)
    bshape = [1] * len(_shape(y_pred))
    bshape[axis] = len(alpha)
    alpha_t = ops.convert_to_tensor(np.reshape(np.asarray(alpha, compute_dtype), bshape))
    return _cast(-ops.sum(targets * log_prob * alpha_t, axis=axis), out_dtype)


def _concrete(x):
    """`x` as a NumPy array when its values are known now (eager), else None (traced)."""
    try:
        return np.asarray(ops.convert_to_numpy(x))
    except Exception:  # noqa: BLE001 - a symbolic tensor or a tracer: values unknown
        return None


def _where(index):
    return "y_true[" + ", ".join(str(int(i)) for i in index) + "]"


def _check_targets(y_true):
    """Eager calls: refuses negative or non-finite targets (soft labels are fine)."""
    y = _concrete(y_true)
    if y is None or y.dtype.kind not in "fiu":
        return
    bad = ~np.isfinite(y) | (y < 0) if y.dtype.kind == "f" else y < 0
    if np.any(bad):
        index = tuple(np.argwhere(bad)[0])
        raise ValueError(
            "Expected targets >= 0 (one-hot or soft labels, e.g. after label smoothing "
            f"or mixup). Received: {_where(index)}={y[index].item()!r} "
            f"({int(np.count_nonzero(bad))} negative or non-finite value(s))."
        )


def _check_sparse_labels(y_true, num_classes):
    """Eager calls: refuses labels that are not whole numbers in [0, K) (as Keras)."""
    y = _concrete(y_true)
    if y is None:
        return
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.floor(np.where(np.isfinite(y), y, 0)))
    elif y.dtype.kind in "iub":
        bad = np.zeros(y.shape, dtype=bool)
    else:
        raise ValueError(f"Expected integer class labels. Received: y_true.dtype={y.dtype}")
    bad |= ~bad & ((y < 0) | (y >= num_classes))
    if np.any(bad):
        index = tuple(np.argwhere(bad)[0])
        raise ValueError(
            f"Expected integer class labels in [0, {num_classes - 1}] (one per class of "
            f"y_pred). Received: {_where(index)}={y[index].item()!r} "
            f"({int(np.count_nonzero(bad))} invalid label(s)). A label outside the classes "
            "or between two classes has no class weight; Keras' "
            "SparseCategoricalCrossentropy refuses it too."
        )


def _nan_where_invalid(loss, y_true, num_classes):
    """Traced calls (no raising possible): the loss of an invalid label is NaN, never 0."""
    valid = ops.logical_and(ops.greater_equal(y_true, 0), ops.less(y_true, num_classes))
    if "float" in keras.backend.standardize_dtype(y_true.dtype):
        valid = ops.logical_and(valid, ops.equal(y_true, ops.floor(y_true)))
    return ops.where(valid, loss, ops.full_like(loss, np.nan))


def _categorical(y_true, y_pred, alpha, from_logits, label_smoothing, axis, name="alpha"):
    y_true, y_pred, from_logits, pred_shape, axis = _prepare(
        y_true, y_pred, from_logits, axis, "attention_weighted_cce"
    )
    true_shape = _shape(y_true)
    if not _compatible(true_shape, pred_shape):
        raise ValueError(
            "Expected `y_true` (one-hot or soft labels along the class axis) and `y_pred` to "
            f"have the same shape. Received: y_true.shape={true_shape}, "
            f"y_pred.shape={pred_shape}. For integer labels use SparseAttentionWeightedCCE."
        )
    _check_alpha_length(alpha, pred_shape, axis, name)
    _check_targets(y_true)
    compute_dtype = _compute_dtype(y_pred)
    y_true = _cast(y_true, compute_dtype)
    if label_smoothing:
        num_classes = ops.cast(ops.shape(y_pred)[axis], compute_dtype)
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / num_classes
    return _weighted_cce(y_true, y_pred, alpha, from_logits, axis, compute_dtype)


def _sparse(y_true, y_pred, alpha, from_logits, axis):
    y_true, y_pred, from_logits, pred_shape, axis = _prepare(
        y_true, y_pred, from_logits, axis, "sparse_attention_weighted_cce"
    )
    true_shape = _shape(y_true)
    if len(true_shape) == len(pred_shape) and true_shape[axis] == 1:
        y_true = ops.squeeze(y_true, axis=axis)
        true_shape = _shape(y_true)
    expected = pred_shape[:axis] + pred_shape[axis + 1 :]
    if not _compatible(true_shape, expected):
        raise ValueError(
            "Expected integer `y_true` with the shape of `y_pred` without its class axis "
            f"(axis={axis}), i.e. {expected}. Received: y_true.shape={true_shape}, "
            f"y_pred.shape={pred_shape}. For one-hot labels use AttentionWeightedCCE."
        )
    _check_alpha_length(alpha, pred_shape, axis)
    _check_sparse_labels(y_true, len(alpha))
    compute_dtype = _compute_dtype(y_pred)
    one_hot = ops.one_hot(ops.cast(y_true, "int32"), len(alpha), axis=axis, dtype=compute_dtype)
    loss = _weighted_cce(one_hot, y_pred, alpha, from_logits, axis, compute_dtype)
    return _nan_where_invalid(loss, y_true, len(alpha))


# --------------------------------------------------------------------------
# Public per-sample functions
# --------------------------------------------------------------------------


def attention_weighted_cce(
    y_true: Any,
    y_pred: Any,
    alpha: Any,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    axis: int = -1,
) -> Any:
    """Per-sample attention-weighted categorical cross-entropy (eq. 1).

    For each sample, `-sum_c alpha_c * y_c * log(p_c)` over the class axis.
    `p` is `softmax(y_pred)` computed as a stable log-softmax when
    `from_logits=True`; otherwise `y_pred` is renormalised to sum to 1 and
    clipped to `[eps, 1 - eps]` (`eps = keras.config.epsilon()`) before the
    log, exactly as `keras.losses.categorical_crossentropy`. Nothing is
    reduced over the batch. float16 / bfloat16 inputs are computed in float32
    and the result cast back. A row of `y_pred` that is all zeros is clipped
    to `eps` (a finite loss; Keras' cross-entropy gives NaN there). String
    labels are refused: map them to class indices first.

    Soft targets (label smoothing, mixup) are accepted and weighted per class:
    each class's share `y_c` of a target is weighted by that class's `alpha_c`.
    Targets must be >= 0 (checked on concrete, eager inputs).

    Args:
        y_true: One-hot (or soft, non-negative) labels, same shape as
            `y_pred`.
        y_pred: Probabilities, or logits when `from_logits=True`.
        alpha: K positive finite per-class weights, each a normal float32
            (in [1e-30, 1e30], and <= 4000 for a float16 loss, so that the
            loss of a batch neither vanishes nor overflows):
            a sequence / array, an object with a `.weights` attribute
            (`ClassAttention`), or `"paper"` for `PAPER_ALPHA`.
        from_logits: Whether `y_pred` holds logits. Defaults to `False`.
        label_smoothing: Float in [0, 1]; labels become
            `y * (1 - label_smoothing) + label_smoothing / K`. Defaults to 0.
        axis: The class axis. Defaults to -1.

    Returns:
        A tensor of shape `y_pred.shape` without `axis`, one loss per sample.

    Raises:
        ValueError: If `alpha` is empty, not one-dimensional, holds a value
            that is not a positive finite number in [1e-30, 1e30], or
            its length differs from `y_pred.shape[axis]`; if `y_true` and
            `y_pred` shapes differ; if an option is out of range; or, on
            concrete inputs, if a target is negative or not finite.

    Example:

    >>> import keras
    >>> from keras_freeze import attention_weighted_cce
    >>> y_true = [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    >>> y_pred = [[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]]
    >>> loss = attention_weighted_cce(y_true, y_pred, alpha=[1.0, 2.0, 0.5])
    >>> [round(float(v), 4) for v in keras.ops.convert_to_numpy(loss)]
    [0.1026, 1.1513]
    """
    alpha = _resolve_alpha(alpha)
    _check_options(from_logits, label_smoothing, axis)
    return _categorical(y_true, y_pred, alpha, bool(from_logits), float(label_smoothing), axis)


def sparse_attention_weighted_cce(
    y_true: Any, y_pred: Any, alpha: Any, from_logits: bool = False, axis: int = -1
) -> Any:
    """Per-sample attention-weighted cross-entropy for integer labels.

    Equals `attention_weighted_cce(one_hot(y_true), y_pred, alpha, ...)`: for
    each sample `-alpha_y * log(p_y)`, with `p` computed as in
    `attention_weighted_cce` (the same computation as
    `keras.losses.sparse_categorical_crossentropy` when every `alpha_c = 1`).

    Args:
        y_true: Integer class indices in `[0, K)`, shape `y_pred.shape`
            without `axis` (a trailing size-1 class axis is squeezed); whole
            floats such as `2.0` are accepted. A label outside `[0, K)` or not
            a whole number raises a `ValueError` when the labels are concrete
            (eager calls: NumPy, eager TensorFlow / torch tensors, JAX arrays);
            inside a traced step (`model.fit` with a compiled train function),
            where raising is impossible, that sample's loss is NaN, never a
            silent 0.
        y_pred: Probabilities, or logits when `from_logits=True`.
        alpha: K positive finite per-class weights (see
            `attention_weighted_cce`).
        from_logits: Whether `y_pred` holds logits. Defaults to `False`.
        axis: The class axis of `y_pred`. Defaults to -1.

    Returns:
        A tensor of shape `y_pred.shape` without `axis`, one loss per sample.

    Raises:
        ValueError: As `attention_weighted_cce`; if `y_true`'s shape is not
            `y_pred`'s shape without the class axis; on concrete labels, if a
            label is not a whole number in `[0, K)`.

    Example:

    >>> import keras
    >>> from keras_freeze import sparse_attention_weighted_cce
    >>> loss = sparse_attention_weighted_cce([1, 2], [[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]],
    ...                                      alpha=[1.0, 2.0, 0.5])
    >>> [round(float(v), 4) for v in keras.ops.convert_to_numpy(loss)]
    [0.1026, 1.1513]
    """
    alpha = _resolve_alpha(alpha)
    _check_options(from_logits, 0.0, axis)
    return _sparse(y_true, y_pred, alpha, bool(from_logits), axis)


# --------------------------------------------------------------------------
# Loss classes
# --------------------------------------------------------------------------


def _dtype_config(dtype):
    if dtype is None or isinstance(dtype, str):
        return dtype
    name = getattr(dtype, "name", None)  # a keras.DTypePolicy
    return name if isinstance(name, str) else str(dtype)


def _call_in_float32(loss, y_true, y_pred, sample_weight):
    """Runs `loss` with a float32 twin when its dtype is float16 / bfloat16.

    The base class would cast the per-sample values to the low-precision dtype
    and sum them there, where a batch of large losses overflows (float16 tops
    out at 65504). The twin does the whole computation and reduction in
    float32; only the final value is cast to the loss dtype.
    """
    twin = type(loss).from_config({**loss.get_config(), "dtype": "float32"})
    return ops.cast(twin(y_true, y_pred, sample_weight=sample_weight), loss.dtype)


class _AttentionWeightedLoss(keras.losses.Loss):
    """Plumbing shared by the two attention-weighted losses (not public)."""

    def __init__(self, alpha, from_logits, label_smoothing, axis, reduction, name, dtype):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        _check_options(from_logits, label_smoothing, axis)
        self.alpha = list(_resolve_alpha(alpha))
        _check_float16_range(self.alpha, _float_dtype(self.dtype))
        self.from_logits = bool(from_logits)
        self.axis = int(axis)
        self._dtype_arg = _dtype_config(dtype)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if keras.backend.standardize_dtype(self.dtype) in _LOW_PRECISION:
            return _call_in_float32(self, y_true, y_pred, sample_weight)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def _options(self):
        return {
            "alpha": [float(a) for a in self.alpha],
            "from_logits": self.from_logits,
            "axis": self.axis,
        }

    def get_config(self):
        config = super().get_config()
        config.update(self._options(), dtype=self._dtype_arg)
        return config

    def __repr__(self):
        options = ", ".join(f"{key}={value!r}" for key, value in self._options().items())
        return f"{type(self).__name__}({options}, reduction={self.reduction!r}, name={self.name!r})"


@keras.saving.register_keras_serializable(package="keras_freeze")
class AttentionWeightedCCE(_AttentionWeightedLoss):
    """The paper's attention-based loss: weighted categorical cross-entropy.

    Eq. (1) of Roy & Khurana (ACM SAC 2023): per sample
    `-sum_c alpha_c * y_c * log(p_c)`, then reduced by the Keras base class
    (`"sum_over_batch_size"`: the mean over the batch, as the paper). With all
    `alpha_c = 1` it equals `keras.losses.CategoricalCrossentropy` for every
    option. Use `SparseAttentionWeightedCCE` for integer labels.

    Args:
        alpha: K positive finite per-class weights, in the class order of
            `y_pred`: a sequence / array of floats, a `ClassAttention` (from
            `keras_freeze.estimate_class_attention`, or any object with a
            `.weights` attribute), or `"paper"` for the authors' published
            `PAPER_ALPHA = (0.00525, 0.00579, 0.00566, 0.00513)` in the order
            `PAPER_CLASS_NAMES = ("COVID", "Lung_Opacity", "Normal",
            "Viral Pneumonia")`. Stored as a list of floats.
        from_logits: Whether `y_pred` holds logits (stable log-softmax path).
            Defaults to `False`.
        label_smoothing: Float in [0, 1]. Defaults to 0.
        axis: The class axis. Defaults to -1.
        reduction: As `keras.losses.Loss`. Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"attention_weighted_cce"`.
        dtype: The loss's floating-point dtype (an integer one is refused), as
            `keras.losses.Loss`. With a float16 /
            bfloat16 dtype (e.g. `"mixed_float16"`) the loss is computed and
            reduced in float32 and only the final value is cast, so large
            batches of losses cannot overflow.

    Soft targets (label smoothing, mixup) are weighted per class: each
    class's share `y_c` of a target gets that class's `alpha_c`.

    Raises:
        ValueError: If `alpha` is empty, not one-dimensional or holds a value
            that is not a positive finite number in [1e-30, 1e30], or
            an option is out of range; at call time, if
            `len(alpha) != y_pred.shape[axis]` or the `y_true` / `y_pred`
            shapes differ, or (eager calls) a target is negative.

    Example:

    >>> from keras_freeze import AttentionWeightedCCE
    >>> loss = AttentionWeightedCCE(alpha=[1.0, 2.0, 0.5])
    >>> value = loss([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], [[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]])
    >>> round(float(value), 4)
    0.6269

    Usage with `compile()`:

    ```python
    model.compile(optimizer="adam", loss=AttentionWeightedCCE(alpha="paper"))
    ```
    """

    def __init__(
        self,
        alpha: Any,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        axis: int = -1,
        reduction: str | None = "sum_over_batch_size",
        name: str = "attention_weighted_cce",
        dtype: Any = None,
    ) -> None:
        super().__init__(alpha, from_logits, label_smoothing, axis, reduction, name, dtype)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        return _categorical(
            y_true, y_pred, tuple(self.alpha), self.from_logits, self.label_smoothing, self.axis
        )

    def _options(self):
        options = super()._options()
        axis = options.pop("axis")
        return {**options, "label_smoothing": self.label_smoothing, "axis": axis}


@keras.saving.register_keras_serializable(package="keras_freeze")
class SparseAttentionWeightedCCE(_AttentionWeightedLoss):
    """Attention-weighted cross-entropy for integer labels.

    The sparse counterpart of `AttentionWeightedCCE`, as Keras pairs
    `CategoricalCrossentropy` with `SparseCategoricalCrossentropy`: per sample
    `-alpha_y * log(p_y)`. With all `alpha_c = 1` it equals
    `keras.losses.SparseCategoricalCrossentropy`.

    Args:
        alpha: K positive finite per-class weights (see
            `AttentionWeightedCCE`), or `"paper"`.
        from_logits: Whether `y_pred` holds logits. Defaults to `False`.
        axis: The class axis of `y_pred`. Defaults to -1.
        reduction: As `keras.losses.Loss`. Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"sparse_attention_weighted_cce"`.
        dtype: The loss's floating-point dtype (an integer one is refused), as
            `keras.losses.Loss` (float16 / bfloat16:
            computed and reduced in float32, as `AttentionWeightedCCE`).

    Labels must be whole numbers in `[0, K)`: eager calls raise a
    `ValueError` otherwise (as `SparseCategoricalCrossentropy`); in a traced
    train step, where raising is impossible, such a sample's loss is NaN, so
    `fit` reports `nan`, never a silent 0.

    Raises:
        ValueError: As `AttentionWeightedCCE`; at call time also if `y_true`'s
            shape is not `y_pred`'s shape without the class axis, or (eager
            calls) a label is not a whole number in `[0, K)`.

    Example:

    >>> from keras_freeze import SparseAttentionWeightedCCE
    >>> loss = SparseAttentionWeightedCCE(alpha=[1.0, 2.0, 0.5])
    >>> round(float(loss([1, 2], [[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]])), 4)
    0.6269

    Usage with `compile()`:

    ```python
    model.compile(optimizer="adam", loss=SparseAttentionWeightedCCE(alpha="paper"))
    ```
    """

    def __init__(
        self,
        alpha: Any,
        from_logits: bool = False,
        axis: int = -1,
        reduction: str | None = "sum_over_batch_size",
        name: str = "sparse_attention_weighted_cce",
        dtype: Any = None,
    ) -> None:
        super().__init__(alpha, from_logits, 0.0, axis, reduction, name, dtype)

    def call(self, y_true, y_pred):
        return _sparse(y_true, y_pred, tuple(self.alpha), self.from_logits, self.axis)


# --------------------------------------------------------------------------
# Custom weighted balanced categorical cross-entropy (Tyagi, Roy & Bansal)
# --------------------------------------------------------------------------


def _weights_array(values, name):
    """`values` as a 1-D float64 array, or a ValueError naming `name`."""
    received = values
    if isinstance(values, str) or values is None:
        raise ValueError(
            f"Expected `{name}` to be a sequence of numbers, one per class. "
            f"Received: {name}={received!r}"
        )
    try:
        array = np.asarray(keras.ops.convert_to_numpy(values), dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"Expected `{name}` to be a sequence of numbers, one per class. "
            f"Received: {name}={received!r}"
        ) from None
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"Expected `{name}` to be a non-empty one-dimensional sequence, one entry per "
            f"class. Received: {name}={received!r} with shape {array.shape}"
        )
    return array


def _resolve_class_weights(weights):
    """The per-class weights as a tuple of positive finite float32-normal Python floats."""
    array = _weights_array(weights, "weights")
    bad = [
        i for i, v in enumerate(array) if not (math.isfinite(v) and _ALPHA_MIN <= v <= _ALPHA_MAX)
    ]
    if bad:
        raise ValueError(
            "Expected every class weight to be a finite number > 0 in "
            f"[{_ALPHA_MIN:g}, {_ALPHA_MAX:g}] (so a batch's loss neither vanishes nor "
            f"overflows in float32). Received: weights={array.tolist()} (invalid at index {bad})"
        )
    return tuple(float(v) for v in array)


def cwbcce_weights(counts: Any) -> tuple[float, ...]:
    """Balanced class weights of Tyagi, Roy & Bansal (ICPR 2022) from class counts.

    `beta_c = (1 - N_c / N) / (K - 1)`, with `N_c` the number of training
    samples of class c, `N = sum_c N_c` and K classes: rare classes weigh more
    and the K weights sum to 1.

    Args:
        counts: K >= 2 non-negative finite sample counts, in class order (e.g.
            `numpy.bincount(labels, minlength=K)`); at least two classes must
            have samples.

    Returns:
        A tuple of K positive Python floats summing to 1.

    Raises:
        ValueError: If `counts` is not one-dimensional, has fewer than 2
            entries, holds a negative or non-finite value, or if fewer than
            two classes have samples (a class holding every sample would get
            weight 0).

    Example:

    >>> from keras_freeze import cwbcce_weights
    >>> [round(b, 4) for b in cwbcce_weights([3143, 5084, 6728, 1345])]
    [0.2691, 0.2294, 0.1957, 0.3058]
    """
    array = _weights_array(counts, "counts")
    if array.size < 2:
        raise ValueError(
            f"Expected `counts` for at least 2 classes. Received: counts={array.tolist()}"
        )
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(
            "Expected every class count to be a finite number >= 0. "
            f"Received: counts={array.tolist()}"
        )
    if np.count_nonzero(array) < 2:
        raise ValueError(
            "Expected at least two classes with samples: a class holding every sample gets "
            f"weight 1 - N_c/N = 0. Received: counts={array.tolist()}"
        )
    beta = (1.0 - array / array.sum()) / (array.size - 1)
    small = [i for i, b in enumerate(beta) if not b >= _ALPHA_MIN]
    if small:
        raise ValueError(
            f"Expected counts whose balanced weights are all >= {_ALPHA_MIN:g}, as class "
            "weights must be. Received: counts="
            f"{array.tolist()}, giving weights {beta.tolist()}: class(es) {small} hold "
            "(nearly) every sample, so 1 - N_c/N rounds to 0 and they would not be trained "
            "at all. Check the counts, or pass `weights` directly."
        )
    return tuple(float(b) for b in beta)


def custom_weighted_balanced_cce(
    y_true: Any,
    y_pred: Any,
    weights: Any,
    from_logits: bool = False,
    label_smoothing: float = 0.0,
    axis: int = -1,
) -> Any:
    """Per-sample class-weighted categorical cross-entropy (CWBCCE).

    For each sample `-sum_c beta_c * y_c * log(p_c)`, where `p` is `y_pred`
    (clipped to `[epsilon, 1 - epsilon]` as Keras' cross-entropy), or
    `softmax(y_pred)` computed in log space when `from_logits=True`. With all
    `beta_c = 1` it equals `keras.losses.categorical_crossentropy`.

    Args:
        y_true: One-hot (or soft) targets, the shape of `y_pred`.
        y_pred: Probabilities, or logits when `from_logits=True`.
        weights: K positive finite per-class weights `beta_c`, in the class
            order of `y_pred` (e.g. `cwbcce_weights(counts)`).
        from_logits: Whether `y_pred` holds logits. Defaults to `False`.
        label_smoothing: Float in [0, 1]. Defaults to 0.
        axis: The class axis. Defaults to -1.

    Returns:
        A tensor of shape `y_pred.shape` without `axis`, one loss per sample.

    Raises:
        ValueError: If `weights` is not K positive finite numbers with
            `K == y_pred.shape[axis]`, the shapes differ, or an option is out
            of range.

    Example:

    >>> import keras
    >>> from keras_freeze import custom_weighted_balanced_cce
    >>> loss = custom_weighted_balanced_cce([[0.0, 1.0], [1.0, 0.0]], [[0.2, 0.8], [0.6, 0.4]],
    ...                                     weights=[0.25, 0.75])
    >>> [round(float(v), 4) for v in keras.ops.convert_to_numpy(loss)]
    [0.1674, 0.1277]
    """
    weights = _resolve_class_weights(weights)
    _check_options(from_logits, label_smoothing, axis)
    return _categorical(
        y_true, y_pred, weights, bool(from_logits), float(label_smoothing), axis, "weights"
    )


@keras.saving.register_keras_serializable(package="keras_freeze")
class CustomWeightedBalancedCCE(keras.losses.Loss):
    """Custom weighted balanced categorical cross-entropy (CWBCCE) of Tyagi et al.

    M. Tyagi, S. Roy and V. Bansal, "Custom Weighted Balanced Loss function for
    Covid 19 Detection from an Imbalanced CXR Dataset", ICPR 2022, 2707-2713
    (the loss Roy & Khurana, ACM SAC 2023, Table 1, train ResNet-18 with,
    "CWBCE"). Per sample

        loss = -sum_c beta_c * y_c * log(p_c)

    reduced by the Keras base class (`"sum_over_batch_size"`: the mean over
    the batch, exactly what the authors' `model.fit(..., class_weight=beta)`
    with categorical cross-entropy computes). The balanced weights are

        beta_c = (1 - N_c / N) / (K - 1)

    (`cwbcce_weights`, from the training counts `N_c`); the authors
    then tune the weights by hand for intra-class variance, e.g.
    `(0.2725, 0.252, 0.242, 0.23175)` for COVID, Lung Opacity, Normal and
    Viral Pneumonia (repository MrinalTyagi/CWBCCE-COVID19, notebooks
    `4 Classes Experiment/ResNet18 with custom weighted BCCE - I/II/III.ipynb`,
    where `beta` is computed as above). The rule behind that tuning is not
    published in a form we could find, so pass such custom weights as
    `weights`, or `counts` for the balanced `beta`.

    Args:
        weights: K positive finite per-class weights, in the class order of
            `y_pred`. Give exactly one of `weights` and `counts`.
        counts: K class counts of the training set; the weights are then
            `cwbcce_weights(counts)`.
        from_logits: Whether `y_pred` holds logits. Defaults to `False`.
        label_smoothing: Float in [0, 1]. Defaults to 0.
        axis: The class axis. Defaults to -1.
        reduction: As `keras.losses.Loss`. Defaults to `"sum_over_batch_size"`.
        name: Defaults to `"custom_weighted_balanced_cce"`.
        dtype: The loss's floating-point dtype (an integer one is refused), as
            `keras.losses.Loss` (float16 / bfloat16:
            computed and reduced in float32, only the result is cast).

    Raises:
        ValueError: If both or neither of `weights` and `counts` are given, they
            are invalid (see `cwbcce_weights`), or an option is out of
            range; at call time if `len(weights) != y_pred.shape[axis]` or the
            shapes differ.

    Example:

    >>> from keras_freeze import CustomWeightedBalancedCCE
    >>> loss = CustomWeightedBalancedCCE(weights=[0.25, 0.75])
    >>> round(float(loss([[0.0, 1.0], [1.0, 0.0]], [[0.2, 0.8], [0.6, 0.4]])), 4)
    0.1475

    Usage with `compile()`:

    ```python
    model.compile(optimizer="adam", loss=CustomWeightedBalancedCCE(counts=[3143, 5084, 6728, 1345]))
    ```
    """

    def __init__(
        self,
        weights: Any = None,
        counts: Any = None,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        axis: int = -1,
        reduction: str | None = "sum_over_batch_size",
        name: str = "custom_weighted_balanced_cce",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if (weights is None) == (counts is None):
            raise ValueError(
                "Expected exactly one of `weights` (per-class weights) and `counts` (class "
                f"counts, for balanced weights). Received: weights={weights!r}, counts={counts!r}"
            )
        _check_options(from_logits, label_smoothing, axis)
        if counts is not None:
            self.counts = [float(c) for c in _weights_array(counts, "counts")]
            self.weights = None
            self.class_weights = cwbcce_weights(self.counts)
        else:
            self.counts = None
            self.class_weights = _resolve_class_weights(weights)
            self.weights = list(self.class_weights)
        _check_float16_range(self.class_weights, _float_dtype(self.dtype), "weights")
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)
        self.axis = int(axis)
        self._dtype_arg = _dtype_config(dtype)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if keras.backend.standardize_dtype(self.dtype) in _LOW_PRECISION:
            return _call_in_float32(self, y_true, y_pred, sample_weight)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true, y_pred):
        return _categorical(
            y_true,
            y_pred,
            self.class_weights,
            self.from_logits,
            self.label_smoothing,
            self.axis,
            "weights",
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            weights=self.weights,
            counts=self.counts,
            from_logits=self.from_logits,
            label_smoothing=self.label_smoothing,
            axis=self.axis,
            dtype=self._dtype_arg,
        )
        return config
