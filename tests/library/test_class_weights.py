"""class_weights against scikit-learn and the formulas of Cui et al. (2019)."""

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.utils.class_weight import compute_class_weight

from keras_freeze import AttentionWeightedCCE
from keras_freeze import ClassWeights
from keras_freeze import class_weights


@st.composite
def labels_with_every_class(draw):
    k = draw(st.integers(2, 6))
    extra = draw(hnp.arrays(np.int64, st.integers(0, 40), elements=st.integers(0, k - 1)))
    y = np.concatenate([np.arange(k), extra])
    return draw(st.permutations(y.tolist())), k


@given(labels_with_every_class())
def test_balanced_equals_scikit_learn(case):
    y, k = case
    y = np.asarray(y)
    expected = compute_class_weight("balanced", classes=np.arange(k), y=y)
    w = class_weights(y)
    np.testing.assert_array_equal(np.asarray(w), expected)  # same formula, bit for bit
    assert w.counts == tuple(np.bincount(y, minlength=k).tolist())
    # One-hot rows and a data set of batches give the same weights.
    one_hot = np.eye(k)[y]
    assert class_weights(one_hot).weights == w.weights
    batches = [(np.zeros((len(part), 2)), part) for part in np.array_split(y, 3)]
    assert class_weights(batches, num_classes=k).weights == w.weights


@given(labels_with_every_class(), st.floats(0.0, 0.99999))
def test_effective_number_is_cui_et_al_normalised_to_k(case, beta):
    y, k = case
    counts = np.bincount(y, minlength=k)
    raw = np.array([(1 - beta) / (1 - beta**n) for n in counts])
    expected = raw / raw.sum() * k
    w = class_weights(y, "effective_number", beta=beta)
    np.testing.assert_allclose(np.asarray(w), expected, rtol=1e-12)
    assert sum(w) == pytest.approx(k, rel=1e-12)
    assert w.beta == beta


@given(labels_with_every_class())
def test_inverse_sqrt_normalised_to_k(case):
    y, k = case
    counts = np.bincount(y, minlength=k)
    raw = 1 / np.sqrt(counts)
    w = class_weights(y, "inverse_sqrt")
    np.testing.assert_allclose(np.asarray(w), raw / raw.sum() * k, rtol=1e-12)
    # Rarer classes weigh more, for every method.
    order = np.argsort(counts, kind="stable")
    for method in ("balanced", "effective_number", "inverse_sqrt"):
        weights = np.asarray(class_weights(y, method))
        assert np.all(np.diff(weights[order]) <= 1e-12)


def test_effective_number_limits():
    y = [0] * 90 + [1] * 10
    assert class_weights(y, "effective_number", beta=0.0).weights == (1.0, 1.0)
    near_one = np.asarray(class_weights(y, "effective_number", beta=1 - 1e-9))
    np.testing.assert_allclose(
        near_one, np.asarray(class_weights(y)) / sum(class_weights(y)) * 2, rtol=1e-5
    )


def test_is_accepted_as_alpha_and_as_keras_class_weight():
    y = np.array([0, 0, 0, 1, 2, 2])
    w = class_weights(y)
    loss = AttentionWeightedCCE(alpha=w)
    assert tuple(loss.alpha) == w.weights
    y_true = keras.ops.one_hot(y, 3)
    y_pred = keras.ops.softmax(
        keras.ops.convert_to_tensor(np.random.default_rng(0).normal(size=(6, 3)), "float32")
    )
    per_sample = keras.losses.categorical_crossentropy(y_true, y_pred)
    expected = np.mean(keras.ops.convert_to_numpy(per_sample) * np.asarray(w)[y])
    assert float(loss(y_true, y_pred)) == pytest.approx(expected, rel=1e-6)
    assert w.to_class_weight() == {0: w[0], 1: w[1], 2: w[2]}


def test_reads_a_pydataset_and_tf_data_when_available():
    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return np.zeros((3, 1)), np.array([[0, 1, 1], [1, 1, 1]][i])

    assert class_weights(Batches()).counts == (1, 5)
    tf = pytest.importorskip("tensorflow")
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((6, 1)), np.array([0, 1, 1, 1, 1, 1]))).batch(
        4
    )
    assert class_weights(ds).counts == (1, 5)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (([0, 1],), {"method": "focal"}, "method"),
        (([0, 1],), {"method": "effective_number", "beta": 1.0}, r"beta in \[0, 1\)"),
        (([0, 1],), {"method": "effective_number", "beta": -0.1}, "beta"),
        (([0, 2],), {}, r"class\(es\) \[1\]"),
        (([0, 1],), {"num_classes": 3}, r"class\(es\) \[2\]"),
        (([0, 3],), {"num_classes": 3}, r"in \[0, 2\]"),
        (([0.5, 1],), {}, "integer"),
        (([],), {}, "at least one sample"),
        (([[1, 1], [0, 1]],), {}, "one-hot"),
        (([(np.zeros(2),)],), {}, "batches"),
    ],
)
def test_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        class_weights(*args, **kwargs)


def test_result_type():
    w = class_weights([0, 1, 1])
    assert isinstance(w, ClassWeights)
    assert len(w) == 2 and list(w) == [1.5, 0.75] and w.method == "balanced" and w.beta is None
