"""The four Table 1 architectures of the COVID CXR example (examples/covid_cxr/models.py).

Each model builds at its published input size with the documented parameter count (checked
against independent figures: torchvision's ResNet-18 count, Keras' own InceptionV3, the
COVIDLite kernel's printed summary, a closed-form count of our Covid-Net), builds at the
smallest side it accepts and trains one step on every backend. pyproject.toml's pytest
`pythonpath` puts examples/covid_cxr on the path.
"""

import doctest

import keras
import models
import numpy as np
import protocol
import pytest

from keras_freeze import CustomWeightedBalancedCCE
from keras_freeze import flatten_layers

NAMES = ["covid-net", "covid-lite", "inception-v3", "resnet18"]
# On JAX every new weight shape compiles its random initializer and the first train step compiles
# the whole model with XLA: building these models costs 10-40 s each on a 2-core CPU, so the tests
# that build one are `slow` there (CI runs slow tests on TensorFlow only; run them on JAX with
# `-m slow`). Everything else runs on every backend.
BUILDS = [pytest.mark.slow] if keras.backend.backend() == "jax" else []


def slow_on_jax(test):
    """Marks `test` slow on the JAX backend only (see `BUILDS`)."""
    return pytest.mark.slow(test) if BUILDS else test


TABLE1_ROWS = {
    "covid-net": "Covid-Net (Train from scratch) [7]",
    "covid-lite": "Covid-Lite (Train from scratch) [5]",
    "inception-v3": "Inception-V3 (100% fine tuning)",
    "resnet18": "ResNet-18+ CWBCE Loss (Train from scratch) [6]",
}


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_registry_lists_the_four_table1_models():
    assert list(models.MODELS) == NAMES
    assert sorted(models.EXPECTED_PARAMS) == sorted(NAMES)
    for name, spec in models.MODELS.items():
        assert spec.name == name
        assert spec.title == TABLE1_ROWS[name]
        assert spec.min_size <= spec.input_size
        assert spec.source and spec.params_note
    assert [s.pretrained for s in models.MODELS.values()] == [False, False, True, False]
    assert {s.input_size for s in models.MODELS.values()} == {480, 224, 299}


def _covid_net_params(side, classes=4):
    """Closed-form parameter count of our Covid-Net (Fig. 2 reconstruction)."""

    def conv(c_in, c_out, k=1, bias=True):
        return k * k * c_in * c_out + (c_out if bias else 0)

    def pepx(c_in, width):
        p, e = c_in // 2, 3 * c_in // 4
        dw = 9 * e + e
        return conv(c_in, p) + conv(p, e) + dw + conv(e, p) + conv(p, width, bias=False) + 4 * width

    total, c_in = conv(3, 56, 7), 56
    for width, modules in models.COVID_NET_STAGES:
        total += conv(c_in, width) + pepx(c_in, width)
        total += sum(pepx(width, width) for _ in range(modules - 1))
        c_in = width
    spatial = -(-side // 2) // 2 // 2 // 2 // 2  # conv1 "same" /2 (ceil), then four 2x2 pools
    flat = spatial * spatial * c_in
    return total + conv(flat, 1024) + conv(1024, 256) + conv(256, classes)


def test_expected_params_match_independent_figures():
    expected = models.EXPECTED_PARAMS
    # torchvision resnet18: 11,689,512 with a 1000-class FC; BatchNorm statistics are buffers
    # there, Keras counts them (2 x 4,800 BatchNorm channels).
    assert expected["resnet18"] == 11_689_512 - 1000 * 513 + 4 * 513 + 2 * 4_800
    # The COVIDLite kernel's summary: 2,981,795 parameters with 3 classes (32 x 3 + 3 head).
    assert expected["covid-lite"] == 2_981_795 + 32 + 1
    assert expected["covid-net"] == _covid_net_params(480)
    # Keras' InceptionV3 (documented: 23,851,784 with its 1000-class top) without that top,
    # plus our GlobalMaxPooling2D -> Dense(4) head.
    assert models.MODELS["inception-v3"].published_params == 23_851_784
    assert expected["inception-v3"] == 23_851_784 - (2048 * 1000 + 1000) + 2048 * 4 + 4


@pytest.mark.parametrize("name", [pytest.param(n, marks=BUILDS) for n in NAMES])
def test_published_size_has_the_documented_parameter_count(name):
    spec = models.MODELS[name]
    model = spec.build(num_classes=4, image_size=spec.input_size)
    assert model.input_shape == (None, spec.input_size, spec.input_size, 3)
    assert model.output_shape == (None, 4)
    assert model.count_params() == models.EXPECTED_PARAMS[name]
    if name == "resnet18":
        assert _trainable(model) == 11_689_512 - 1000 * 513 + 4 * 513
    # --deterministic refuses exactly these on a GPU with JAX or TensorFlow.
    assert _has_max_pooling(model) == (name in protocol.MAX_POOLING)


def _has_max_pooling(model):
    return any(isinstance(layer, keras.layers.MaxPooling2D) for layer in flatten_layers(model))


@slow_on_jax
def test_mobilenetv2_has_no_max_pooling():
    base = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3))
    assert protocol.ARCHITECTURES["freeze"] not in protocol.MAX_POOLING
    assert not _has_max_pooling(base)


@pytest.mark.parametrize("name", [pytest.param("covid-lite", marks=BUILDS), "inception-v3"])
def test_below_the_smallest_side_the_architecture_itself_fails(name):
    spec = models.MODELS[name]
    with pytest.raises(ValueError):
        spec.builder(3, spec.min_size - 1, None)


@slow_on_jax
def test_covid_net_count_follows_the_input_side():
    for side in (32, 80):
        assert models.MODELS["covid-net"].build(4, side).count_params() == _covid_net_params(side)


# Inception-V3's first train step costs 10-60 s on a CPU (tracing / XLA compilation of ~300
# layers); CI runs it on TensorFlow only (slow marker), the others everywhere.
TRAINED = [
    pytest.param("covid-net", marks=BUILDS),
    pytest.param("covid-lite", marks=BUILDS),
    pytest.param("inception-v3", marks=pytest.mark.slow),
    pytest.param("resnet18", marks=BUILDS),
]


@pytest.mark.parametrize("name", TRAINED)
def test_builds_at_smallest_side_and_trains_one_step(name):
    spec = models.MODELS[name]
    size = spec.min_size  # the fastest step, and the smallest side each model accepts
    rng = np.random.default_rng(0)
    images = rng.random((4, size, size, 3), dtype=np.float32)
    labels = np.eye(4, dtype=np.float32)[[0, 1, 2, 3]]
    model = spec.build(num_classes=4, image_size=size)
    loss = (
        CustomWeightedBalancedCCE(counts=[3, 5, 6, 1])
        if name == "resnet18"
        else keras.losses.CategoricalCrossentropy()
    )
    # Eager steps are the fastest on TensorFlow and torch; JAX runs op by op far slower.
    eager = keras.backend.backend() != "jax"
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss, run_eagerly=eager)
    before = [np.array(w) for w in model.trainable_weights]
    value = model.train_on_batch(images, labels)
    assert np.isfinite(value)
    after = [np.array(w) for w in model.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    probs = model.predict_on_batch(images)
    assert probs.shape == (4, 4)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("resnet18", {"num_classes": 1, "image_size": 64}, "num_classes to be an int >= 2"),
        ("resnet18", {"num_classes": 4.0, "image_size": 64}, "Received: num_classes=4.0"),
        ("covid-lite", {"num_classes": 4, "image_size": 63}, "image_size to be an int >= 64"),
        ("inception-v3", {"num_classes": 4, "image_size": True}, "Received: image_size=True"),
        ("covid-net", {"num_classes": 4, "image_size": 64, "weights": "imagenet"}, "scratch"),
        ("inception-v3", {"num_classes": 4, "image_size": 75, "weights": "x"}, "weights='x'"),
    ],
)
def test_bad_arguments_raise(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.MODELS[name].build(**kwargs)


@slow_on_jax
def test_docstring_examples_run(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(models, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0
