"""CustomWeightedBalancedCCE (CWBCCE, Tyagi, Roy & Bansal, ICPR 2022) against independent oracles.

Oracles: the NumPy formula `-sum_c beta_c y_c log p_c`, Keras' own CategoricalCrossentropy
(uniform weights; per-sample weights `beta[label]`, which is what the authors' `class_weight`
computes) and the balanced-weight formula `(1 - N_c / N) / (K - 1)` written out in NumPy.
"""

import json

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_freeze import CustomWeightedBalancedCCE
from keras_freeze import custom_weighted_balanced_cce
from keras_freeze import cwbcce_weights

EPS = keras.config.epsilon()
# The four-class counts of the authors' notebooks (MrinalTyagi/CWBCCE-COVID19, `num_images`).
NOTEBOOK_COUNTS = [3143, 5084, 6728, 1345]


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)


def numpy_cwbcce(y_true, y_pred, weights, from_logits=False):
    """Independent NumPy oracle of the per-sample loss."""
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if from_logits:
        shifted = y_pred - y_pred.max(axis=-1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    else:
        p = y_pred / y_pred.sum(axis=-1, keepdims=True)
        log_p = np.log(np.clip(p, EPS, 1.0 - EPS))
    return -(np.asarray(weights) * np.asarray(y_true) * log_p).sum(axis=-1)


@st.composite
def batches(draw, soft=False):
    k = draw(st.integers(2, 4))
    n = draw(st.integers(1, 4))
    logits = draw(hnp.arrays(np.float32, (n, k), elements=st.floats(-6, 6, width=32)))
    weights = draw(hnp.arrays(np.float64, (k,), elements=st.floats(0.01, 10.0)))
    if soft:
        raw = draw(hnp.arrays(np.float32, (n, k), elements=st.floats(0.0, 1.0, width=32)))
        y_true = (raw + 1e-3) / (raw + 1e-3).sum(axis=-1, keepdims=True)
    else:
        labels = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, k - 1)))
        y_true = np.eye(k, dtype=np.float32)[labels]
    return y_true.astype(np.float32), logits, weights


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


@given(batches(soft=True), st.booleans())
def test_per_sample_matches_numpy_oracle(batch, from_logits):
    y_true, logits, weights = batch
    y_pred = logits if from_logits else _softmax(logits)
    got = _np(custom_weighted_balanced_cce(y_true, y_pred, weights, from_logits=from_logits))
    want = numpy_cwbcce(y_true, y_pred, weights, from_logits)
    assert got.shape == (len(y_true),)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@given(batches())
def test_class_equals_keras_cce_with_class_weight_as_sample_weight(batch):
    """What the authors ran: CCE with `class_weight=beta` in `fit` (mean over the batch)."""
    y_true, logits, weights = batch
    y_pred = _softmax(logits)
    got = float(CustomWeightedBalancedCCE(weights=weights)(y_true, y_pred))
    sample_weight = weights[y_true.argmax(axis=-1)]
    want = float(
        keras.losses.CategoricalCrossentropy()(y_true, y_pred, sample_weight=sample_weight)
    )
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@given(batches(soft=True))
def test_unit_weights_equal_categorical_crossentropy(batch):
    y_true, logits, _ = batch
    y_pred = _softmax(logits)
    ones = np.ones(y_true.shape[-1])
    got = _np(custom_weighted_balanced_cce(y_true, y_pred, ones))
    want = _np(keras.losses.categorical_crossentropy(y_true, y_pred))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@given(hnp.arrays(np.int64, st.integers(2, 6), elements=st.integers(0, 10_000)))
def test_balanced_weights_match_formula(counts):
    if np.count_nonzero(counts) < 2:
        with pytest.raises(ValueError, match="at least two classes with samples"):
            cwbcce_weights(counts)
        return
    beta = np.array(cwbcce_weights(counts))
    expected = (1.0 - counts / counts.sum()) / (len(counts) - 1)
    np.testing.assert_allclose(beta, expected, rtol=1e-12)
    assert beta.sum() == pytest.approx(1.0)
    assert np.all(beta > 0)
    assert np.all(np.diff(beta[np.argsort(counts)]) <= 1e-15)  # rarer class, larger weight


def test_balanced_weights_of_the_authors_notebook():
    # (1 - n_c / 16300) / 3, as `beta_values` in the notebooks.
    beta = cwbcce_weights(NOTEBOOK_COUNTS)
    assert [round(b, 6) for b in beta] == [0.269059, 0.229366, 0.195746, 0.305828]


def test_counts_equal_their_balanced_weights():
    y_true = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 3]]
    y_pred = _softmax(np.random.default_rng(0).normal(size=(5, 4)))
    by_counts = CustomWeightedBalancedCCE(counts=NOTEBOOK_COUNTS)
    by_weights = CustomWeightedBalancedCCE(weights=cwbcce_weights(NOTEBOOK_COUNTS))
    assert float(by_counts(y_true, y_pred)) == pytest.approx(float(by_weights(y_true, y_pred)))


@pytest.mark.parametrize("reduction", ["sum", "sum_over_batch_size", "none"])
def test_reductions_by_hand(reduction):
    y_true = [[0.0, 1.0], [1.0, 0.0]]
    y_pred = [[0.2, 0.8], [0.6, 0.4]]
    per_sample = [-0.75 * np.log(0.8), -0.25 * np.log(0.6)]
    got = _np(CustomWeightedBalancedCCE(weights=[0.25, 0.75], reduction=reduction)(y_true, y_pred))
    want = {"sum": sum(per_sample), "sum_over_batch_size": np.mean(per_sample)}
    np.testing.assert_allclose(got, want.get(reduction, per_sample), rtol=1e-6)


def test_config_round_trip_and_json_serialisation():
    for loss in (
        CustomWeightedBalancedCCE(weights=[0.2725, 0.252, 0.242, 0.23175], label_smoothing=0.1),
        CustomWeightedBalancedCCE(counts=NOTEBOOK_COUNTS, from_logits=True, name="cw"),
    ):
        config = loss.get_config()
        clone = CustomWeightedBalancedCCE.from_config(config)
        assert clone.get_config() == config
        payload = json.dumps(keras.saving.serialize_keras_object(loss))
        assert '"keras_freeze>CustomWeightedBalancedCCE"' in payload
        restored = keras.saving.deserialize_keras_object(json.loads(payload))
        assert type(restored) is CustomWeightedBalancedCCE
        assert restored.get_config() == config
        assert restored.class_weights == loss.class_weights


def test_keras_model_saves_and_loads_without_custom_objects(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 16)]
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss=CustomWeightedBalancedCCE(counts=[10, 5, 1]))
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # a traced train step
    before = model.evaluate(x, y, verbose=0)
    path = tmp_path / "cwbcce.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.loss, CustomWeightedBalancedCCE)
    assert loaded.loss.get_config() == model.loss.get_config()
    assert loaded.evaluate(x, y, verbose=0) == pytest.approx(before, rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one of `weights`"),
        ({"weights": [1.0, 2.0], "counts": [1, 2]}, "exactly one of `weights`"),
        ({"weights": [1.0, -2.0]}, r"Received: weights=\[1.0, -2.0\]"),
        ({"weights": [1.0, float("nan")]}, "finite number > 0"),
        ({"weights": [[1.0, 2.0]]}, "one-dimensional"),
        ({"weights": []}, "non-empty"),
        ({"weights": "balanced"}, "Received: weights='balanced'"),
        ({"counts": [5]}, "at least 2 classes"),
        ({"counts": [5, -1]}, "finite number >= 0"),
        ({"counts": [0, 7, 0]}, "at least two classes with samples"),
        ({"weights": [1.0, 1.0], "label_smoothing": 2.0}, "label_smoothing"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CustomWeightedBalancedCCE(**kwargs)


def test_weight_count_must_match_classes():
    loss = CustomWeightedBalancedCCE(weights=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"2 values for y_pred.shape=\(1, 2\).*length 3"):
        loss([[0.0, 1.0]], [[0.3, 0.7]])
    with pytest.raises(ValueError, match="weights of length 2"):
        custom_weighted_balanced_cce([[0.0, 1.0, 0.0]], [[0.2, 0.7, 0.1]], [1.0, 2.0])
