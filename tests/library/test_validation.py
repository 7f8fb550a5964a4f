"""Tests for the shared argument checks of keras_freeze/_validation.py."""

import math

import numpy as np
import pytest

from keras_freeze import _validation as check


@pytest.mark.parametrize(
    "fn, args, expected",
    [
        (check.positive_float, ("n", 2), 2.0),
        (check.positive_float, ("n", np.float32(0.5)), 0.5),
        (check.nonnegative_float, ("beta", 0), 0.0),
        (check.fraction, (np.float32(0.29),), 0.29),  # read as printed
        (check.fraction, (1,), 1.0),
        (check.integer, ("mc_samples", np.int64(3), 2), 3),
        (check.integer, ("batch_size", None, 1), None),
        (check.seed, (0,), 0),
        (check.seed, (None,), None),
        (check.boolean, ("from_logits", np.bool_(True)), True),
        (check.verbose, (True,), 1),
        (check.one_of, ("mode", "ordered", check.MODES), "ordered"),
        (check.mode_by_seed, ("stochastic", "params", 7), 7),
        (check.zero_division, (1,), 1.0),
        (check.distinct_names, ([1, "b"],), ["1", "b"]),
    ],
)
def test_valid_values_are_normalised(fn, args, expected):
    kwargs = {"allow_none": True} if args[1:2] == (None,) and fn is check.integer else {}
    got = fn(*args, **kwargs)
    assert got == expected and type(got) is type(expected)


def test_zero_division_nan():
    assert math.isnan(check.zero_division(float("nan")))


@pytest.mark.parametrize(
    "fn, args, match",
    [
        (check.positive_float, ("n", 0), r"`n` to be a finite number > 0. Received: n=0"),
        (check.positive_float, ("q", math.inf), r"Received: q=inf"),
        (check.positive_float, ("q", True), r"Received: q=True"),
        (check.nonnegative_float, ("beta", -1), r"finite number >= 0. Received: beta=-1"),
        (check.fraction, (1.5,), r"Expected fraction in \[0, 1\]. Received: fraction=1.5"),
        (check.fraction, ("0.5", "schedule[0]"), r"Received: schedule\[0\]='0.5'"),
        (check.fraction, (math.nan,), r"Received: fraction=nan"),
        (check.integer, ("mc_samples", 1, 2), r"`mc_samples` to be an int >= 2"),
        (check.integer, ("mc_samples", 2.5, 2), r"Received: mc_samples=2.5"),
        (check.seed, (-3,), r"`seed` to be an int >= 0 or None. Received: seed=-3"),
        (check.seed, (True,), r"Received: seed=True"),
        (check.boolean, ("from_logits", "yes"), r"Received: from_logits='yes'"),
        (check.verbose, (2,), r"Received: verbose=2"),
        (check.one_of, ("by", "weights", check.BYS), r"by to be one of .*Received: by='weights'"),
        (check.mode_by_seed, ("ordered", "layers", 1), r"Received: mode='ordered', seed=1"),
        (check.zero_division, (0.5,), r"Received: zero_division=0.5"),
        (check.distinct_names, (["a", "a"],), r"distinct class names"),
    ],
)
def test_errors_name_the_argument_and_value(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)


@pytest.mark.parametrize(
    "y, num_classes, labels, k",
    [
        ([2, 0, 1], None, [2, 0, 1], None),
        (np.array([[1], [0]]), 2, [1, 0], None),
        (np.array([1.0, 0.0]), 2, [1, 0], None),
        (np.array([True, False]), 2, [1, 0], None),
        (np.eye(3)[[2, 0]], 3, [2, 0], 3),
        (np.eye(3)[[2, 0]], None, [2, 0], 3),
    ],
)
def test_class_labels(y, num_classes, labels, k):
    got, got_k = check.class_labels(y, num_classes)
    assert got.tolist() == labels and got.dtype == np.int64 and got_k == k


@pytest.mark.parametrize(
    "y, num_classes, match",
    [
        ([0, 3], 2, r"labels in \[0, 1\], in y. Received: labels in \[0, 3\]"),
        ([-1, 0], None, r"labels >= 0, in y"),
        ([0.5], 2, r"non-integer labels"),
        ([np.nan], 2, r"non-integer labels"),
        (["a"], 2, r"y.dtype=<U1"),
        (np.eye(3), 2, r"2 columns, one per class, in y. Received: y.shape=\(3, 3\)"),
        (np.zeros((2, 2, 2)), 2, r"Received: y.shape=\(2, 2, 2\)"),
    ],
)
def test_class_labels_errors(y, num_classes, match):
    with pytest.raises(ValueError, match=match):
        check.class_labels(y, num_classes, where=", in y")


def test_to_numpy_passes_arrays_through():
    a = np.arange(3)
    assert check.to_numpy(a) is a
    assert check.to_numpy([1, 2]).tolist() == [1, 2]
