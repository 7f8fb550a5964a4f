"""Grad-CAM heat maps (Selvaraju et al. 2017) on every backend.

The model is cut after the explained layer, with the machinery of
`split_frozen_prefix`: a *feature* model maps the images to the layer's
activations `A` (and to any other tensor the rest of the model needs), a
*head* maps them to the class scores. The gradient of the score with respect
to `A` is the head's gradient, taken by the backend's own autodiff
(`_keras_compat.gradient`); the rest is `keras.ops`.
"""

from __future__ import annotations

import dataclasses
import numbers

import keras
import numpy as np
from keras import ops

from keras_freeze import _keras_compat as compat
from keras_freeze._prefix import _consumers
from keras_freeze._prefix import _cut
from keras_freeze._prefix import _describe
from keras_freeze._prefix import _live
from keras_freeze._prefix import _producers
from keras_freeze._prefix import _trace

_WHO = "grad_cam"


@dataclasses.dataclass(frozen=True, eq=False)
class _Plan:
    """A model cut after the explained layer."""

    features: keras.Model  # images -> the cut tensors, `position` of them the activations
    head: keras.Model  # the cut tensors -> the score source
    position: int
    logits: keras.layers.Dense | None  # the softmax Dense whose logits are scored, or None
    n_classes: int
    layer_name: str

    def scores(self, cut):
        """(batch, classes) scores of the cut tensors: logits where the plan found them."""
        h = self.head(cut[0] if len(cut) == 1 else list(cut), training=False)
        if self.logits is not None:
            h = ops.matmul(h, self.logits.kernel)
            if self.logits.bias is not None:
                h = ops.add(h, self.logits.bias)
        return h


def _ancestors(calls, tensor):
    """Indices of the calls that `tensor` depends on."""
    producer = _producers(calls)
    seen, stack = set(), [tensor]
    while stack:
        i = producer.get(id(stack.pop()))
        if i is not None and i not in seen:
            seen.add(i)
            stack.extend(calls[i].inputs)
    return seen


def _is_4d(tensor):
    return len(tensor.shape) == 4


def _candidates(calls, upstream):
    """(layer name, output tensor) of each single-output 4-D call upstream of the output."""
    return [
        (calls[i].layer.name, calls[i].outputs[0])
        for i in sorted(upstream)
        if len(calls[i].outputs) == 1 and _is_4d(calls[i].outputs[0])
    ]


def _hint(candidates):
    if not candidates:
        return "This model has no layer with a 4-D output before its output."
    names = ", ".join(repr(name) for name, _ in candidates[-3:])
    return f"Layers with a 4-D output before the model's output end with: {names}."


def _find_layer(model, calls, nested, upstream, layer):
    """(name, output tensor) of the explained layer, or a ValueError saying what works."""
    candidates = _candidates(calls, upstream)
    if layer is None:
        if not candidates:
            raise ValueError(
                f"grad_cam found no layer with a 4-D (batch, height, width, channels) output "
                f"before the output of model {model.name!r}. Grad-CAM explains a convolutional "
                "layer: pass `layer=` naming one, in a model that has one."
            )
        return candidates[-1]
    if isinstance(layer, str):
        matches = [(c.layer, c.outputs) for c in calls if c.layer.name == layer]
        matches += [(m, keras.tree.flatten(out)) for m, out in nested if m.name == layer]
    elif isinstance(layer, keras.layers.Layer):
        matches = [(c.layer, c.outputs) for c in calls if c.layer is layer]
        matches += [(m, keras.tree.flatten(out)) for m, out in nested if m is layer]
    else:
        raise ValueError(
            "Expected `layer` to be a layer name (str), a keras.layers.Layer or None. "
            f"Received: layer={layer!r} of type {type(layer).__name__}."
        )
    if not matches:
        raise ValueError(
            f"Model {model.name!r} has no layer {layer!r} (nested models searched). "
            f"{_hint(candidates)}"
        )
    if len(matches) > 1:
        raise ValueError(
            f"Layer {_describe(matches[0][0])} is called {len(matches)} times in model "
            f"{model.name!r}, so its activations are ambiguous. Pass a layer called once. "
            f"{_hint(candidates)}"
        )
    found, outputs = matches[0]
    if len(outputs) != 1 or not _is_4d(outputs[0]):
        shapes = ", ".join(str(t.shape) for t in outputs)
        raise ValueError(
            f"Grad-CAM needs a layer with one 4-D (batch, height, width, channels) output, "
            f"such as a convolution's. Received: layer {_describe(found)} with output shape "
            f"{shapes}. {_hint(candidates)}"
        )
    producer = _producers(calls)
    if producer.get(id(outputs[0])) not in upstream:
        raise ValueError(
            f"Layer {_describe(found)} does not feed the output of model {model.name!r}, "
            f"so the score has no gradient with respect to it. {_hint(candidates)}"
        )
    return found.name, outputs[0]


def _softmax_dense(call):
    """The Dense layer of `call` if it applies softmax to a plain matmul, else None."""
    layer = call.layer
    if (
        isinstance(layer, keras.layers.Dense)
        and layer.activation is keras.activations.softmax
        and getattr(layer, "quantization_mode", None) is None
        and len(call.inputs) == 1
    ):
        return layer
    return None


def _is_softmax(call):
    layer = call.layer
    if isinstance(layer, keras.layers.Softmax):
        return len(call.inputs) == 1 and call.kwargs.get("mask") is None
    return (
        isinstance(layer, keras.layers.Activation)
        and layer.activation is keras.activations.softmax
        and len(call.inputs) == 1
    )


def _plan(model, layer):
    """Cuts `model` after `layer` (see `grad_cam`)."""
    calls, inputs, outputs, nested = _trace(model, who=_WHO)
    if len(inputs) != 1 or len(keras.tree.flatten(outputs)) != 1:
        raise ValueError(
            f"grad_cam explains a model with one input and one output. Received: model "
            f"{model.name!r} with {len(inputs)} inputs and "
            f"{len(keras.tree.flatten(outputs))} outputs."
        )
    (output,) = keras.tree.flatten(outputs)
    if len(output.shape) != 2 or output.shape[-1] is None:
        raise ValueError(
            f"grad_cam needs class scores of shape (batch, classes). Received: model "
            f"{model.name!r} with output shape {output.shape}."
        )
    upstream = _ancestors(calls, output)
    name, activations = _find_layer(model, calls, nested, upstream, layer)
    producer = _producers(calls)
    k = producer[id(activations)]
    # Score the pre-softmax logits where the last call is a softmax (Selvaraju et al.).
    final = calls[producer[id(output)]]
    source, logits = output, None
    if producer[id(output)] > k and _softmax_dense(final) is not None:
        source, logits = final.inputs[0], _softmax_dense(final)
    elif producer[id(output)] > k and _is_softmax(final):
        source = final.inputs[0]
    prefix_calls = list(range(k + 1))
    live = _live(calls, prefix_calls, inputs, {id(source)}, _consumers(calls))
    features, head, _ = _cut(calls, inputs, source, prefix_calls, live, f"{model.name}_gradcam")
    position = [id(t) for t, _ in live].index(id(activations))
    return _Plan(features, head, position, logits, int(output.shape[-1]), name), inputs[0]


def _check_images(images, model_input):
    x = ops.convert_to_numpy(images) if ops.is_tensor(images) else np.asarray(images)
    expected = tuple(model_input.shape[1:])
    if x.ndim == len(expected) and all(
        e is None or e == d for e, d in zip(expected, x.shape, strict=True)
    ):
        raise ValueError(
            f"Expected a batch of images of shape (N, {', '.join(map(str, expected))}). "
            f"Received: one image of shape {x.shape}. Add a batch axis: `images[None]`."
        )
    if x.ndim != len(expected) + 1 or any(
        e is not None and e != d for e, d in zip(expected, x.shape[1:], strict=True)
    ):
        raise ValueError(
            f"Expected images of shape (N, {', '.join(map(str, expected))}), as the model's "
            f"input. Received: images of shape {x.shape}."
        )
    if len(x) == 0:
        raise ValueError(f"Expected at least one image. Received: images of shape {x.shape}.")
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"Expected numeric images. Received: images of dtype {x.dtype}.")
    return x.astype(model_input.dtype)


def _check_classes(class_index, n_images, n_classes):
    """The class per image as an int array, or None for the predicted class."""
    if class_index is None:
        return None
    if isinstance(class_index, numbers.Integral) and not isinstance(class_index, bool):
        classes = np.full(n_images, int(class_index))
    else:
        classes = np.asarray(class_index)
        if classes.dtype == bool or not np.issubdtype(classes.dtype, np.integer):
            raise ValueError(
                "Expected class_index to be None, an int or one int per image. "
                f"Received: class_index={class_index!r}."
            )
        if classes.shape != (n_images,):
            raise ValueError(
                f"Expected one class_index per image, shape ({n_images},). Received: "
                f"class_index of shape {classes.shape}."
            )
    bad = classes[(classes < 0) | (classes >= n_classes)]
    if bad.size:
        raise ValueError(
            f"Expected class_index in [0, {n_classes - 1}] (the model has {n_classes} "
            f"classes). Received: class_index={int(bad[0])}."
        )
    return classes


def _is_positive_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def _heat_maps(activations, grads):
    """ReLU(sum_c mean_hw(dy/dA_c) A_c), divided per image by its maximum."""
    if keras.config.image_data_format() == "channels_first":
        activations = ops.transpose(activations, (0, 2, 3, 1))
        grads = ops.transpose(grads, (0, 2, 3, 1))
    weights = ops.mean(grads, axis=(1, 2), keepdims=True)
    cam = ops.relu(ops.sum(weights * activations, axis=-1))
    peak = ops.max(cam, axis=(1, 2), keepdims=True)
    cam = ops.where(peak > 0, cam / ops.where(peak > 0, peak, 1.0), 0.0)
    return ops.convert_to_numpy(cam).astype("float32")


def grad_cam(model, images, *, class_index=None, layer=None, batch_size=32):
    """Grad-CAM heat maps: where in the image a convolutional layer sees a class.

    For the activations `A` (channels `A_c`, `H x W` positions) of `layer`
    and the score `y` of the explained class:

        alpha_c = (1 / HW) * sum_ij d y / d A_c[i, j]
        map     = ReLU(sum_c alpha_c * A_c)

    and each map is divided by its maximum, so it lies in [0, 1] (a map that
    is zero everywhere stays zero). The score `y` is the class's pre-softmax
    logit, as in the paper, when the model ends in a softmax `Dense` layer (its
    logits are `inputs @ kernel + bias`), a `Softmax` layer or an
    `Activation("softmax")`; otherwise it is the model's output for the class.
    The model runs in inference mode (`training=False`).

    The model is cut after `layer` (nested Sequential and Functional models
    are inlined, as by `split_frozen_prefix`), and the gradient of the rest of
    the model is taken with respect to `A` by the backend's own autodiff, so
    it works the same on TensorFlow, PyTorch and JAX.

    Reference: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep
    Networks via Gradient-based Localization", ICCV 2017
    (https://arxiv.org/abs/1610.02391).

    Args:
        model: A built Functional or Sequential `keras.Model` with one input
            and one output of shape (batch, classes).
        images: The model's input, shape (N, height, width, channels): a NumPy
            array or a backend tensor, preprocessed as the model expects.
        class_index: The class to explain: an int for every image, one int
            per image, or None (default) for each image's predicted class.
        layer: The explained layer: its name, the layer object or a nested
            model (its output is explained). Default: the last layer with a
            4-D output that feeds the model's output; for MobileNetV2 that is
            `"out_relu"`, also inside a Sequential or Functional wrapper.
        batch_size: Images per gradient computation. Default 32.

    Returns:
        A float32 NumPy array of shape (N, H, W), the layer's spatial size,
        with values in [0, 1]. `upsample_heatmap` resizes it to the image.

    Raises:
        ValueError: A `layer` that the model lacks, that has no 4-D output,
            that is called more than once or does not feed the output;
            `class_index` out of range or not one per image; images not
            shaped like the model's input, or none; a model with several
            inputs or outputs, or not Functional/Sequential; a backend
            without gradients (numpy, openvino).

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 3)),
    ...     keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
    ...     keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(2, activation="softmax"),
    ... ])
    >>> images = np.random.default_rng(0).uniform(size=(5, 8, 8, 3)).astype("float32")
    >>> maps = grad_cam(model, images, class_index=1)
    >>> maps.shape, maps.dtype, bool(maps.min() >= 0 and maps.max() <= 1)
    ((5, 8, 8), dtype('float32'), True)
    """
    if not _is_positive_int(batch_size):
        raise ValueError(f"Expected a positive int batch_size. Received: batch_size={batch_size!r}")
    plan, model_input = _plan(model, layer)
    x = _check_images(images, model_input)
    classes = _check_classes(class_index, len(x), plan.n_classes)
    maps = []
    for start in range(0, len(x), batch_size):
        cut = keras.tree.flatten(plan.features(x[start : start + batch_size], training=False))
        # Constants for the gradient: through NumPy, so no backend records the prefix.
        cut = [ops.convert_to_tensor(ops.convert_to_numpy(t)) for t in cut]
        if classes is None:
            chosen = ops.argmax(plan.scores(cut), axis=-1)
        else:
            chosen = ops.convert_to_tensor(classes[start : start + batch_size])
        one_hot = ops.one_hot(chosen, plan.n_classes)

        def score(activations, cut=cut, one_hot=one_hot):
            parts = list(cut)
            parts[plan.position] = activations
            return ops.sum(ops.cast(plan.scores(parts), "float32") * one_hot)

        grads = compat.gradient(score, cut[plan.position])
        maps.append(_heat_maps(cut[plan.position], grads))
    return np.concatenate(maps)


def upsample_heatmap(heatmap, size):
    """Resizes heat maps to an image's size (bilinear), keeping them in [0, 1].

    Args:
        heatmap: One map (H, W) or a batch (N, H, W), as `grad_cam` returns.
        size: The target `(height, width)`.

    Returns:
        A float32 NumPy array of shape `size` or (N, *size).

    Raises:
        ValueError: A heat map that is not 2-D or 3-D; a size that is not two
            positive ints.

    Example:

    >>> import numpy as np
    >>> upsample_heatmap(np.array([[0.0, 1.0], [1.0, 0.0]]), (4, 4)).shape
    (4, 4)
    """
    maps = np.asarray(heatmap, dtype="float32")
    if maps.ndim not in (2, 3):
        raise ValueError(
            "Expected a heat map of shape (H, W) or a batch (N, H, W). Received: heatmap of "
            f"shape {maps.shape}."
        )
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(map(_is_positive_int, size))
    ):
        raise ValueError(
            f"Expected size=(height, width), two positive ints. Received: size={size!r}"
        )
    batch = maps if maps.ndim == 3 else maps[None]
    resized = ops.image.resize(
        batch[..., None],
        tuple(int(s) for s in size),
        interpolation="bilinear",
        data_format="channels_last",
    )
    resized = np.clip(ops.convert_to_numpy(resized)[..., 0], 0.0, 1.0).astype("float32")
    return resized if maps.ndim == 3 else resized[0]
