"""Tests for `freeze_fraction`, `unfreeze` and `flatten_layers`.

References are independent of the implementation: exact integer arithmetic for
the counts (fractions are drawn as i/1000), brute-force prefix search for
`by="params"`, Keras' own weight lists for parameter counts, and the paper's
literal `base.layers[:77]`.
"""

import math

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import keras_freeze
from keras_freeze import FreezeReport
from keras_freeze import flatten_layers
from keras_freeze import freeze
from keras_freeze import freeze_fraction
from keras_freeze import unfreeze

FRACTIONS = st.integers(0, 1000)  # fraction = i / 1000, so floor(i * n / 1000) is exact


def _chain(n, width=2):
    """A Sequential of `n` layers, alternating Dense and weightless ReLU."""
    layers = [
        keras.layers.Dense(width, name=f"d{i}") if i % 2 == 0 else keras.layers.ReLU(name=f"r{i}")
        for i in range(n)
    ]
    return keras.Sequential(layers)


def _flags(model):
    return [layer.trainable for layer in flatten_layers(model)]


def _n_params(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


@pytest.fixture
def mobilenet():
    """A fresh MobileNetV2 per test: the tests freeze it, wrap it and record its flags, and
    `unfreeze` restores the flags of the first freeze, which a shared model would take from
    whichever test ran before it (an order that pytest-xdist changes from run to run)."""
    keras.utils.clear_session()
    return keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))


# --------------------------------------------------------------------------- counts


@given(n=st.integers(1, 40), i=FRACTIONS)
def test_ordered_freezes_exact_prefix(n, i):
    model = _chain(n)
    report = freeze_fraction(model, i / 1000)
    k = i * n // 1000
    assert _flags(model) == [False] * k + [True] * (n - k)
    assert report.n_frozen == k and report.n_layers == n
    assert list(report.frozen) == [f"{'d' if j % 2 == 0 else 'r'}{j}" for j in range(k)]


@given(n=st.integers(1, 40), i=FRACTIONS, seed=st.integers(0, 2**31 - 1))
def test_stochastic_count_and_reproducibility(n, i, seed):
    a, b = _chain(n), _chain(n)
    ra = freeze_fraction(a, i / 1000, mode="stochastic", seed=seed)
    rb = freeze_fraction(b, i / 1000, mode="stochastic", seed=seed)
    assert sum(not f for f in _flags(a)) == i * n // 1000
    assert _flags(a) == _flags(b)
    assert ra.frozen == rb.frozen


@given(n=st.integers(6, 40), i=st.integers(200, 800))
def test_stochastic_varies_across_seeds(n, i):
    model = _chain(n)
    subsets = {
        freeze_fraction(model, i / 1000, mode="stochastic", seed=s).frozen for s in range(12)
    }
    assert len(subsets) > 1


def test_stochastic_is_uniform_over_layers():
    # Each of 10 layers should be frozen with probability 3/10; 600 draws.
    n, draws = 10, 600
    model = _chain(n)
    counts = np.zeros(n)
    for seed in range(draws):
        freeze_fraction(model, 0.3, mode="stochastic", seed=seed)
        counts += np.array([not f for f in _flags(model)])
    expected = draws * 0.3
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 27.9  # chi-square, 9 degrees of freedom, p = 0.001


@given(n=st.integers(1, 30), i=FRACTIONS, j=FRACTIONS, stochastic=st.booleans())
def test_idempotent_and_history_free(n, i, j, stochastic):
    kwargs = {"mode": "stochastic", "seed": 7} if stochastic else {}
    fresh, used = _chain(n), _chain(n)
    freeze_fraction(used, j / 1000)  # an earlier, different freeze
    freeze_fraction(used, i / 1000, **kwargs)
    first = _flags(used)
    freeze_fraction(used, i / 1000, **kwargs)
    freeze_fraction(fresh, i / 1000, **kwargs)
    assert _flags(used) == first == _flags(fresh)


def test_smaller_fraction_unfreezes_on_every_backend():
    # Regression: on TensorFlow, `model.trainable = True` on an already
    # trainable model was skipped by AutoTrackable and left layers frozen.
    model = _chain(3)
    freeze_fraction(model, 0.67)
    assert _flags(model) == [False, False, True]
    freeze_fraction(model, 0.34)
    assert _flags(model) == [False, True, True]


@given(
    n=st.integers(1, 30),
    i=FRACTIONS,
    original=st.lists(st.booleans(), min_size=30, max_size=30),
    repeats=st.integers(1, 3),
)
def test_unfreeze_restores_original_flags(n, i, original, repeats):
    model = _chain(n)
    for layer, flag in zip(model.layers, original[:n], strict=True):
        layer.trainable = flag
    before = _flags(model)
    for r in range(repeats):
        freeze_fraction(model, i / 1000, mode="stochastic", seed=r)
    assert unfreeze(model) == sum(before)
    assert _flags(model) == before


def test_unfreeze_without_record_makes_all_trainable():
    model = _chain(4)
    for layer in model.layers:
        layer.trainable = False
    assert unfreeze(model) == 4
    assert all(_flags(model))


def test_decimal_reading_of_fraction():
    # 0.29 * 100 == 28.999999999999996 in floating point; users mean 29.
    assert freeze_fraction(_chain(100), 0.29).n_frozen == 29
    assert freeze_fraction(_chain(100), 0.57).n_frozen == 57
    assert freeze_fraction(_chain(3), np.float32(0.5)).n_frozen == 1
    # NumPy floats are read as the decimal they print as, too: float32(0.29)
    # is 0.28999999165534973 in binary, which would freeze 28.
    for dtype in (np.float16, np.float32, np.float64):
        report = freeze_fraction(_chain(100), dtype(0.29))
        assert report.n_frozen == 29, dtype
        assert report.fraction == 0.29
    # by="params": float32(0.3) is 0.30000001192092896; of 100 layers of 6
    # parameters each, 0.3 needs 180 parameters (30 layers), its binary value 31.
    equal = keras.Sequential([keras.Input((2,))] + [keras.layers.Dense(2) for _ in range(100)])
    assert freeze_fraction(equal, np.float32(0.3), by="params").n_frozen == 30


# --------------------------------------------------------------------------- by params


def _dense_stack(widths):
    # Zero initial weights: the parameter counts are the same, and JAX compiles no random
    # initialiser per kernel shape (that took most of these tests' time there).
    dense = [keras.layers.Dense(w, kernel_initializer="zeros") for w in widths]
    layers = [keras.Input((3,)), *dense]
    return keras.Sequential(layers)


@given(
    widths=st.lists(st.integers(1, 16), min_size=1, max_size=10),
    i=FRACTIONS,
)
def test_by_params_is_shortest_sufficient_prefix(widths, i):
    model = _dense_stack(widths)
    params = [layer.count_params() for layer in model.layers]
    total = sum(params)
    # Brute force: the smallest k with sum(params[:k]) >= (i / 1000) * total.
    k = next(k for k in range(len(params) + 1) if 1000 * sum(params[:k]) >= i * total)
    report = freeze_fraction(model, i / 1000, by="params")
    assert _flags(model) == [False] * k + [True] * (len(params) - k)
    assert report.trainable_params_after == sum(params[k:])


@given(widths=st.lists(st.integers(1, 16), min_size=2, max_size=10), seed=st.integers(0, 99))
def test_by_params_stochastic_holds_the_fraction(widths, seed):
    model = _dense_stack(widths)
    params = np.array([layer.count_params() for layer in model.layers])
    freeze_fraction(model, 0.5, mode="stochastic", by="params", seed=seed)
    frozen = ~np.array(_flags(model))
    assert 2 * params[frozen].sum() >= params.sum()
    # Minimal in its own random order: dropping the last-chosen layer falls short.
    order = np.random.default_rng(seed).permutation(len(params))
    k = int(frozen.sum())
    assert set(np.flatnonzero(frozen)) == set(order[:k])
    assert 2 * params[order[: k - 1]].sum() < params.sum()


def test_by_params_needs_built_model_with_params():
    with pytest.raises(ValueError, match="needs a built model"):
        freeze_fraction(keras.Sequential([keras.layers.Dense(2)]), 0.5, by="params")
    weightless = keras.Sequential([keras.Input((3,)), keras.layers.ReLU()])
    with pytest.raises(ValueError, match="0 parameters"):
        freeze_fraction(weightless, 0.5, by="params")


# --------------------------------------------------------------------------- the paper


def test_paper_mobilenetv2_cut(mobilenet):
    base = mobilenet
    assert len(base.layers) == 154
    report = freeze_fraction(base, 0.5)
    assert [layer.trainable for layer in base.layers] == [False] * 77 + [True] * 77
    assert list(report.frozen) == [layer.name for layer in base.layers[:77]]
    # Weightless layers are counted, as the paper counts them.
    kinds = {type(layer).__name__ for layer in base.layers[:77]}
    assert {"InputLayer", "ReLU", "ZeroPadding2D", "Add"} <= kinds


def test_until_block_8_depthwise_bn_is_the_paper_cut(mobilenet):
    report = freeze(mobilenet, until="block_8_depthwise_BN")
    assert mobilenet.layers[76].name == "block_8_depthwise_BN"
    assert [layer.trainable for layer in mobilenet.layers] == [False] * 77 + [True] * 77
    assert isinstance(report, FreezeReport)
    assert report.frozen == tuple(layer.name for layer in mobilenet.layers[:77])
    assert (report.mode, report.until, report.match, report.n_layers) == (
        "until",
        "block_8_depthwise_BN",
        None,
        154,
    )
    # The same cut as the paper's freeze_fraction(base, 0.5).
    assert freeze_fraction(mobilenet, 0.5).frozen == report.frozen
    assert report.summary().startswith("freeze(until='block_8_depthwise_BN')")


def test_nested_model_is_expanded_not_frozen_whole(mobilenet):
    base = mobilenet
    model = keras.Sequential(
        [base, keras.layers.GlobalMaxPooling2D(), keras.layers.Dense(4, activation="softmax")]
    )
    flat = flatten_layers(model)
    assert len(flat) == 156 and flat[:154] == list(base.layers)
    report = freeze_fraction(model, 0.5)  # half of 156: base.layers[:78]
    assert report.n_frozen == 78 and base.trainable
    assert [layer.trainable for layer in base.layers] == [False] * 78 + [True] * 76
    # The paper's call is on the backbone:
    freeze_fraction(base, 0.5)
    assert [layer.trainable for layer in flatten_layers(model)] == [False] * 77 + [True] * 79
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    expected = sum(
        _n_params(layer.trainable_weights) for layer in base.layers[77:] + model.layers[1:]
    )
    assert _n_params(model.trainable_weights) == expected


def test_report_parameter_counts_and_summary(mobilenet):
    base = mobilenet
    unfreeze(base)
    total_trainable = _n_params(base.trainable_weights)
    non_trainable = _n_params(base.non_trainable_weights)
    report = freeze_fraction(base, 0.5)
    frozen_trainable = sum(_n_params(layer.trainable_weights) for layer in base.layers[:77])
    assert frozen_trainable == 0
    moved = sum(
        _n_params(w for w in layer.weights if "moving" not in w.path) for layer in base.layers[:77]
    )
    assert report.trainable_params_before == total_trainable
    assert report.non_trainable_params_before == non_trainable
    assert report.trainable_params_after == total_trainable - moved
    assert report.non_trainable_params_after == non_trainable + moved
    text = str(report)
    assert "77 / 154" in text and f"{total_trainable:,}" in text
    assert report.summary() == text
    unfreeze(base)


# --------------------------------------------------------------------------- training


def bn_model():
    """Dense -> BatchNormalization -> Dense head (also used by test_freeze_by_name.py)."""
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, name="dense_in")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs)


def _fit(model, epochs=2):
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(32, 4)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 2, 32), 2)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0)


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_frozen_layers_do_not_change_during_fit(freeze_bn):
    model = bn_model()
    # Layers: input, dense_in, bn, head. 0.75 freezes input, dense_in, bn.
    freeze_fraction(model, 0.75 if freeze_bn else 0.5)
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}
    _fit(model)
    after = {layer.name: layer.get_weights() for layer in model.layers}
    bn_moving_mean_same = np.array_equal(before["bn"][2], after["bn"][2])
    assert bn_moving_mean_same == freeze_bn  # frozen BN runs in inference mode
    dense_pairs = zip(before["dense_in"], after["dense_in"], strict=True)
    assert all(np.array_equal(a, b) for a, b in dense_pairs)
    assert not np.array_equal(before["head"][0], after["head"][0])


def test_frozen_set_survives_keras_save_and_load(tmp_path, mobilenet):
    base = mobilenet
    model = keras.Sequential(
        [base, keras.layers.GlobalMaxPooling2D(), keras.layers.Dense(4, activation="softmax")]
    )
    freeze_fraction(base, 0.5, mode="stochastic", seed=3)
    flags = _flags(model)
    path = tmp_path / "frozen.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    # Keras saves no `trainable` for an InputLayer (it has no weights and no
    # config key for it): it loads as trainable, which changes nothing.
    assert [type(layer).__name__ for layer in flatten_layers(loaded)][0] == "InputLayer"
    assert _flags(loaded)[1:] == flags[1:]
    assert flags.count(False) > 60
    assert [layer.name for layer in flatten_layers(loaded)] == [
        layer.name for layer in flatten_layers(model)
    ]
    assert _n_params(loaded.trainable_weights) == _n_params(model.trainable_weights)
    unfreeze(base)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fraction": 1.5}, r"Expected fraction in \[0, 1\]. Received: fraction=1.5"),
        ({"fraction": -0.1}, r"Received: fraction=-0.1"),
        ({"fraction": math.nan}, r"Received: fraction=nan"),
        ({"fraction": "0.5"}, r"Received: fraction='0.5'"),
        ({"fraction": True}, r"Received: fraction=True"),
        ({"mode": "random"}, r"mode to be one of .*Received: mode='random'"),
        ({"by": "weights"}, r"by to be one of .*Received: by='weights'"),
        ({"seed": 1}, r"Received: mode='ordered', seed=1"),
        ({"mode": "stochastic", "seed": 1.5}, r"Received: seed=1.5"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        freeze_fraction(_chain(4), **kwargs)


def test_model_without_layers_and_non_models():
    with pytest.raises(ValueError, match="at least one layer"):
        freeze_fraction(keras.Sequential(), 0.5)
    with pytest.raises(ValueError, match="Expected a keras.Model"):
        freeze_fraction(object(), 0.5)
    with pytest.raises(ValueError, match="Expected a keras.Model"):
        unfreeze(keras.layers.Dense(2))


def test_public_api():
    assert keras_freeze.freeze_fraction is freeze_fraction
    assert isinstance(keras_freeze.__version__, str)
    assert set(keras_freeze.__all__) <= set(dir(keras_freeze))


def test_refreezing_a_nested_model_resets_its_inner_layers():
    # On TensorFlow, `model.trainable = True` skips a nested model that is
    # already trainable, which left its frozen layers frozen.
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(2)])
    outer = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(1)])
    freeze_fraction(outer, 0.7)
    assert [layer.trainable for layer in flatten_layers(outer)] == [False, False, True]
    freeze_fraction(outer, 0.0)
    assert [layer.trainable for layer in flatten_layers(outer)] == [True, True, True]
    freeze_fraction(outer, 0.34)
    assert [layer.trainable for layer in flatten_layers(outer)] == [False, True, True]
    unfreeze(outer)
    assert all(layer.trainable for layer in flatten_layers(outer))
