"""Argument checks shared by every module of keras-freeze.

Each check validates eagerly and, on a bad value, raises a `ValueError` that
names the argument, what was received and what is expected, in the style of
Keras' own `standardize_reduction`:
`ValueError("Expected fraction in [0, 1]. Received: fraction=1.5")`.
A valid value is returned normalised (a Python `float` or `int`), so callers
write `n = positive_float("n", n)`.
"""

from __future__ import annotations

import decimal
import math
import numbers
from collections.abc import Iterable

import numpy as np

#: Freezing modes of `freeze_fraction` / `GradualUnfreezing`.
MODES = ("ordered", "stochastic")
#: What `freeze_fraction` counts.
BYS = ("layers", "params")

_ZERO_DIVISION_HELP = "0.0, 1.0 or float('nan')"
# Largest class label: far beyond any class count, and safe in int64 arithmetic.
_MAX_LABEL = 2**62 - 1


def _is_real(value):
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def as_real(value):
    """`value` as a Python float if it is a real number, else None.

    Real numbers: int, float, `fractions.Fraction`, `decimal.Decimal`, NumPy
    integer and float scalars and 0-d arrays of them. Bools (`True`, `np.True_`
    and 0-d bool arrays), complex numbers, strings and arrays of more than one
    value are not. A NumPy float is read as the decimal it prints as
    (`np.float32(0.29)` is 0.29), like a Python float. Out-of-float-range values
    become +-inf.
    """
    if isinstance(value, np.ndarray):
        if value.ndim != 0 or value.dtype.kind not in "iuf":
            return None
        value = value[()]
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, np.floating):
        return float(str(value))
    if isinstance(value, decimal.Decimal):
        return float("nan") if value.is_nan() else float(value)
    if not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except OverflowError:  # e.g. 10**400 or Fraction(10**400)
        return math.inf if value > 0 else -math.inf


def is_integer(value):
    return not isinstance(value, bool) and isinstance(value, numbers.Integral)


def positive_float(name, value):
    """A finite number > 0, as a Python float."""
    if not _is_real(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"Expected `{name}` to be a finite number > 0. Received: {name}={value!r}")
    return float(value)


def nonnegative_float(name, value):
    """A finite number >= 0, as a Python float."""
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise ValueError(
            f"Expected `{name}` to be a finite number >= 0. Received: {name}={value!r}"
        )
    return float(value)


def fraction(value, where="fraction"):
    """A real number in [0, 1] (see `as_real`), as a Python float.

    A NumPy float is read as the decimal it prints as (`np.float32(0.29)` is
    0.29, not its binary value 0.28999999165534973), like a Python float.
    `where` names the argument in the error message.
    """
    received = value
    value = as_real(value)
    if value is None:
        raise ValueError(
            f"Expected {where} to be a real number in [0, 1] (an int, float, Fraction, "
            f"Decimal or 0-d NumPy array; not a bool). Received: {where}={received!r}"
        )
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"Expected {where} in [0, 1]. Received: {where}={value}")
    return value


def integer(name, value, minimum, *, maximum=None, allow_none=False, why=""):
    """An int in [`minimum`, `maximum`] (or None when `allow_none`), as a Python int.

    `why` is appended to the message, e.g. `" (a standard error needs 2 pairs)"`.
    """
    if allow_none and value is None:
        return None
    if not is_integer(value) or value < minimum or (maximum is not None and value > maximum):
        none = " or None" if allow_none else ""
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum:_}]"
        raise ValueError(
            f"Expected `{name}` to be an int {bound}{none}{why}. Received: {name}={value!r}"
        )
    return int(value)


def seed(value):
    """An int seed >= 0 or None."""
    return integer("seed", value, 0, allow_none=True)


def boolean(name, value):
    """A Python or NumPy bool, as a Python bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"Expected `{name}` to be a bool. Received: {name}={value!r}")
    return bool(value)


def verbose(value):
    """`0` / `1` (or `False` / `True`), as an int."""
    if value not in (0, 1, False, True) or not isinstance(value, (numbers.Integral, np.bool_)):
        raise ValueError(f"Expected verbose to be 0 or 1. Received: verbose={value!r}")
    return int(value)


def one_of(name, value, options):
    """`value` if it is one of `options` (compared with `==`)."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"Expected {name} to be one of {options}. Received: {name}={value!r}")
    return value


def mode_by_seed(mode, by, seed_value):
    """Checks `mode`, `by` and `seed` as `freeze_fraction` accepts them."""
    one_of("mode", mode, MODES)
    one_of("by", by, BYS)
    if mode == "ordered" and seed_value is not None:
        raise ValueError(
            "`seed` only applies to mode='stochastic'; an ordered freeze is "
            f"deterministic. Received: mode='ordered', seed={seed_value!r}. "
            "Pass seed=None or mode='stochastic'."
        )
    return seed(seed_value)


def zero_division(value):
    """`0.0`, `1.0` or NaN, as a Python float (scikit-learn's choices)."""
    if not _is_real(value) or not (math.isnan(value) or float(value) in (0.0, 1.0)):
        raise ValueError(
            f"Expected zero_division to be {_ZERO_DIVISION_HELP}. Received: zero_division={value!r}"
        )
    return float(value)


def name_list(names, what="class names"):
    """A list of strings from a sequence of names; a bare string is refused.

    A bare string would be split into its characters (`"abc"` -> `a`, `b`, `c`).
    """
    if isinstance(names, (str, bytes)) or not isinstance(names, Iterable):
        raise ValueError(
            f"Expected {what} as a list of strings, one per class (a bare string would be "
            f"split into its characters). Received: {what.replace(' ', '_')}={names!r}. "
            f"Pass a list, e.g. [{names!r}] for a single name."
        )
    return [str(c) for c in names]


def distinct_names(names, what="class names"):
    """A list of distinct strings, from a sequence of names (a bare string is refused)."""
    names = name_list(names, what)
    if len(set(names)) != len(names):
        raise ValueError(f"Expected distinct {what}. Received: {names}")
    return names


# --------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------


def to_numpy(value):
    """A NumPy view of an array, a tensor of any backend, or a nested list."""
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except Exception:  # e.g. a torch tensor on an accelerator or requiring grad
        if hasattr(value, "detach"):
            return value.detach().cpu().numpy()
        if hasattr(value, "numpy"):
            return value.numpy()
        raise


def _check_one_hot(y, where):
    """Raises unless every row of the 2-D `y` holds a single 1 and zeros elsewhere."""
    if y.dtype.kind not in "fiub":
        raise ValueError(f"Expected numeric one-hot rows{where}. Received: y.dtype={y.dtype}")
    ones = y == 1
    ok = np.all(ones | (y == 0), axis=1) & (np.count_nonzero(ones, axis=1) == 1)
    if not np.all(ok):
        row = int(np.argmin(ok))
        raise ValueError(
            f"Expected one-hot rows (a single 1, zeros elsewhere){where}. Received: row "
            f"{row} = {y[row].tolist()} ({int(np.count_nonzero(~ok))} row(s) not one-hot). "
            "Pass integer labels, or one-hot rows without label smoothing or mixup."
        )


def class_labels(y, num_classes=None, where=""):
    """Integer class labels `(n,)` from integer labels or one-hot rows.

    Args:
        y: Integer labels `(n,)` (integral floats accepted), a column `(n, 1)`,
            or one-hot rows `(n, K)` (a single 1 and zeros elsewhere; an
            all-zero, multi-hot, soft or negative row is refused, naming it).
        num_classes: The number of classes K, if known: labels must lie in
            `[0, K)` and one-hot rows must have K columns.
        where: Appended to error messages, e.g. `", in batch 3"`.

    Returns:
        `(labels, k)`: int64 labels and the number of one-hot columns (None
        for integer labels).
    """
    y = to_numpy(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        if num_classes is not None and y.shape[1] != num_classes:
            raise ValueError(
                f"Expected one-hot labels with {num_classes} columns, one per class{where}. "
                f"Received: y.shape={y.shape}"
            )
        _check_one_hot(y, where)
        return np.argmax(y, axis=1).astype(np.int64), int(y.shape[1])
    if y.ndim != 1:
        raise ValueError(
            f"Expected y of shape (N,) integer labels or (N, K) one-hot{where}. "
            f"Received: y.shape={y.shape}"
        )
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError(
                f"Expected integer class labels or one-hot rows{where}. "
                f"Received non-integer labels, e.g. {y[:5].tolist()}"
            )
    elif y.dtype.kind not in "iub":
        raise ValueError(
            f"Expected integer class labels or one-hot rows{where}. Received: y.dtype={y.dtype}"
        )
    # The range is checked on the labels as given, before the int64 cast, which
    # would wrap uint64 labels >= 2**63 and turn floats beyond 2**63 into garbage.
    if y.size:
        low, high = y.min().item(), y.max().item()
        limit = _MAX_LABEL + 1 if num_classes is None else num_classes
        if low < 0 or high >= limit:
            if num_classes is not None:
                expected = f"in [0, {num_classes - 1}]{where}"
            else:
                expected = f">= 0{where}" if low < 0 else f"below 2**62{where}"
            shown = [int(v) if float(v).is_integer() else v for v in (low, high)]
            raise ValueError(
                f"Expected integer labels {expected}. Received: labels in [{shown[0]}, {shown[1]}]"
            )
    return y.astype(np.int64), None
