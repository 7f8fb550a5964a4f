"""Tests for `AttentionWeightedCCE`, `SparseAttentionWeightedCCE` and their functions.

Oracles are independent of the implementation: Keras' own
`CategoricalCrossentropy` / `SparseCategoricalCrossentropy` (all alpha = 1),
`CategoricalFocalCrossentropy(alpha=w, gamma=0)`, the authors' notebook formula
and a float64 NumPy/SciPy reference.
"""

import json
import os
import subprocess
import sys
import textwrap
import types

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import logsumexp

from keras_freeze import PAPER_ALPHA
from keras_freeze import PAPER_CLASS_NAMES
from keras_freeze import AttentionWeightedCCE
from keras_freeze import SparseAttentionWeightedCCE
from keras_freeze import attention_weighted_cce
from keras_freeze import sparse_attention_weighted_cce

BACKEND = keras.backend.backend()
EPS = keras.config.epsilon()
REDUCTIONS = ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", None, "none"]


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _oracle(y, p, alpha, from_logits=False, label_smoothing=0.0, axis=-1):
    """Float64 NumPy reference of eq. (1) per sample (Keras' CCE recipe)."""
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    k = p.shape[axis]
    if label_smoothing:
        y = y * (1.0 - label_smoothing) + label_smoothing / k
    if from_logits:
        logp = p - logsumexp(p, axis=axis, keepdims=True)
    else:
        p = p / p.sum(axis=axis, keepdims=True)
        logp = np.log(np.clip(p, EPS, 1.0 - EPS))
    shape = [1] * p.ndim
    shape[axis] = k
    return -(y * logp * np.asarray(alpha, np.float64).reshape(shape)).sum(axis=axis)


def _data(batch=6, k=4, seed=0, extra=()):
    rng = np.random.default_rng(seed)
    shape = (batch, *extra, k)
    labels = rng.integers(0, k, shape[:-1])
    y = np.eye(k, dtype="float32")[labels]
    logits = rng.normal(scale=2.0, size=shape).astype("float32")
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return labels, y, logits, probs.astype("float32")


def _tiny_model(k=4, d=5, activation="softmax", seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((d,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(k, activation=activation),
        ]
    )


def _grad(fn, x):
    """d fn(x) / dx with the current backend's autodiff (fn returns a scalar)."""
    x = np.asarray(x, "float32")
    if BACKEND == "tensorflow":
        import tensorflow as tf

        v = tf.Variable(x)
        with tf.GradientTape() as tape:
            out = fn(v)
        return np.asarray(tape.gradient(out, v))
    if BACKEND == "torch":
        import torch

        t = torch.tensor(x, requires_grad=True)
        fn(t).backward()
        return t.grad.detach().cpu().numpy()
    if BACKEND == "jax":
        import jax

        return np.asarray(jax.grad(fn)(jax.numpy.asarray(x)))
    pytest.skip(f"no autodiff helper for backend {BACKEND}")


# --------------------------------------------------------------------------- constants


def test_paper_constants():
    assert PAPER_ALPHA == (0.00525, 0.00579, 0.00566, 0.00513)
    assert PAPER_CLASS_NAMES == ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
    assert AttentionWeightedCCE("paper").alpha == [0.00525, 0.00579, 0.00566, 0.00513]


# --------------------------------------------------------------------------- Keras parity


# (Cases are looped inside a few tests rather than parametrised: the shared fixture's
# `clear_session()` costs about a second per test on a loaded machine.)


@pytest.mark.parametrize("from_logits", [False, True])
def test_alpha_one_equals_categorical_crossentropy(from_logits):
    _, y, logits, probs = _data()
    pred = logits if from_logits else probs
    sw = np.array([1.0, 0.0, 2.0, 0.5, 1.0, 3.0], "float32")
    for label_smoothing in (0.0, 0.1, 1.0):
        for reduction in REDUCTIONS:
            kw = dict(from_logits=from_logits, label_smoothing=label_smoothing, reduction=reduction)
            ours = AttentionWeightedCCE([1.0] * 4, **kw)
            ref = keras.losses.CategoricalCrossentropy(**kw)
            np.testing.assert_allclose(
                _np(ours(y, pred)), _np(ref(y, pred)), rtol=1e-5, atol=1e-6, err_msg=str(kw)
            )
            np.testing.assert_allclose(
                _np(ours(y, pred, sample_weight=sw)),
                _np(ref(y, pred, sample_weight=sw)),
                rtol=1e-5,
                atol=1e-6,
                err_msg=str(kw),
            )


@pytest.mark.parametrize("from_logits", [False, True])
def test_alpha_one_equals_cce_on_other_axis(from_logits):
    # Class axis 1 of a (batch, K, K) tensor. Keras' label smoothing divides by the size
    # of the *last* dimension whatever `axis` is; with a square tail the two agree. The
    # class-axis case with a different last dimension is checked against NumPy below.
    rng = np.random.default_rng(1)
    pred = rng.random((3, 4, 4)).astype("float32") + 0.05
    if from_logits:
        pred = np.log(pred) * 3
    y = np.moveaxis(np.eye(4, dtype="float32")[rng.integers(0, 4, (3, 4))], -1, 1)
    for label_smoothing in (0.0, 0.2):
        kw = dict(from_logits=from_logits, label_smoothing=label_smoothing, axis=1, reduction=None)
        np.testing.assert_allclose(
            _np(AttentionWeightedCCE([1.0] * 4, **kw)(y, pred)),
            _np(keras.losses.CategoricalCrossentropy(**kw)(y, pred)),
            rtol=1e-5,
            atol=1e-6,
            err_msg=str(kw),
        )


def test_label_smoothing_uses_class_axis_size():
    rng = np.random.default_rng(2)
    pred = rng.random((2, 3, 5)).astype("float32") + 0.05  # K = 3 on axis 1, last dim 5
    y = np.moveaxis(np.eye(3, dtype="float32")[rng.integers(0, 3, (2, 5))], -1, 1)
    alpha = [0.5, 2.0, 1.5]
    for from_logits in (False, True):
        out = attention_weighted_cce(
            y, pred, alpha, from_logits=from_logits, label_smoothing=0.3, axis=1
        )
        assert tuple(out.shape) == (2, 5)
        np.testing.assert_allclose(
            _np(out), _oracle(y, pred, alpha, from_logits, 0.3, axis=1), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("from_logits", [False, True])
def test_sparse_alpha_one_equals_sparse_categorical_crossentropy(from_logits):
    flat, _, logits, probs = _data()
    pred = logits if from_logits else probs
    sw = np.array([1.0, 0.0, 2.0, 0.5, 1.0, 3.0], "float32")
    for labels in (flat, flat.reshape(-1, 1)):
        for reduction in REDUCTIONS:
            ours = SparseAttentionWeightedCCE(
                [1.0] * 4, from_logits=from_logits, reduction=reduction
            )
            ref = keras.losses.SparseCategoricalCrossentropy(
                from_logits=from_logits, reduction=reduction
            )
            msg = f"labels.shape={labels.shape}, reduction={reduction}"
            np.testing.assert_allclose(
                _np(ours(labels, pred)), _np(ref(labels, pred)), rtol=1e-5, atol=1e-6, err_msg=msg
            )
            np.testing.assert_allclose(
                _np(ours(labels, pred, sample_weight=sw)),
                _np(ref(labels, pred, sample_weight=sw)),
                rtol=1e-5,
                atol=1e-6,
                err_msg=msg,
            )


def test_sparse_equals_categorical_on_one_hot_with_weights():
    labels, y, logits, probs = _data(batch=3, extra=(2,))  # (3, 2, 4) predictions
    alpha = [0.3, 1.0, 2.5, 4.0]
    for pred, fl in ((probs, False), (logits, True)):
        dense = attention_weighted_cce(y, pred, alpha, from_logits=fl)
        sparse = sparse_attention_weighted_cce(labels, pred, alpha, from_logits=fl)
        np.testing.assert_allclose(_np(sparse), _oracle(y, pred, alpha, fl), rtol=1e-5)
        np.testing.assert_allclose(_np(dense), _np(sparse), rtol=1e-5)
    # class axis 1 for integer labels
    moved = np.moveaxis(probs, -1, 1)
    np.testing.assert_allclose(
        _np(sparse_attention_weighted_cce(labels, moved, alpha, axis=1)),
        _oracle(np.moveaxis(y, -1, 1), moved, alpha, axis=1),
        rtol=1e-5,
    )


def test_equals_focal_crossentropy_with_gamma_zero():
    _, y, logits, probs = _data(batch=5, seed=3)
    probs[0] = [0.0, 1.0, 0.0, 0.0]  # exercises the clip
    w = [0.2, 1.7, 0.9, 3.1]
    for from_logits in (False, True):
        for label_smoothing in (0.0, 0.1):
            pred = logits if from_logits else probs
            kw = dict(from_logits=from_logits, label_smoothing=label_smoothing)
            ours = AttentionWeightedCCE(w, reduction=None, **kw)
            ref = keras.losses.CategoricalFocalCrossentropy(
                alpha=w, gamma=0.0, reduction=None, **kw
            )
            np.testing.assert_allclose(
                _np(ours(y, pred)), _np(ref(y, pred)), rtol=1e-5, atol=1e-6, err_msg=str(kw)
            )


def test_paper_weights_equal_the_notebook_formula():
    # The authors' notebook: renormalise, clip to [eps, 1 - eps], -sum(y * log(p) * alpha),
    # mean over the batch. Unnormalised, partly saturated predictions on purpose.
    rng = np.random.default_rng(4)
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, 8)]
    p = rng.random((8, 4)).astype("float32") * 2
    p[0] = [0.0, 1.0, 0.0, 0.0]
    p[1] = [1.0, 0.0, 0.0, 0.0]
    a = np.array([0.00525, 0.00579, 0.00566, 0.00513])
    q = p / p.sum(axis=-1, keepdims=True)
    q = np.clip(q, EPS, 1 - EPS)
    expected = np.mean(-np.sum(y * np.log(q) * a, axis=-1))
    for alpha in ("paper", "PAPER", list(a), np.asarray(a), types.SimpleNamespace(weights=a)):
        got = float(_np(AttentionWeightedCCE(alpha)(y, p)))
        np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_sample_weight_and_reductions_by_hand():
    # Two samples with known per-sample losses: -a_1 log(0.5) and -a_0 log(0.25).
    y = np.array([[0, 1.0, 0], [1.0, 0, 0]], "float32")
    p = np.array([[0.25, 0.5, 0.25], [0.25, 0.5, 0.25]], "float32")
    a = [2.0, 3.0, 1.0]
    per = np.array([-3.0 * np.log(0.5), -2.0 * np.log(0.25)])
    sw = np.array([0.5, 2.0], "float32")
    cases = {
        "none": per * sw,
        "sum": (per * sw).sum(),
        "sum_over_batch_size": (per * sw).sum() / 2,
        "mean_with_sample_weight": (per * sw).sum() / sw.sum(),
    }
    for reduction, expected in cases.items():
        got = AttentionWeightedCCE(a, reduction=reduction)(y, p, sample_weight=sw)
        np.testing.assert_allclose(_np(got), expected, rtol=1e-6)


def test_keras_mask_is_honoured():
    # Padded timesteps (all-zero input) are masked by the model; the base class must drop
    # them from the loss and its "sum_over_batch_size" divisor.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 5, 2)).astype("float32")
    x[0, 3:] = 0.0
    x[2, 1:] = 0.0
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, (3, 5))]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((5, 2)),
            keras.layers.Masking(0.0),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    # Expected: the mean of the per-timestep oracle over unmasked timesteps only.
    probs = _np(model.predict(x, verbose=0))
    mask = np.any(x != 0.0, axis=-1)
    a = [0.5, 1.0, 4.0]
    model.compile(loss=AttentionWeightedCCE(a))
    expected = _oracle(y, probs, a)[mask].mean()
    assert not np.isclose(expected, _oracle(y, probs, a).mean(), rtol=1e-3)  # mask matters
    np.testing.assert_allclose(model.evaluate(x, y, verbose=0), expected, rtol=1e-5)


def test_saturated_softmax_model_matches_cce():
    # Huge pre-softmax values: on TensorFlow Keras' CCE reads the logits that softmax
    # attached to its output; elsewhere it clips. Either way alpha = 1 must agree.
    rng = np.random.default_rng(6)
    x = rng.normal(size=(6, 5)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 6)]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, activation="softmax")])
    model.layers[0].kernel.assign(rng.normal(scale=200.0, size=(5, 3)).astype("float32"))
    model.compile(loss=AttentionWeightedCCE([1.0] * 3))
    ours = model.evaluate(x, y, verbose=0)
    model.compile(loss=keras.losses.CategoricalCrossentropy())
    ref = model.evaluate(x, y, verbose=0)
    assert np.isfinite(ours)
    np.testing.assert_allclose(ours, ref, rtol=1e-5)


# --------------------------------------------------------------------------- stability


def test_extreme_logits_are_finite_with_finite_gradients():
    y = np.array([[0, 1.0, 0, 0], [1.0, 0, 0, 0]], "float32")
    z = np.array([[1e4, -1e4, 0.0, 1e4], [-1e4, 1e4, -1e4, 0.0]], "float32")
    loss = AttentionWeightedCCE([1.0, 2.0, 3.0, 4.0], from_logits=True)
    value = float(_np(loss(y, z)))
    # exact: sample 0: -2 * (-1e4 - (1e4 + log 2)); sample 1: -1 * (-1e4 - 1e4)
    np.testing.assert_allclose(value, ((2 * (2e4 + np.log(2))) + 2e4) / 2, rtol=1e-6)
    g = _grad(lambda t: loss(y, t), z)
    assert np.all(np.isfinite(g))
    labels = np.array([1, 0])
    sparse = SparseAttentionWeightedCCE([1.0, 2.0, 3.0, 4.0], from_logits=True)
    np.testing.assert_allclose(float(_np(sparse(labels, z))), value, rtol=1e-6)
    assert np.all(np.isfinite(_grad(lambda t: sparse(labels, t), z)))


def test_logit_gradient_equals_closed_form():
    # d/dz of mean_i -sum_c a_c y_ic log softmax(z_i)_c = (sum_c a_c y_ic) softmax(z_i) - a * y_i,
    # divided by the batch size.
    _, y, logits, _ = _data(batch=5, seed=11)
    y = 0.8 * y + 0.05  # soft labels
    a = np.array([0.5, 1.0, 2.0, 4.0])
    loss = AttentionWeightedCCE(a, from_logits=True)
    sm = np.exp(logits - logsumexp(logits, axis=-1, keepdims=True))
    expected = ((y * a).sum(-1, keepdims=True) * sm - a * y) / len(y)
    np.testing.assert_allclose(_grad(lambda t: loss(y, t), logits), expected, rtol=1e-4, atol=1e-7)


def test_zero_and_one_probabilities_are_finite_with_finite_gradients():
    y = np.array([[0, 1.0, 0], [1.0, 0, 0], [0, 0, 1.0]], "float32")
    p = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5]], "float32")
    loss = AttentionWeightedCCE([1.0, 2.0, 3.0])
    value = float(_np(loss(y, p)))
    np.testing.assert_allclose(value, _oracle(y, p, [1.0, 2.0, 3.0]).mean(), rtol=1e-5)
    assert np.isfinite(value)
    assert np.all(np.isfinite(_grad(lambda t: loss(y, t), p)))


def test_training_step_keeps_weights_finite():
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(8, 5)) * 50).astype("float32")
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, 8)]
    for loss, act in (
        (AttentionWeightedCCE("paper"), "softmax"),
        (AttentionWeightedCCE([1.0, 2.0, 3.0, 4.0], from_logits=True), None),
        (SparseAttentionWeightedCCE([1.0, 2.0, 3.0, 4.0]), "softmax"),
    ):
        model = _tiny_model(activation=act)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
        target = np.argmax(y, -1) if isinstance(loss, SparseAttentionWeightedCCE) else y
        value = model.train_on_batch(x, target)
        assert np.isfinite(value)
        assert all(np.all(np.isfinite(_np(w))) for w in model.weights)


# --------------------------------------------------------------------------- mixed precision


@pytest.fixture
def restore_policy():
    before = keras.config.dtype_policy()
    yield
    keras.config.set_dtype_policy(before)


def test_mixed_precision_training(restore_policy):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(8, 5)).astype("float32")
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, 8)]
    for policy in ("mixed_float16", "mixed_bfloat16"):
        keras.config.set_dtype_policy(policy)
        model = _tiny_model()
        assert keras.backend.standardize_dtype(model.layers[-1].compute_dtype) == policy[6:]
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=AttentionWeightedCCE("paper"))
        value = model.train_on_batch(x, y)
        assert np.isfinite(value), policy
        assert all(np.all(np.isfinite(_np(w))) for w in model.trainable_weights), policy
        # The reported loss is eq. (1) of the model's (low precision) predictions.
        probs = _np(keras.ops.cast(model.predict(x, verbose=0), "float32"))
        np.testing.assert_allclose(
            model.evaluate(x, y, verbose=0),
            _oracle(y, probs, PAPER_ALPHA).mean(),
            rtol=1e-3,
            err_msg=policy,
        )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_inputs_computed_in_float32(dtype):
    # Low-precision logits of +-1e4 and a loss whose dtype is the low-precision policy:
    # the value must equal the float32 computation on the same (rounded) inputs.
    y = np.eye(4, dtype="float32")[[1, 3, 0]]
    z = np.array([[1e4, -1e4, 0, 5], [3.0, -2.0, 1e4, 0.5], [0.1, 0.2, 0.3, 0.4]], "float32")
    z_low = keras.ops.cast(z, dtype)
    z_rounded = _np(keras.ops.cast(z_low, "float32"))
    alpha = [1.0, 2.0, 3.0, 4.0]
    per = attention_weighted_cce(y, z_low, alpha, from_logits=True)
    assert keras.backend.standardize_dtype(per.dtype) == dtype
    expected = _oracle(y, z_rounded, alpha, from_logits=True)
    got = _np(keras.ops.cast(per, "float32"))
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-2)
    mixed = AttentionWeightedCCE(alpha, from_logits=True, dtype=f"mixed_{dtype}")
    value = _np(keras.ops.cast(mixed(y, z_low), "float32"))
    np.testing.assert_allclose(value, expected.mean(), rtol=1e-2)
    # Probability mode, including exact zeros after the cast.
    p_low = keras.ops.cast(np.array([[0.0, 1.0, 0, 0], [0.2, 0.3, 0.1, 0.4]], "float32"), dtype)
    out = _np(keras.ops.cast(attention_weighted_cce(y[:2], p_low, alpha), "float32"))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(
        out, _oracle(y[:2], _np(keras.ops.cast(p_low, "float32")), alpha), rtol=1e-2, atol=1e-6
    )


# --------------------------------------------------------------------------- properties


@st.composite
def problems(draw):
    # A few shapes only: every new shape costs a compilation per op on JAX.
    batch = draw(st.sampled_from([1, 3]))
    k = draw(st.sampled_from([2, 3, 5]))
    extra = draw(st.sampled_from([(), (2,)]))
    shape = (batch, *extra, k)
    from_logits = draw(st.booleans())
    elements = st.floats(-20, 20, width=32) if from_logits else st.floats(2.0**-10, 1.0, width=32)
    pred = draw(hnp.arrays(np.float32, shape, elements=elements))
    soft = draw(st.booleans())
    if soft:
        y = draw(hnp.arrays(np.float32, shape, elements=st.floats(0, 1, width=32)))
    else:
        labels = draw(hnp.arrays(np.int64, shape[:-1], elements=st.integers(0, k - 1)))
        y = np.eye(k, dtype="float32")[labels]
    alpha = draw(st.lists(st.floats(1e-3, 10.0), min_size=k, max_size=k))
    label_smoothing = draw(st.sampled_from([0.0, 0.1, 0.5]))
    axis = draw(st.sampled_from([-1, 1]))
    if axis == 1:
        pred, y = np.moveaxis(pred, -1, 1), np.moveaxis(y, -1, 1)
    return y, pred, alpha, from_logits, label_smoothing, axis


@given(problems())
def test_property_matches_numpy_oracle_and_is_nonnegative(problem):
    y, pred, alpha, from_logits, ls, axis = problem
    out = _np(
        attention_weighted_cce(
            y, pred, alpha, from_logits=from_logits, label_smoothing=ls, axis=axis
        )
    )
    expected = _oracle(y, pred, alpha, from_logits, ls, axis)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    assert np.all(out >= 0)


@given(problems(), st.floats(1e-3, 1e3))
def test_property_scaling_alpha_scales_the_loss(problem, s):
    y, pred, alpha, from_logits, ls, axis = problem
    kw = dict(from_logits=from_logits, label_smoothing=ls, axis=axis)
    base = _np(AttentionWeightedCCE(alpha, **kw)(y, pred))
    scaled = _np(AttentionWeightedCCE([a * s for a in alpha], **kw)(y, pred))
    np.testing.assert_allclose(scaled, s * base, rtol=1e-4, atol=1e-6 * s)


@given(problems(), st.randoms(use_true_random=False))
def test_property_permuting_classes_consistently_is_invariant(problem, rnd):
    y, pred, alpha, from_logits, ls, axis = problem
    k = len(alpha)
    perm = list(range(k))
    rnd.shuffle(perm)
    kw = dict(from_logits=from_logits, label_smoothing=ls, axis=axis)
    base = _np(attention_weighted_cce(y, pred, alpha, **kw))
    permuted = _np(
        attention_weighted_cce(
            np.take(y, perm, axis=axis),
            np.take(pred, perm, axis=axis),
            [alpha[i] for i in perm],
            **kw,
        )
    )
    np.testing.assert_allclose(permuted, base, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- drop-in


def test_compile_fit_evaluate():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(16, 5)).astype("float32")
    labels = (x[:, 0] > 0).astype("int64") + 2 * (x[:, 1] > 0)
    alpha = [0.5, 1.0, 2.0, 1.5]
    for loss, y in (
        (AttentionWeightedCCE(alpha), np.eye(4, dtype="float32")[labels]),
        (SparseAttentionWeightedCCE(alpha), labels),
    ):
        model = _tiny_model()
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss)
        history = model.fit(x, y, batch_size=8, epochs=3, verbose=0)
        losses = history.history["loss"]
        assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], (loss, losses)
        probs = _np(model.predict(x, verbose=0))
        expected = _oracle(np.eye(4)[labels], probs, alpha).mean()
        np.testing.assert_allclose(model.evaluate(x, y, verbose=0), expected, rtol=1e-5)


def _roundtrip_configs(loss):
    config = loss.get_config()
    assert json.loads(json.dumps(config)) == config
    clone = type(loss).from_config(config)
    assert clone.get_config() == config
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(loss)))
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is type(loss)
    assert restored.get_config() == config
    return restored


def test_config_roundtrips():
    for loss in (
        AttentionWeightedCCE("paper"),
        AttentionWeightedCCE(
            np.array([0.5, 1.5, 2.0]),
            from_logits=True,
            label_smoothing=0.1,
            axis=1,
            reduction="sum",
            name="att",
            dtype="float32",
        ),
        AttentionWeightedCCE(
            types.SimpleNamespace(weights=np.array([1.0, 2.0])), dtype="mixed_float16"
        ),
        SparseAttentionWeightedCCE("paper", from_logits=True, reduction=None),
        SparseAttentionWeightedCCE((2, 1, 3), axis=1, dtype="bfloat16"),
    ):
        restored = _roundtrip_configs(loss)
        config = loss.get_config()
        assert all(type(a) is float for a in config["alpha"])
        assert restored.alpha == loss.alpha
        assert restored.dtype == loss.dtype and restored.reduction == loss.reduction
        assert restored.name == loss.name
    assert AttentionWeightedCCE("paper").get_config()["alpha"] == list(PAPER_ALPHA)
    assert AttentionWeightedCCE([1, 2], dtype="mixed_float16").dtype == "float16"


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")  # never trained
def test_saved_model_loads_without_custom_objects(tmp_path):
    rng = np.random.default_rng(10)
    x = rng.normal(size=(6, 5)).astype("float32")
    labels = rng.integers(0, 4, 6)
    for cls, y in (
        (AttentionWeightedCCE, np.eye(4, dtype="float32")[labels]),
        (SparseAttentionWeightedCCE, labels),
    ):
        loss = cls([0.5, 1.0, 2.0, 1.5], reduction="sum", name="paper_loss")
        model = _tiny_model()
        model.compile(optimizer="adam", loss=loss)
        before = model.evaluate(x, y, verbose=0)
        path = tmp_path / f"{cls.__name__}.keras"
        model.save(path)
        loaded = keras.models.load_model(path)  # no custom_objects
        assert type(loaded.loss) is cls
        assert loaded.loss.get_config() == loss.get_config()
        np.testing.assert_allclose(loaded.evaluate(x, y, verbose=0), before, rtol=1e-6)


# --------------------------------------------------------------------------- bad input


BAD_ALPHAS = (
    ([], "empty"),
    ([1.0, -0.5, 1.0], r"finite number > 0.*index \[1\]"),
    ([1.0, 0.0], r"finite number > 0.*index \[1\]"),
    ([float("nan"), 1.0], r"finite number > 0.*index \[0\]"),
    ([1.0, float("inf")], r"finite number > 0.*index \[1\]"),
    (0.5, r"one-dimensional.*alpha=0.5.*\[0.5\] \* num_classes"),
    ([[1.0, 2.0]], "one-dimensional"),
    ("uniform", r"\"paper\".*alpha='uniform'"),
    (None, "alpha=None"),
    ([True, False], "dtype bool"),
    (["a", "b"], "positive finite floats"),
    (types.SimpleNamespace(weights=[]), "empty"),
)


def test_bad_alpha_is_refused_eagerly():
    for alpha, match in BAD_ALPHAS:
        with pytest.raises(ValueError, match=match):
            AttentionWeightedCCE(alpha)
        with pytest.raises(ValueError, match=match):
            SparseAttentionWeightedCCE(alpha)
        with pytest.raises(ValueError, match=match):
            attention_weighted_cce([[1.0, 0.0]], [[0.5, 0.5]], alpha)
        with pytest.raises(ValueError, match=match):
            sparse_attention_weighted_cce([0], [[0.5, 0.5]], alpha)


def test_wrong_alpha_length_names_both():
    _, y, _, probs = _data(k=4)
    msg = r"4 values for y_pred.shape=\(6, 4\).*Received: alpha of length 3"
    with pytest.raises(ValueError, match=msg):
        AttentionWeightedCCE([1.0, 2.0, 3.0])(y, probs)
    with pytest.raises(ValueError, match=msg):
        SparseAttentionWeightedCCE([1.0, 2.0, 3.0])(np.argmax(y, -1), probs)
    with pytest.raises(ValueError, match=r"4 values.*length 3"):
        attention_weighted_cce(y, probs, [1.0, 2.0, 3.0])
    model = _tiny_model(k=4)
    model.compile(loss=AttentionWeightedCCE([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"4 values.*length 2"):
        model.evaluate(np.zeros((2, 5), "float32"), np.eye(4, dtype="float32")[[0, 1]], verbose=0)


def test_shape_mismatch_names_both_shapes():
    y = np.eye(3, dtype="float32")[[0, 1]]
    with pytest.raises(ValueError, match=r"y_true.shape=\(2, 3\), y_pred.shape=\(2, 4\)"):
        attention_weighted_cce(y, np.full((2, 4), 0.25, "float32"), [1.0] * 4)
    with pytest.raises(ValueError, match=r"y_true.shape=\(2,\), y_pred.shape=\(2, 3\)"):
        AttentionWeightedCCE([1.0] * 3)(np.array([0, 1]), np.full((2, 3), 0.3, "float32"))
    with pytest.raises(ValueError, match=r"\(3,\).*y_true.shape=\(2,\), y_pred.shape=\(3, 3\)"):
        SparseAttentionWeightedCCE([1.0] * 3)(np.array([0, 1]), np.full((3, 3), 0.3, "float32"))
    with pytest.raises(ValueError, match=r"y_true.shape=\(2, 3\)"):
        SparseAttentionWeightedCCE([1.0] * 3)(y, np.full((2, 3), 0.3, "float32"))


BAD_OPTIONS = (
    (dict(label_smoothing=1.5), r"`label_smoothing` in \[0, 1\].*label_smoothing=1.5"),
    (dict(label_smoothing=-0.1), "label_smoothing=-0.1"),
    (dict(from_logits="yes"), "from_logits='yes'"),
    (dict(axis=True), "axis=True"),
    (dict(axis=1.0), "axis=1.0"),
    (dict(reduction="avg"), "reduction=avg"),
)


def test_bad_options_are_refused():
    for kwargs, match in BAD_OPTIONS:
        with pytest.raises(ValueError, match=match):
            AttentionWeightedCCE([1.0, 1.0], **kwargs)
        if "label_smoothing" not in kwargs:
            with pytest.raises(ValueError, match=match):
                SparseAttentionWeightedCCE([1.0, 1.0], **kwargs)


def test_axis_out_of_range():
    with pytest.raises(ValueError, match=r"`axis` in \[-2, 2\).*axis=2"):
        AttentionWeightedCCE([1.0, 1.0], axis=2)([[1.0, 0.0]], [[0.5, 0.5]])


# --------------------------------------------------------------------------- distribution

_MIRRORED = textwrap.dedent(
    """
    import json, os
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from keras_freeze import AttentionWeightedCCE

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 5)).astype("float32")
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, 8)]

    def build():
        keras.utils.set_random_seed(1)
        m = keras.Sequential([keras.Input((5,)), keras.layers.Dense(6, activation="tanh"),
                              keras.layers.Dense(4, activation="softmax")])
        m.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss=AttentionWeightedCCE([0.5, 1.0, 2.0, 3.0]))
        return m

    single = build()
    w0 = single.get_weights()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        dist = build()
    dist.set_weights(w0)
    out = {"replicas": strategy.num_replicas_in_sync,
           "probs": single.predict(x, verbose=0).tolist(),
           "eval_single": single.evaluate(x, y, batch_size=8, verbose=0),
           "eval_dist": dist.evaluate(x, y, batch_size=8, verbose=0),
           "train_single": float(single.train_on_batch(x, y)),
           "train_dist": float(dist.train_on_batch(x, y)),
           "max_weight_diff": max(float(np.max(np.abs(a - b)))
                                  for a, b in zip(single.get_weights(), dist.get_weights())),
           "max_weight_change": max(float(np.max(np.abs(a - b)))
                                    for a, b in zip(single.get_weights(), w0))}
    print("RESULT" + json.dumps(out))
    """
)


@pytest.mark.slow  # a second interpreter importing TensorFlow: ~15-60 s
@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute needs the TF backend")
def test_mirrored_strategy_matches_single_device():
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-c", _MIRRORED], capture_output=True, text=True, env=env, timeout=300
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT") :])
    assert out["replicas"] == 2
    rng = np.random.default_rng(0)
    rng.normal(size=(8, 5))
    y = np.eye(4)[rng.integers(0, 4, 8)]
    expected = _oracle(y, np.asarray(out["probs"]), [0.5, 1.0, 2.0, 3.0]).mean()
    np.testing.assert_allclose(out["eval_single"], expected, rtol=1e-5)
    np.testing.assert_allclose(out["eval_dist"], out["eval_single"], rtol=1e-5)
    np.testing.assert_allclose(out["train_dist"], out["train_single"], rtol=1e-5)
    assert out["max_weight_change"] > 1e-3  # the step did something ...
    assert out["max_weight_diff"] < 1e-5  # ... and the same thing on two replicas
