"""freeze(until=..., match=...) and train_bn on freeze / freeze_fraction."""

import fnmatch
import warnings

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_freeze import bn_model

from keras_freeze import flatten_layers
from keras_freeze import freeze
from keras_freeze import freeze_fraction
from keras_freeze import unfreeze


def _chain(n):
    return keras.Sequential(
        [keras.Input((2,))] + [keras.layers.Dense(2, name=f"d{i}") for i in range(n)]
    )


@given(n=st.integers(1, 8), data=st.data())
def test_until_freezes_the_prefix_up_to_and_including_the_layer(n, data):
    model = _chain(n)
    i = data.draw(st.integers(0, n - 1))
    report = freeze(model, until=f"d{i}")
    assert [layer.trainable for layer in model.layers] == [True] * 0 + [False] * (i + 1) + [
        True
    ] * (n - i - 1)
    assert report.n_frozen == i + 1


@given(
    names=st.lists(st.sampled_from(["conv", "conv_bn", "head", "block_1", "block_2"]), min_size=1),
    patterns=st.lists(
        st.sampled_from(["conv*", "*_bn", "block_?", "head", "b*"]), min_size=1, max_size=3
    ),
)
def test_match_freezes_exactly_the_matching_layers(names, patterns):
    layers = [keras.layers.Dense(2, name=f"{name}_{i}") for i, name in enumerate(names)]
    model = keras.Sequential([keras.Input((2,)), *layers])
    names = [layer.name for layer in layers]
    expected = [not any(fnmatch.fnmatchcase(n, p) for p in patterns) for n in names]
    if not all(any(fnmatch.fnmatchcase(n, p) for n in names) for p in patterns):
        with pytest.raises(ValueError, match="matches none"):
            freeze(model, match=patterns)
        return
    report = freeze(model, match=patterns)
    assert [layer.trainable for layer in model.layers] == expected
    assert report.match == tuple(patterns)
    assert set(report.frozen) == {n for n, t in zip(names, expected, strict=True) if not t}


def test_nested_layers_are_named_and_the_rest_made_trainable():
    inner = keras.Sequential([keras.layers.Dense(2, name="a"), keras.layers.Dense(2, name="b")])
    model = keras.Sequential([keras.Input((2,)), inner, keras.layers.Dense(1, name="head")])
    model.get_layer("head").trainable = False
    freeze(model, until="a")
    assert [layer.trainable for layer in flatten_layers(model)] == [False, True, True]
    unfreeze(model)
    assert [layer.trainable for layer in flatten_layers(model)] == [True, True, False]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one"),
        ({"until": "d0", "match": "d*"}, "exactly one"),
        ({"until": "d_0"}, r"close names: \['d0'"),
        ({"match": ["d0", "hed"]}, r"'hed'.*matches none"),
        ({"match": []}, "non-empty"),
        ({"until": 3}, "layer name"),
        ({"until": "d0", "train_bn": "yes"}, "train_bn"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        freeze(_chain(2), **kwargs)


def test_freezing_only_batchnorm_with_train_bn_is_an_error():
    with pytest.raises(ValueError, match="freeze at least one layer"):
        freeze(bn_model(), match="bn", train_bn=True)


@pytest.mark.parametrize("how", ["freeze", "freeze_fraction"])
def test_train_bn_keeps_batchnorm_trainable_in_training_mode(how):
    """BN in the frozen set trains (gamma, moving mean move); the other frozen layers do not."""
    model = bn_model()
    if how == "freeze":
        report = freeze(model, until="bn", train_bn=True)
    else:
        report = freeze_fraction(model, 0.75, train_bn=True)  # input, dense_in, bn
    assert report.kept_trainable == ("bn",) and report.train_bn
    assert report.frozen == ("input_layer", "dense_in")
    assert "bn" in report.trainable
    assert [layer.trainable for layer in model.layers] == [False, False, True, True]
    before = [w.copy() for w in model.get_layer("bn").get_weights()]
    dense_before = model.get_layer("dense_in").get_weights()[0].copy()
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(32, 4)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 2, 32), 2)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    after = model.get_layer("bn").get_weights()
    assert not np.array_equal(before[0], after[0])  # gamma trains
    assert not np.array_equal(before[2], after[2])  # moving mean updated: training mode
    np.testing.assert_array_equal(model.get_layer("dense_in").get_weights()[0], dense_before)
    assert "train_bn=True" in report.summary()


def test_freeze_warns_on_a_compiled_model():
    model = _chain(2)
    model.compile("sgd", "mse")
    with pytest.warns(UserWarning, match="freeze changed which layers"):
        freeze(model, until="d0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        freeze(model, until="d0")  # nothing changes: no warning


def test_load_weights_after_freezing(tmp_path):
    """The record `unfreeze` keeps must not trap Keras' weight loading in a cycle."""
    model = _chain(3)
    freeze(model, until="d0")
    model.compile(keras.optimizers.SGD(0.1, momentum=0.5), "mse")
    model.fit(np.ones((4, 2)), np.ones((4, 2)), epochs=1, verbose=0)
    model.save_weights(tmp_path / "w.weights.h5")
    saved = [np.array(keras.ops.convert_to_numpy(v)) for v in model.optimizer.variables]
    for v in model.optimizer.variables:
        v.assign(np.zeros(v.shape, v.dtype))
    model.load_weights(tmp_path / "w.weights.h5")
    for variable, value in zip(model.optimizer.variables, saved, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value)
    with pytest.warns(UserWarning, match="unfreeze changed"):
        assert unfreeze(model) == 3
