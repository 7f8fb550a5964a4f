"""Tests for `grad_cam` and `upsample_heatmap`.

Oracles are independent of the cut-and-differentiate machinery: closed forms on
linear-conv models (1x1 convolutions, global average pooling and a Dense layer,
where d score / d A is a known constant at every position) computed in NumPy, and
on TensorFlow and PyTorch the standard Grad-CAM recipe on a MobileNetV2
(`keras.Model(inputs, [layer.output, model.output])` under the backend's own
autodiff, with the activations as an intermediate tensor).
"""

import functools

import keras
import numpy as np
import pytest
from hypothesis import assume
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_freeze import grad_cam
from keras_freeze import upsample_heatmap

L = keras.layers
H, W, C_IN, C, K = 4, 5, 3, 6, 3


def _images(n=5, seed=0, size=(H, W, C_IN)):
    return np.random.default_rng(seed).normal(size=(n, *size)).astype("float32")


def _weights(seed=1, c_in=C_IN, c=C, k=K):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(1, 1, c_in, c)).astype("float32"),
        rng.normal(size=(c,)).astype("float32"),
        rng.normal(size=(c, k)).astype("float32"),
        rng.normal(size=(k,)).astype("float32"),
    )


def _linear_model(weights, activation=None, softmax_layer=False):
    """Input -> Conv2D(C, 1x1, linear) 'conv' -> GAP -> Dense(K) [-> Softmax]."""
    inputs = keras.Input((H, W, C_IN))
    conv = L.Conv2D(C, 1, name="conv")
    dense = L.Dense(K, activation=activation, name="dense")
    x = dense(L.GlobalAveragePooling2D(name="gap")(conv(inputs)))
    if softmax_layer:
        x = L.Softmax(name="softmax")(x)
    model = keras.Model(inputs, x)
    conv.set_weights(list(weights[:2]))
    dense.set_weights(list(weights[2:]))
    return model


def _normalise(cam):
    cam = np.maximum(cam, 0.0)
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, cam / np.where(peak > 0, peak, 1.0), 0.0)


def _reference(x, weights, classes=None):
    """The closed form: A = x Wc + bc, d y_k / d A_c = Wd[c, k] / HW at every position."""
    wc, bc, wd, bd = (w.astype("float64") for w in weights)
    a = x.astype("float64") @ wc[0, 0] + bc  # (N, H, W, C)
    if classes is None:
        classes = np.argmax(a.mean(axis=(1, 2)) @ wd + bd, axis=-1)
    alpha = wd[:, classes].T / (a.shape[1] * a.shape[2])  # (N, C)
    return _normalise(np.einsum("nhwc,nc->nhw", a, alpha))


# (1) The linear-conv model, in closed form.


def test_linear_conv_model_matches_the_closed_form():
    weights = _weights()
    model, x = _linear_model(weights), _images()
    for k in range(K):
        maps = grad_cam(model, x, class_index=k)
        assert maps.shape == (len(x), H, W) and maps.dtype == np.float32
        np.testing.assert_allclose(maps, _reference(x, weights, np.full(len(x), k)), atol=1e-5)


def test_default_class_is_the_predicted_one_and_default_layer_the_last_4d():
    weights = _weights(seed=3)
    model, x = _linear_model(weights), _images(n=8, seed=4)
    predicted = np.argmax(keras.ops.convert_to_numpy(model(x)), axis=-1)
    assert len(set(predicted.tolist())) > 1  # the test sees more than one class
    expected = _reference(x, weights, predicted)
    np.testing.assert_allclose(grad_cam(model, x), expected, atol=1e-5)
    np.testing.assert_allclose(grad_cam(model, x, layer="conv"), expected, atol=1e-5)
    np.testing.assert_allclose(
        grad_cam(model, x, layer=model.get_layer("conv")), expected, atol=1e-5
    )


def test_batches_and_backend_tensors_give_the_same_maps():
    weights = _weights()
    model, x = _linear_model(weights), _images(n=7)
    expected = _reference(x, weights, np.full(len(x), 2))
    for batch_size in (1, 3, 32):
        np.testing.assert_allclose(
            grad_cam(model, x, class_index=2, batch_size=batch_size), expected, atol=1e-5
        )
    tensor = keras.ops.convert_to_tensor(x)
    np.testing.assert_allclose(grad_cam(model, tensor, class_index=2), expected, atol=1e-5)


def test_an_all_negative_map_stays_zero():
    wc, bc, wd, bd = _weights()
    weights = (np.abs(wc), np.abs(bc), -np.abs(wd), bd)  # A >= 0 for x >= 0, alpha < 0
    model = _linear_model(weights)
    x = np.abs(_images())
    maps = grad_cam(model, x, class_index=0)
    assert np.all(maps == 0.0)


# (2) A softmax head: the pre-softmax logits are scored.


@pytest.mark.parametrize("head", ["dense_softmax", "softmax_layer"])
def test_softmax_heads_score_the_logits(head):
    weights = _weights(seed=5)
    x = _images(seed=6)
    if head == "dense_softmax":
        model = _linear_model(weights, activation="softmax")
    else:
        model = _linear_model(weights, softmax_layer=True)
    for k in range(K):
        np.testing.assert_allclose(
            grad_cam(model, x, class_index=k),
            _reference(x, weights, np.full(len(x), k)),
            atol=1e-5,
        )
    predicted = np.argmax(keras.ops.convert_to_numpy(model(x)), axis=-1)
    np.testing.assert_allclose(grad_cam(model, x), _reference(x, weights, predicted), atol=1e-5)


def test_a_sigmoid_head_scores_its_output():
    """No softmax: the output itself; d sigmoid(z_k) / d A = s'(z_k) Wd[:, k] / HW, a positive
    factor per image, so the normalised map is the linear one."""
    weights = _weights(seed=7)
    model, x = _linear_model(weights, activation="sigmoid"), _images(seed=8)
    np.testing.assert_allclose(
        grad_cam(model, x, class_index=1), _reference(x, weights, np.full(len(x), 1)), atol=1e-5
    )


# (3) Nested models and cuts crossed by a residual connection.


def _nested_model(seed=9):
    """Sequential[functional backbone(conv 'inner_a' -> conv 'inner_b'), GAP, Dense]."""
    rng = np.random.default_rng(seed)
    wa = rng.normal(size=(1, 1, C_IN, C)).astype("float32")
    ba = rng.normal(size=(C,)).astype("float32")
    wb = rng.normal(size=(1, 1, C, 4)).astype("float32")
    bb = rng.normal(size=(4,)).astype("float32")
    wd = rng.normal(size=(4, K)).astype("float32")
    bd = rng.normal(size=(K,)).astype("float32")
    inputs = keras.Input((H, W, C_IN))
    a = L.Conv2D(C, 1, name="inner_a")(inputs)
    b = L.Conv2D(4, 1, name="inner_b")(a)
    backbone = keras.Model(inputs, b, name="backbone")
    model = keras.Sequential(
        [backbone, L.GlobalAveragePooling2D(), L.Dense(K, activation="softmax", name="top")]
    )
    backbone.get_layer("inner_a").set_weights([wa, ba])
    backbone.get_layer("inner_b").set_weights([wb, bb])
    model.get_layer("top").set_weights([wd, bd])
    return model, (wa, ba, wb, bb, wd, bd)


def test_a_layer_inside_a_nested_model():
    model, (wa, ba, wb, bb, wd, bd) = _nested_model()
    x = _images(seed=10)
    for k in range(K):
        classes = np.full(len(x), k)
        # Layer inner_a: d y_k / d A = Wb Wd[:, k] / HW.
        expected = _reference(x, (wa, ba, wb[0, 0] @ wd, bd), classes)
        np.testing.assert_allclose(
            grad_cam(model, x, class_index=k, layer="inner_a"), expected, atol=1e-5
        )
        # Layer inner_b, the backbone's output, also by default and as the nested model.
        wab = wa[0, 0] @ wb[0, 0]
        expected = _reference(x, (wab[None, None], ba @ wb[0, 0] + bb, wd, bd), classes)
        for layer in ("inner_b", None, "backbone", model.layers[0]):
            np.testing.assert_allclose(
                grad_cam(model, x, class_index=k, layer=layer), expected, atol=1e-5
            )


def test_a_cut_crossed_by_a_residual_connection():
    """x -> conv 's' -> conv 'a'; Add([s, a]) -> GAP -> Dense: d y / d a = Wd / HW (the cut
    holds s and a), d y / d s = (I + Wa) Wd / HW; the default layer is the Add."""
    rng = np.random.default_rng(11)
    ws, bs = rng.normal(size=(1, 1, C_IN, C)), rng.normal(size=(C,))
    wa, ba = rng.normal(size=(1, 1, C, C)), rng.normal(size=(C,))
    wd, bd = rng.normal(size=(C, K)), rng.normal(size=(K,))
    inputs = keras.Input((H, W, C_IN))
    s = L.Conv2D(C, 1, name="s")(inputs)
    a = L.Conv2D(C, 1, name="a")(s)
    outputs = L.Dense(K, name="dense")(L.GlobalAveragePooling2D()(L.Add()([s, a])))
    model = keras.Model(inputs, outputs)
    for name, values in (("s", (ws, bs)), ("a", (wa, ba)), ("dense", (wd, bd))):
        model.get_layer(name).set_weights([v.astype("float32") for v in values])
    x = _images(seed=12)
    classes = np.array([0, 1, 2, 0, 1])
    s_values = x.astype("float64") @ ws[0, 0] + bs
    a_values = s_values @ wa[0, 0] + ba
    alpha = wd[:, classes].T / (H * W)
    expected_a = _normalise(np.einsum("nhwc,nc->nhw", a_values, alpha))
    alpha_s = ((np.eye(C) + wa[0, 0]) @ wd)[:, classes].T / (H * W)
    expected_s = _normalise(np.einsum("nhwc,nc->nhw", s_values, alpha_s))
    np.testing.assert_allclose(
        grad_cam(model, x, class_index=classes, layer="a"), expected_a, atol=1e-5
    )
    expected_add = _normalise(np.einsum("nhwc,nc->nhw", s_values + a_values, alpha))
    np.testing.assert_allclose(grad_cam(model, x, class_index=classes), expected_add, atol=1e-5)
    np.testing.assert_allclose(
        grad_cam(model, x, class_index=classes, layer="s"), expected_s, atol=1e-5
    )


# (4) One class per image.


def test_class_index_per_image_equals_one_class_at_a_time():
    weights = _weights(seed=13)
    model, x = _linear_model(weights, activation="softmax"), _images(n=6, seed=14)
    classes = np.array([2, 0, 1, 1, 2, 0])
    maps = grad_cam(model, x, class_index=classes)
    np.testing.assert_allclose(maps, _reference(x, weights, classes), atol=1e-5)
    for k in range(K):
        rows = classes == k
        np.testing.assert_allclose(maps[rows], grad_cam(model, x, class_index=k)[rows], atol=1e-6)
    np.testing.assert_allclose(grad_cam(model, x, class_index=list(classes)), maps, atol=1e-6)


# (5) Bad inputs.


@pytest.fixture
def model():
    return _linear_model(_weights())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layer": "nope"}, r"has no layer 'nope'.*end with: 'conv'"),
        ({"layer": "dense"}, r"'dense' \(Dense\) with output shape \(None, 3\).*4-D"),
        ({"layer": "gap"}, r"'gap' \(GlobalAveragePooling2D\).*4-D"),
        ({"layer": 3}, r"Expected `layer` to be a layer name.*Received: layer=3"),
        ({"class_index": 3}, r"class_index in \[0, 2\] \(the model has 3 classes\).*=3"),
        ({"class_index": -1}, r"class_index in \[0, 2\].*class_index=-1"),
        ({"class_index": [0, 1]}, r"one class_index per image, shape \(5,\)"),
        ({"class_index": [0, 1, 2, 0, 9]}, r"class_index=9"),
        ({"class_index": 1.0}, r"None, an int or one int per image"),
        ({"class_index": True}, r"None, an int or one int per image"),
        ({"batch_size": 0}, r"positive int batch_size.*batch_size=0"),
    ],
)
def test_bad_arguments_are_refused_clearly(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        grad_cam(model, _images(), **kwargs)


def test_bad_images_are_refused_clearly(model):
    with pytest.raises(ValueError, match=r"one image of shape \(4, 5, 3\).*images\[None\]"):
        grad_cam(model, _images()[0])
    with pytest.raises(ValueError, match=r"shape \(N, 4, 5, 3\).*images of shape \(2, 5, 4, 3\)"):
        grad_cam(model, np.zeros((2, 5, 4, 3), "float32"))
    with pytest.raises(ValueError, match=r"at least one image"):
        grad_cam(model, np.zeros((0, H, W, C_IN), "float32"))


def test_models_that_cannot_be_cut_are_refused_clearly():
    inputs = keras.Input((H, W, C_IN))
    shared = L.Conv2D(C_IN, 1, name="shared")
    x = L.Dense(K)(L.GlobalAveragePooling2D()(shared(shared(inputs))))
    with pytest.raises(ValueError, match=r"'shared' \(Conv2D\) is called 2 times"):
        grad_cam(keras.Model(inputs, x), _images(), layer="shared")

    dense_only = keras.Sequential([keras.Input((3,)), L.Dense(K)])
    with pytest.raises(ValueError, match=r"no layer with a 4-D .* output"):
        grad_cam(dense_only, np.zeros((2, 3), "float32"))

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(K)

        def call(self, x):
            return self.dense(x)

    sub = Subclassed()
    sub(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match=r"grad_cam needs a Functional or Sequential model"):
        grad_cam(sub, np.zeros((2, 3), "float32"))

    conv_out = keras.Sequential([keras.Input((H, W, C_IN)), L.Conv2D(2, 1)])
    with pytest.raises(ValueError, match=r"class scores of shape \(batch, classes\)"):
        grad_cam(conv_out, _images())


# (6) A tiny MobileNetV2, on every backend; against the standard recipe where the backend has
# gradients of intermediate tensors (TensorFlow, PyTorch).


@functools.cache
def _mobilenet():
    base = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), include_top=False)
    return keras.Sequential([base, L.GlobalMaxPooling2D(), L.Dense(4, activation="softmax")])


def test_tiny_mobilenet_gives_finite_maps_of_the_layer_shape():
    model = _mobilenet()
    x = np.random.default_rng(15).uniform(-1, 1, size=(3, 32, 32, 3)).astype("float32")
    maps = grad_cam(model, x)  # out_relu: 1 x 1 at 32 px
    assert maps.shape == (3, 1, 1) and np.all(np.isfinite(maps))
    maps = grad_cam(model, x, layer="block_12_project_BN", class_index=[0, 1, 3])  # 2 x 2
    assert maps.shape == (3, 2, 2) and np.all(np.isfinite(maps))
    assert np.all((maps >= 0) & (maps <= 1))
    peaks = maps.max(axis=(1, 2))
    assert np.all(np.isclose(peaks, 1, atol=1e-6) | (peaks == 0))


def _standard_recipe(model, x, layer_name, classes):
    """Selvaraju's recipe with the backend's tape: A and the logits from one flat model."""
    base, _, dense = model.layers
    features = L.GlobalMaxPooling2D()(base.output)
    logits = keras.ops.matmul(features, dense.kernel) + dense.bias
    flat = keras.Model(base.input, [base.get_layer(layer_name).output, logits])
    one_hot = np.eye(4, dtype="float32")[classes]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            a, y = flat(x)
            score = tf.reduce_sum(y * one_hot)
        grads = tape.gradient(score, a).numpy()
        a = a.numpy()
    else:
        import torch

        a, y = flat(x)
        (grads,) = torch.autograd.grad((y * torch.as_tensor(one_hot)).sum(), a)
        a, grads = a.detach().cpu().numpy(), grads.cpu().numpy()
    alpha = grads.mean(axis=(1, 2))
    return _normalise(np.einsum("nhwc,nc->nhw", a.astype("float64"), alpha))


@pytest.mark.parametrize("layer_name", ["block_12_project_BN", "block_13_expand_relu"])
def test_tiny_mobilenet_matches_the_standard_recipe(layer_name):
    if keras.backend.backend() not in ("tensorflow", "torch"):
        pytest.skip("the standard recipe needs gradients of intermediate tensors")
    model = _mobilenet()
    x = np.random.default_rng(16).uniform(-1, 1, size=(4, 32, 32, 3)).astype("float32")
    classes = np.array([0, 1, 2, 3])
    expected = _standard_recipe(model, x, layer_name, classes)
    maps = grad_cam(model, x, class_index=classes, layer=layer_name)
    np.testing.assert_allclose(maps, expected, atol=1e-4)


# Properties: closed form, range and shape for any weights, images and classes.


@functools.cache
def _property_model():
    return _linear_model(_weights())


@given(
    data=st.data(),
    n=st.integers(1, 4),
)
def test_maps_match_the_closed_form_for_any_weights(data, n):
    floats = st.floats(-2, 2, width=32)
    weights = (
        data.draw(hnp.arrays("float32", (1, 1, C_IN, C), elements=floats)),
        data.draw(hnp.arrays("float32", (C,), elements=floats)),
        data.draw(hnp.arrays("float32", (C, K), elements=floats)),
        data.draw(hnp.arrays("float32", (K,), elements=floats)),
    )
    x = data.draw(hnp.arrays("float32", (n, H, W, C_IN), elements=floats))
    classes = np.array(data.draw(st.lists(st.integers(0, K - 1), min_size=n, max_size=n)))
    model = _property_model()
    model.get_layer("conv").set_weights(list(weights[:2]))
    model.get_layer("dense").set_weights(list(weights[2:]))
    maps = grad_cam(model, x, class_index=classes)
    assert maps.shape == (n, H, W) and maps.dtype == np.float32
    assert np.all((maps >= 0) & (maps <= 1))
    peaks = maps.max(axis=(1, 2))
    assert np.all(np.isclose(peaks, 1, atol=1e-6) | (peaks == 0))
    # Compare where the unnormalised map is not at float32 round-off level.
    wc, bc, wd, _ = (w.astype("float64") for w in weights)
    a = x.astype("float64") @ wc[0, 0] + bc
    raw = np.maximum(np.einsum("nhwc,nc->nhw", a, wd[:, classes].T / (H * W)), 0)
    scale = np.abs(a).max(axis=(1, 2, 3)) * np.abs(wd).max() * C / (H * W) + 1e-12
    clear = raw.max(axis=(1, 2)) > 1e-3 * scale
    assume(clear.any())
    np.testing.assert_allclose(maps[clear], _normalise(raw)[clear], atol=1e-3)


# upsample_heatmap


def test_upsample_heatmap_resizes_within_the_unit_interval():
    maps = np.random.default_rng(17).uniform(size=(3, 2, 2)).astype("float32")
    up = upsample_heatmap(maps, (8, 6))
    assert up.shape == (3, 8, 6) and up.dtype == np.float32
    assert np.all((up >= 0) & (up <= 1))
    np.testing.assert_allclose(up[:, 0, 0], maps[:, 0, 0], atol=1e-6)  # corners kept
    np.testing.assert_allclose(up[:, -1, -1], maps[:, -1, -1], atol=1e-6)
    np.testing.assert_allclose(upsample_heatmap(np.full((2, 3), 0.5), (5, 7)), 0.5, atol=1e-6)
    np.testing.assert_allclose(upsample_heatmap(maps[0], (8, 6)), up[0], atol=1e-6)


@pytest.mark.parametrize(
    ("heatmap", "size", "match"),
    [
        (np.zeros(4), (2, 2), r"shape \(H, W\) or a batch \(N, H, W\).*shape \(4,\)"),
        (np.zeros((2, 2)), (0, 2), r"two positive ints. Received: size=\(0, 2\)"),
        (np.zeros((2, 2)), 4, r"size=4"),
    ],
)
def test_upsample_heatmap_refuses_bad_input(heatmap, size, match):
    with pytest.raises(ValueError, match=match):
        upsample_heatmap(heatmap, size)


# The per-backend gradient helper.


def test_compat_gradient_on_this_backend():
    from keras_freeze import _keras_compat as compat

    x = np.array([[1.0, -2.0], [0.5, 3.0]], dtype="float32")
    grad = compat.gradient(lambda t: keras.ops.sum(t**2), x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(grad), 2 * x, rtol=1e-6)
    constant = compat.gradient(lambda t: keras.ops.sum(keras.ops.ones((2,))), x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(constant), np.zeros_like(x))
