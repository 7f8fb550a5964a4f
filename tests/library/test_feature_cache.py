"""Tests for `split_frozen_prefix` and `cache_features`.

Oracles are independent of the split: the uncached model itself (`model(x)`,
`model.fit` on the images), Keras sub-models read off the original graph
(`keras.Model(base.input, base.get_layer(...).output)`), hand-counted cut sizes,
and NumPy casts for the float16 storage.
"""

import json
import os
import warnings

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_freeze._feature_cache import FeatureCache
from keras_freeze._feature_cache import FeatureDataset
from keras_freeze._feature_cache import _rebatch
from keras_freeze._feature_cache import cache_features
from keras_freeze._freeze import freeze_fraction
from keras_freeze._prefix import FrozenPrefixSplit
from keras_freeze._prefix import split_frozen_prefix

L = keras.layers


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _images(n=6, size=8, channels=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, size, size, channels)).astype("float32")


def _conv_model(size=8):
    """Functional: a frozen conv/BN/ReLU stem (BN in inference), a trainable conv/BN head."""
    inputs = keras.Input((size, size, 3), name="image")
    x = L.Conv2D(6, 3, padding="same", name="stem", trainable=False)(inputs)
    x = L.BatchNormalization(name="stem_bn", trainable=False)(x)
    x = L.ReLU(name="stem_relu", trainable=False)(x)
    x = L.Conv2D(2, 1, name="squeeze", trainable=False)(x)  # 8x8x2: the smallest frozen tensor
    x = L.Conv2D(4, 3, strides=2, padding="same", name="head_conv")(x)
    x = L.BatchNormalization(name="head_bn")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    outputs = L.Dense(3, activation="softmax", name="out")(x)
    model = keras.Model(inputs, outputs, name="conv_model")
    bn = model.get_layer("stem_bn")  # non-trivial moving statistics, so inference mode matters
    bn.moving_mean.assign(np.linspace(-0.5, 0.5, 6).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 6).astype("float32"))
    return model


def _residual_model():
    """A frozen tensor crosses the boundary: `squeeze_b` feeds the trainable `add`.

    Cuts in call order: {stem} 64 values, {stem, squeeze_a} 80, {squeeze_a,
    squeeze_b} 32: the best cut holds two tensors.
    """
    inputs = keras.Input((4, 4, 3), name="image")
    x1 = L.Conv2D(4, 1, name="stem", trainable=False)(inputs)
    x2 = L.Conv2D(1, 1, name="squeeze_a", trainable=False)(x1)
    x3 = L.Conv2D(1, 1, name="squeeze_b", trainable=False)(x1)
    t = L.Conv2D(1, 3, padding="same", name="train")(x2)
    s = L.Add(name="add")([x3, t])
    outputs = L.Dense(2, name="out")(L.Flatten(name="flat")(s))
    return keras.Model(inputs, outputs, name="residual")


def _nested_model():
    """Sequential(Functional(Sequential(...)), ...): every level is inlined."""
    inner = keras.Sequential(
        [keras.Input((8, 8, 3)), L.Conv2D(4, 3, name="c1"), L.ReLU(name="r1")], name="inner"
    )
    middle_in = keras.Input((8, 8, 3))
    x = inner(middle_in)
    x = L.Conv2D(2, 1, name="c2")(x)
    middle = keras.Model(middle_in, L.MaxPooling2D(name="pool")(x), name="middle")
    middle.trainable = False
    model = keras.Sequential([middle, L.Flatten(name="flat"), L.Dense(3, name="out")], name="outer")
    model.build((None, 8, 8, 3))
    return model


def _mobile_freeze_net(size, head_activation="softmax"):
    """The paper's model: Sequential([MobileNetV2, GMP, Dense(4)]), base.layers[:77] frozen."""
    base = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(size, size, 3)
    )
    freeze_fraction(base, 0.5)
    model = keras.Sequential([base, L.GlobalMaxPooling2D(), L.Dense(4, activation=head_activation)])
    return model, base


# The split.


def test_paper_model_cut_is_block_7_add_at_224():
    model, base = _mobile_freeze_net(224)
    split = split_frozen_prefix(model)
    assert split.cut == ("block_7_add",)
    assert split.cut_shapes == ((14, 14, 64),)
    assert split.values_per_sample == 14 * 14 * 64 == 12_544
    assert split.bytes_per_sample("float16") == 25_088
    assert split.bytes_per_sample("float32") == 50_176
    assert split.prefix_layers[-1] == "block_7_add"
    assert set(split.prefix_layers) <= {layer.name for layer in base.layers[:77]}


def test_paper_model_split_matches_model_and_sub_model_oracle():
    model, base = _mobile_freeze_net(32, head_activation=None)
    split = split_frozen_prefix(model)
    assert split.cut == ("block_7_add",) and split.cut_shapes == ((2, 2, 64),)
    x = _images(3, size=32)
    oracle = keras.Model(base.input, base.get_layer("block_7_add").output)
    features = _np(split.prefix(x))
    np.testing.assert_allclose(features, _np(oracle(x)), rtol=1e-6, atol=0)
    np.testing.assert_allclose(_np(split.suffix(features)), _np(model(x)), rtol=1e-5, atol=0)
    # The suffix trains what the model trains, and only that.
    assert {id(v) for v in split.suffix.trainable_weights} == {
        id(v) for v in model.trainable_weights
    }


@pytest.mark.parametrize("builder", [_conv_model, _nested_model], ids=["functional", "nested"])
def test_suffix_of_prefix_equals_model(builder):
    model = builder()
    split = split_frozen_prefix(model)
    x = _images(5)
    np.testing.assert_allclose(
        _np(split.suffix(split.prefix(x))), _np(model(x)), rtol=1e-6, atol=1e-6
    )
    assert isinstance(split, FrozenPrefixSplit)
    assert "cached per sample" in str(split)


def test_cut_sizes_by_hand():
    split = split_frozen_prefix(_conv_model())
    assert split.cut == ("squeeze",)
    assert split.cut_shapes == ((8, 8, 2),) and split.values_per_sample == 128
    assert split.prefix_layers == ("stem", "stem_bn", "stem_relu", "squeeze")
    nested = split_frozen_prefix(_nested_model())
    # c1 6x6x4 = 144, c2 6x6x2 = 72, pool 3x3x2 = 18, flatten 18 (a tie: the latest wins).
    assert nested.cut == ("flat",) and nested.values_per_sample == 18
    assert nested.suffix_layers == ("out",)


def test_residual_crossing_the_boundary():
    model = _residual_model()
    split = split_frozen_prefix(model)
    assert set(split.cut) == {"squeeze_a", "squeeze_b"}
    assert split.values_per_sample == 32
    assert len(split.suffix.inputs) == 2
    x = _images(4, size=4)
    np.testing.assert_allclose(
        _np(split.suffix(split.prefix(x))), _np(model(x)), rtol=1e-6, atol=1e-6
    )


def test_transfer_learning_pattern_with_training_false():
    base = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(3, 3, name="c"), L.ReLU()])
    base.trainable = False
    inputs = keras.Input((8, 8, 3))
    x = base(inputs, training=False)
    outputs = L.Dense(2, name="out")(L.GlobalAveragePooling2D(name="gap")(x))
    model = keras.Model(inputs, outputs)
    split = split_frozen_prefix(model)
    assert split.cut == ("gap",)
    x = _images(2)
    np.testing.assert_allclose(_np(split.suffix(split.prefix(x))), _np(model(x)), atol=1e-6)


def test_training_the_suffix_trains_and_saves_the_model(tmp_path):
    model = _conv_model()
    split = split_frozen_prefix(model)
    before = [_np(w) for w in model.weights]
    x, y = _images(8), keras.utils.to_categorical(np.arange(8) % 3, 3)
    split.suffix.compile(keras.optimizers.SGD(0.5), "categorical_crossentropy")
    split.suffix.fit(split.prefix.predict(x, verbose=0), y, epochs=2, verbose=0)
    after = {w.path: _np(w) for w in model.weights}
    changed = {
        w.path for w, b in zip(model.weights, before, strict=True) if not np.array_equal(_np(w), b)
    }
    assert any(p.startswith("head_conv") for p in changed)
    assert not any(p.startswith(("stem", "squeeze")) for p in changed)  # the frozen prefix
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    for w in loaded.weights:
        np.testing.assert_array_equal(_np(w), after[w.path])
    np.testing.assert_allclose(_np(loaded(x)), _np(model(x)), atol=1e-6)


# Refusals.


def _seq(*layers, size=8):
    model = keras.Sequential([keras.Input((size, size, 3)), *layers], name="seq")
    return model


def _frozen(layer):
    layer.trainable = False
    return layer


REFUSALS = {
    "no frozen prefix": (
        lambda: _seq(L.Conv2D(2, 3, name="first_conv"), L.Flatten(), L.Dense(2)),
        r"no frozen prefix.*'first_conv'",
    ),
    "stochastic freeze": (
        lambda: _seq(
            _frozen(L.Conv2D(2, 3, name="c0")),
            L.Conv2D(2, 3, name="c1"),
            _frozen(L.Conv2D(2, 3, name="c2")),
            L.Flatten(),
            L.Dense(2),
        ),
        r"'c2'.*frozen but comes after layer 'c1'",
    ),
    "dropout": (
        lambda: _seq(
            _frozen(L.Conv2D(2, 3)), _frozen(L.Dropout(0.5, name="drop")), L.Flatten(), L.Dense(2)
        ),
        r"'drop' \(Dropout\).*training",
    ),
    "gaussian noise": (
        lambda: _seq(
            _frozen(L.Conv2D(2, 3)),
            _frozen(L.GaussianNoise(0.1, name="noise")),
            L.Flatten(),
            L.Dense(2),
        ),
        r"'noise' \(GaussianNoise\)",
    ),
    "random augmentation": (
        lambda: _seq(
            _frozen(L.RandomFlip(name="flip")), _frozen(L.Conv2D(2, 3)), L.Flatten(), L.Dense(2)
        ),
        r"'flip' \(RandomFlip\)",
    ),
    "trainable augmentation first": (
        lambda: _seq(L.RandomFlip(name="flip"), _frozen(L.Conv2D(2, 3)), L.Flatten(), L.Dense(2)),
        r"'flip' \(RandomFlip\)",
    ),
    "trainable batch norm": (
        lambda: _seq(
            _frozen(L.Conv2D(2, 3)),
            L.BatchNormalization(name="bn", center=False, scale=False),
            _frozen(L.Conv2D(2, 3, name="after_bn")),
            L.Flatten(),
            L.Dense(2),
        ),
        r"'after_bn'.*'bn' \(BatchNormalization\).*BatchNormalization with trainable=True",
    ),
    "nothing to train": (
        lambda: _seq(_frozen(L.Conv2D(2, 3)), L.Flatten(), _frozen(L.Dense(2))),
        r"no trainable weights",
    ),
    "unknown dimension": (
        lambda: keras.Sequential(
            [keras.Input((None, None, 3)), _frozen(L.Conv2D(2, 3, name="conv")), L.Dense(2)]
        ),
        r"'conv'.*unknown dimension",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_name_the_layer(case):
    build, message = REFUSALS[case]
    with pytest.raises(ValueError, match=message):
        split_frozen_prefix(build())


class _NoisyCustom(L.Layer):
    """A custom layer taking `training`: assumed to use it."""

    def call(self, x, training=None):
        return x


def test_deterministic_layers_join_the_prefix_and_custom_training_layers_do_not():
    model = _seq(
        L.Rescaling(1 / 255, name="rescale"),  # trainable flag, but weightless: joins
        _frozen(L.Dense(4, name="frozen_dense")),  # Dense takes `training`, ignores it
        _frozen(L.Dropout(0.0, name="no_drop")),
        _frozen(L.Lambda(lambda t: t * 2, name="double")),
        _frozen(L.Conv2D(1, 1, name="squeeze")),
        L.Flatten(name="flat"),
        L.Dense(2, name="out"),
    )
    split = split_frozen_prefix(model)
    assert split.prefix_layers == (
        "rescale",
        "frozen_dense",
        "no_drop",
        "double",
        "squeeze",
        "flat",
    )
    custom = _seq(
        _frozen(L.Conv2D(2, 3)), _frozen(_NoisyCustom(name="custom")), L.Flatten(), L.Dense(2)
    )
    with pytest.raises(ValueError, match=r"'custom' \(_NoisyCustom\).*training"):
        split_frozen_prefix(custom)


def test_refuses_trainable_batch_norm_inside_frozen_model():
    inner = keras.Sequential(
        [keras.Input((8, 8, 3)), L.Conv2D(2, 3), L.BatchNormalization(name="inner_bn")]
    )
    inner.trainable = False
    inner.get_layer("inner_bn").trainable = True
    model = keras.Sequential([inner, L.Flatten(), L.Dense(2)])
    with pytest.raises(ValueError, match=r"'inner_bn'.*trainable=True"):
        split_frozen_prefix(model)


def test_refuses_paper_stochastic_freeze():
    model = _seq(*[L.Conv2D(2, 1, name=f"c{i}") for i in range(8)], L.Flatten(), L.Dense(2))
    freeze_fraction(model, 0.5, mode="stochastic", seed=1)
    first_trainable = next(layer.name for layer in model.layers if layer.trainable)
    with pytest.raises(ValueError, match=f"comes after layer '{first_trainable}'"):
        split_frozen_prefix(model)


@pytest.mark.parametrize(
    "bad",
    ["subclassed", "unbuilt", "not a model"],
)
def test_refuses_models_without_a_graph(bad):
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = {
        "subclassed": Sub(),
        "unbuilt": keras.Sequential([L.Dense(2)]),
        "not a model": L.Dense(2),
    }[bad]
    if bad == "subclassed":
        model(np.zeros((1, 3), "float32"))
    message = {"subclassed": "subclassed", "unbuilt": "built model", "not a model": "keras.Model"}
    with pytest.raises(ValueError, match=message[bad]):
        split_frozen_prefix(model)


# The cache.


def test_cache_equals_uncached_prefix_and_model():
    model = _conv_model()
    split = split_frozen_prefix(model)
    x = _images(11)
    cache = cache_features(split, x, batch_size=4, dtype="float32", verbose=0)
    assert isinstance(cache, FeatureCache) and len(cache) == 11 and not cache.reused
    np.testing.assert_array_equal(cache.features.shape, (11, 8, 8, 2))
    np.testing.assert_allclose(cache.features, _np(split.prefix(x)), rtol=1e-6, atol=1e-6)
    predicted = split.suffix.predict(cache.dataset(batch_size=4), verbose=0)
    np.testing.assert_allclose(predicted, _np(model(x)), rtol=1e-6, atol=1e-6)
    assert cache.nbytes == 11 * split.bytes_per_sample("float32")
    assert cache.labels is None and cache.fingerprint is not None


def test_float16_is_the_float32_cache_rounded():
    split = split_frozen_prefix(_conv_model())
    x = _images(7)
    f32 = cache_features(split, x, dtype="float32", verbose=0)
    f16 = cache_features(split, x, verbose=0)
    assert f16.dtype == "float16" and f16.features.dtype == np.float16
    np.testing.assert_array_equal(f16.features, f32.features.astype(np.float16))
    assert f16.nbytes * 2 == f32.nbytes
    assert f16.fingerprint != f32.fingerprint
    (batch,) = f16.dataset(batch_size=7)[0]
    assert batch.dtype == np.float32  # cast back for the suffix


def test_residual_cache_has_one_array_per_cut_tensor():
    model = _residual_model()
    split = split_frozen_prefix(model)
    x = _images(5, size=4)
    cache = cache_features(split, x, dtype="float32", verbose=0)
    assert isinstance(cache.features, list) and len(cache.features) == 2
    np.testing.assert_allclose(
        split.suffix.predict(cache.dataset(), verbose=0), _np(model(x)), rtol=1e-6, atol=1e-6
    )


class _Batches(keras.utils.PyDataset):
    """(x, y) batches of 3, as an image loader gives them."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return -(-len(self.x) // 3)

    def __getitem__(self, i):
        return self.x[3 * i : 3 * i + 3], self.y[3 * i : 3 * i + 3]


@pytest.mark.parametrize("kind", ["pydataset", "generator", "list"])
def test_batched_data_gives_the_array_features_and_labels(kind):
    split = split_frozen_prefix(_conv_model())
    x, y = _images(10), np.arange(10) % 3
    data = _Batches(x, y)
    if kind == "generator":
        data = (batch for batch in [data[i] for i in range(len(data))])
    elif kind == "list":
        data = [data[i] for i in range(len(data))]
    cache = cache_features(split, data, batch_size=4, dtype="float32", verbose=0)
    reference = cache_features(split, x, batch_size=4, dtype="float32", verbose=0)
    np.testing.assert_array_equal(cache.features, reference.features)
    np.testing.assert_array_equal(cache.labels, y)
    assert cache.fingerprint is None  # no key: nothing identifies the data


def _count_prefix_runs(monkeypatch, split):
    runs = []
    original = split.prefix.predict_on_batch

    def counted(x):
        runs.append(len(x))
        return original(x)

    monkeypatch.setattr(split.prefix, "predict_on_batch", counted)
    return runs


def test_memmap_round_trip_and_reuse_by_fingerprint(tmp_path, monkeypatch):
    model = _conv_model()
    split = split_frozen_prefix(model)
    runs = _count_prefix_runs(monkeypatch, split)
    x = _images(9)
    first = cache_features(split, x, batch_size=4, path=tmp_path, verbose=0)
    assert runs == [4, 4, 1] and not first.reused
    assert isinstance(first.arrays[0], np.memmap) and os.path.isdir(first.path)
    in_memory = cache_features(split, x, batch_size=4, verbose=0)
    np.testing.assert_array_equal(first.features, in_memory.features)
    runs.clear()
    second = cache_features(split, x, batch_size=4, path=tmp_path, verbose=0)
    assert runs == [] and second.reused
    assert second.fingerprint == first.fingerprint and second.path == first.path
    assert second.build_seconds == pytest.approx(first.build_seconds)
    np.testing.assert_array_equal(second.features, first.features)
    # Changed weights (or data) invalidate the cache.
    stem = model.get_layer("stem")
    stem.kernel.assign(_np(stem.kernel) * 2)
    third = cache_features(split, x, batch_size=4, path=tmp_path, verbose=0)
    assert runs == [4, 4, 1] and not third.reused and third.path != first.path
    np.testing.assert_allclose(
        np.asarray(third.features, "float32"), _np(split.prefix(x)), rtol=1e-3, atol=1e-3
    )
    fourth = cache_features(split, x[::-1], batch_size=4, path=tmp_path, verbose=0)
    assert not fourth.reused and fourth.fingerprint != third.fingerprint


def test_keyed_dataset_on_disk(tmp_path, monkeypatch, capsys):
    split = split_frozen_prefix(_conv_model())
    runs = _count_prefix_runs(monkeypatch, split)
    x, y = _images(7), np.arange(7) % 3
    key = {"files": [f"img{i}.png" for i in range(7)], "preprocessing": "rescale", "size": 8}
    with pytest.raises(ValueError, match="key="):
        cache_features(split, _Batches(x, y), path=tmp_path, verbose=0)
    first = cache_features(split, _Batches(x, y), path=tmp_path, key=key, verbose=2)
    second = cache_features(split, _Batches(x, y), path=tmp_path, key=key, verbose=2)
    assert len(runs) == 1 and second.reused
    np.testing.assert_array_equal(second.labels, y)
    out = capsys.readouterr().out
    assert "Feature cache: 7 samples x 8x8x2 values (float16)" in out and "reused" in out
    other = cache_features(split, _Batches(x, y), path=tmp_path, key={**key, "size": 9}, verbose=0)
    assert not other.reused and other.fingerprint != first.fingerprint


def test_first_epoch_loss_equals_uncached_training():
    x, y = _images(24, seed=1), keras.utils.to_categorical(np.arange(24) % 3, 3)
    uncached_model, cached_model = _conv_model(), _conv_model()
    cached_model.set_weights(uncached_model.get_weights())  # the same seed, in effect
    uncached_model.compile(keras.optimizers.Adam(1e-2), "categorical_crossentropy")
    uncached = uncached_model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    split = split_frozen_prefix(cached_model)
    cache = cache_features(split, x, dtype="float32", verbose=0)
    split.suffix.compile(keras.optimizers.Adam(1e-2), "categorical_crossentropy")
    # shuffle=False: Keras' fit shuffles the order of a PyDataset's batches by default.
    cached = split.suffix.fit(cache.dataset(y=y, batch_size=8), epochs=2, shuffle=False, verbose=0)
    for a, b in zip(uncached.history["loss"], cached.history["loss"], strict=True):
        assert abs(a - b) <= 1e-4 * abs(a)
    for a, b in zip(uncached_model.weights, cached_model.weights, strict=True):
        np.testing.assert_allclose(_np(a), _np(b), rtol=1e-4, atol=1e-5)


def test_dataset_indices_shuffle_and_weights():
    arrays = (np.arange(10, dtype=np.float16).reshape(10, 1),)
    y, w = np.arange(10) * 10, np.linspace(0, 1, 10)
    ds = FeatureDataset(arrays, y, sample_weight=w, indices=[7, 2, 5], batch_size=2)
    assert len(ds) == 2
    x0, y0, w0 = ds[0]
    np.testing.assert_array_equal(x0[:, 0], [7, 2]) and np.testing.assert_array_equal(y0, [70, 20])
    np.testing.assert_array_equal(w0, w[[7, 2]])
    assert x0.dtype == np.float32
    shuffled = FeatureDataset(arrays, y, batch_size=10, shuffle=True, seed=3)
    first = shuffled[0][1].copy()
    assert sorted(first) == list(y) and list(first) != list(y)
    shuffled.on_epoch_end()
    assert sorted(shuffled[0][1]) == list(y) and list(shuffled[0][1]) != list(first)
    for bad in [dict(y=y[:3]), dict(indices=[10]), dict(batch_size=0), dict(indices=[[1]])]:
        with pytest.raises(ValueError):
            FeatureDataset(arrays, **{"y": y, **bad})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dtype="int8"), "float16"),
        (dict(batch_size=0), "batch_size"),
        (dict(verbose=3), "verbose"),
    ],
)
def test_cache_argument_errors(kwargs, message):
    split = split_frozen_prefix(_conv_model())
    with pytest.raises(ValueError, match=message):
        cache_features(split, _images(2), **kwargs)


def test_cache_data_errors():
    split = split_frozen_prefix(_conv_model())
    with pytest.raises(ValueError, match="at least one sample"):
        cache_features(split, [], verbose=0)
    with pytest.raises(ValueError, match="iterable of batches"):
        cache_features(split, 3, verbose=0)
    with pytest.raises(ValueError, match="split_frozen_prefix"):
        cache_features(_conv_model(), _images(2), verbose=0)
    mixed = [(_images(2), np.zeros(2)), _images(2)]
    with pytest.raises(ValueError, match="labels"):
        cache_features(split, mixed, batch_size=1, verbose=0)


@given(
    sizes=st.lists(st.integers(1, 7), min_size=1, max_size=8),
    batch_size=st.integers(1, 9),
)
def test_rebatch_keeps_every_sample_in_order(sizes, batch_size):
    starts = np.cumsum([0, *sizes])
    batches = [
        (np.arange(a, b), np.arange(a, b) * 2, 1)
        for a, b in zip(starts[:-1], starts[1:], strict=True)
    ]
    out = list(_rebatch(iter(batches), batch_size))
    xs = np.concatenate([x for x, _, _ in out])
    np.testing.assert_array_equal(xs, np.arange(starts[-1]))
    np.testing.assert_array_equal(np.concatenate([y for _, y, _ in out]), xs * 2)
    assert all(len(x) == batch_size for x, _, _ in out[:-1]) and 0 < len(out[-1][0]) <= batch_size
    assert sum(units for _, _, units in out) == len(sizes)


def test_float16_overflow_warns_and_progress_bar_prints(capsys):
    inputs = keras.Input((2,))
    big = L.Dense(2, name="big", trainable=False, kernel_initializer="ones")(inputs)
    split = split_frozen_prefix(keras.Model(inputs, L.Dense(1, name="out")(big)))
    x = np.array([[1e5, 0.0], [1.0, 2.0], [3.0, 4.0]], "float32")  # 1e5 > float16's 65504
    with pytest.warns(UserWarning, match="2 feature values overflowed float16"):
        cache = cache_features(split, x, batch_size=2, verbose=1)
    assert np.isinf(cache.features[0]).all() and np.isfinite(cache.features[1:]).all()
    out = capsys.readouterr().out
    assert "3/3" in out and "Feature cache: 3 samples x 2 values (float16) = 12 bytes" in out


# --------------------------------------------------------------------------
# Bad input, round 3 (issue 26)
# --------------------------------------------------------------------------


def test_feature_cache_key_with_a_long_array_hashes_all_of_it(tmp_path, monkeypatch):
    split = split_frozen_prefix(_conv_model())
    runs = _count_prefix_runs(monkeypatch, split)
    x = _images()
    paths = np.array([f"/data/img{i:05d}.png" for i in range(3000)], dtype=object)
    changed = paths.copy()
    changed[1500] = "/data/other.png"
    assert str(paths) == str(changed)  # NumPy abbreviates: the old key could not tell them apart
    first = cache_features(split, x, path=tmp_path, key={"files": paths}, verbose=0)
    second = cache_features(split, x, path=tmp_path, key={"files": changed}, verbose=0)
    assert first.fingerprint != second.fingerprint and not second.reused
    assert len(runs) == 2
    again = cache_features(split, x, path=tmp_path, key={"files": paths}, verbose=0)
    assert again.reused and again.fingerprint == first.fingerprint
    numeric = cache_features(split, x, path=tmp_path, key={"ids": np.arange(3000)}, verbose=0)
    bumped = cache_features(
        split, x, path=tmp_path, key={"ids": np.arange(3000) + (np.arange(3000) == 1500)}, verbose=0
    )
    assert numeric.fingerprint != bumped.fingerprint


def _damage_garbage(folder):
    path = folder / "x0.bin"
    path.write_bytes(np.random.default_rng(1).bytes(path.stat().st_size))


def _damage_truncate_features(folder):
    path = folder / "x0.bin"
    path.write_bytes(path.read_bytes()[:10])


def _damage_truncate_meta(folder):
    path = folder / "meta.json"
    path.write_text(path.read_text()[:20])


def _damage_delete_meta(folder):
    (folder / "meta.json").unlink()


def _damage_delete_features(folder):
    (folder / "x0.bin").unlink()


@pytest.mark.parametrize(
    "damage",
    [
        _damage_garbage,
        _damage_truncate_features,
        _damage_truncate_meta,
        _damage_delete_meta,
        _damage_delete_features,
    ],
    ids=["garbage", "truncated_features", "truncated_meta", "deleted_meta", "deleted_features"],
)
def test_feature_cache_damaged_entry_is_rebuilt_with_a_warning(tmp_path, monkeypatch, damage):
    split = split_frozen_prefix(_conv_model())
    x = _images()
    first = cache_features(split, x, dtype="float32", path=tmp_path, verbose=0)
    expected = np.array(first.features)
    folder = tmp_path / os.path.basename(first.path)
    del first
    damage(folder)
    runs = _count_prefix_runs(monkeypatch, split)
    with pytest.warns(UserWarning, match=r"feature cache folder '.*features-.*' is damaged"):
        rebuilt = cache_features(split, x, dtype="float32", path=tmp_path, verbose=0)
    assert runs and not rebuilt.reused and rebuilt.path == str(folder)
    np.testing.assert_array_equal(np.array(rebuilt.features), expected)
    # And the rebuilt entry is sound: reused without a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert cache_features(split, x, dtype="float32", path=tmp_path, verbose=0).reused
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["files"]["x0.bin"]["bytes"] == (folder / "x0.bin").stat().st_size


def test_feature_cache_wrong_channel_count_is_refused_clearly():
    split = split_frozen_prefix(_conv_model())
    with pytest.raises(
        ValueError, match=r"shape \(8, 8, 3\).*\(6, 8, 8, 1\).*channel count differs.*np\.repeat"
    ):
        cache_features(split, _images(channels=1), verbose=0)


@pytest.mark.parametrize("shuffle", ["False", 0, 1, None])
def test_feature_dataset_shuffle_must_be_a_bool(shuffle):
    split = split_frozen_prefix(_conv_model())
    cache = cache_features(split, _images(), verbose=0)
    with pytest.raises(ValueError, match=rf"`shuffle` to be a bool. Received: shuffle={shuffle!r}"):
        cache.dataset(y=np.arange(6), shuffle=shuffle)


@pytest.mark.parametrize("seed", [0, 7, None])
def test_feature_dataset_order_is_shuffle_order_of_seed_and_epoch(seed):
    from keras_freeze._loader import shuffle_order

    arrays = (np.arange(20, dtype=np.float32).reshape(20, 1),)
    indices = np.array([3, 5, 7, 9, 11, 13, 2, 4, 6])
    ds = FeatureDataset(
        arrays, np.arange(20), indices=indices, batch_size=4, shuffle=True, seed=seed
    )
    assert isinstance(ds.seed, int)
    for epoch in range(3):
        served = np.concatenate([ds[i][1] for i in range(len(ds))])
        np.testing.assert_array_equal(served, indices[shuffle_order(len(indices), ds.seed, epoch)])
        ds.on_epoch_end()
    unshuffled = FeatureDataset(arrays, np.arange(20), indices=indices, batch_size=4)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in unshuffled]), indices)
