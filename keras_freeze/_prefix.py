"""Splitting a partly frozen model into a frozen prefix and a trainable suffix.

Mobile Freeze-Net (Roy & Khurana, ACM SAC 2023) freezes the first half of a
MobileNetV2. With those layers frozen (BatchNormalization in inference mode)
and no augmentation, they map each image to the same activations in every
epoch, so they can be computed once (`keras_freeze.cache_features`) and only
the rest trained. `split_frozen_prefix` finds where to cut.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers

import keras

from keras_freeze import _keras_compat as compat

_DTYPE_BYTES = {"float16": 2, "float32": 4}


# Tracing: the model as a flat list of leaf-layer calls.


@dataclasses.dataclass(eq=False)
class _Call:
    """One call of a leaf layer in the flattened graph."""

    layer: keras.layers.Layer
    args: tuple
    kwargs: dict
    inputs: list  # the KerasTensors among args and kwargs
    outputs: list  # the flattened output KerasTensors
    frozen: bool  # the layer or a model enclosing it has trainable=False


class _Tracer:
    """Calls a model's leaf layers on new symbolic inputs, nested models inlined.

    `calls` lists the leaf-layer calls in call order; `nested` the inlined
    models with their (symbolic) outputs; `who` names the caller in errors.
    """

    def __init__(self, who="split_frozen_prefix"):
        self.calls = []
        self.nested = []
        self.who = who

    def trace_model(self, model, inputs, frozen=False, training=None):
        if isinstance(model, keras.Sequential):
            x = inputs
            for layer in model.layers:
                x = self.call(layer, (x,), {}, frozen, training)
            return x
        return compat.run_functional_graph(
            model,
            inputs,
            lambda layer, *args, **kwargs: self.call(layer, args, kwargs, frozen, training),
        )

    def call(self, layer, args, kwargs, frozen, training):
        frozen = frozen or not layer.trainable
        if isinstance(layer, keras.Sequential) or compat.is_functional(layer):
            kwargs = dict(kwargs)
            training = kwargs.pop("training", training)
            kwargs = {k: v for k, v in kwargs.items() if not (k == "mask" and v is None)}
            if kwargs or len(args) != 1:
                raise ValueError(
                    f"{self.who} can inline a nested model called on one input "
                    f"(optionally with `training=`). Received: model {layer.name!r} called "
                    f"with {len(args)} positional and keyword arguments {sorted(kwargs)}."
                )
            outputs = self.trace_model(layer, args[0], frozen, training)
            self.nested.append((layer, outputs))
            return outputs
        if training is not None and _takes_training(layer) and "training" not in kwargs:
            kwargs = {**kwargs, "training": training}
        outputs = layer(*args, **kwargs)
        inputs = [t for t in keras.tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)]
        self.calls.append(
            _Call(layer, args, kwargs, inputs, list(keras.tree.flatten(outputs)), frozen)
        )
        return outputs


def _takes_training(layer):
    return "training" in inspect.signature(layer.call).parameters


# Keras layers whose `call` takes `training` but compute the same either way.
_DETERMINISTIC_NAMES = (
    "Dense",
    "EinsumDense",
    "Resizing",
    "CenterCrop",
    "AutoContrast",
    "Equalization",
    "ContrastLimitedAdaptiveHistogramEqualization",
    "MaxNumBoundingBoxes",
)
# Attributes that make a Keras layer random in training when positive.
_NOISE_ATTRIBUTES = ("rate", "dropout", "recurrent_dropout", "stddev")


def _is_deterministic_keras_layer(layer):
    """True if `layer` is a Keras layer known to compute the same in training and inference."""
    classes = tuple(
        cls for cls in (getattr(keras.layers, name, None) for name in _DETERMINISTIC_NAMES) if cls
    )
    if isinstance(layer, classes):
        return True
    if isinstance(layer, keras.layers.Lambda):
        return "training" not in inspect.signature(layer.function).parameters
    if not type(layer).__module__.startswith("keras."):
        return False  # a custom layer taking `training`: assume it uses it
    noise = [getattr(layer, name, None) for name in _NOISE_ATTRIBUTES]
    noise = [v for v in noise if isinstance(v, numbers.Real) and not isinstance(v, bool)]
    return bool(noise) and all(v == 0 for v in noise)


def _training_behaviour(layer):
    """Why `layer` may compute something else in training than in inference, or None."""
    if isinstance(layer, keras.layers.BatchNormalization):
        if layer.trainable:
            return (
                "it is a BatchNormalization with trainable=True, so in training it normalizes "
                "with batch statistics and updates its moving statistics. Set "
                f"`trainable = False` on {layer.name!r}"
            )
        return None  # Keras 3 runs a frozen BatchNormalization in inference mode.
    if not _takes_training(layer) or _is_deterministic_keras_layer(layer):
        return None
    return (
        f"its call takes a `training` argument ({type(layer).__name__}: dropout, noise "
        "and random augmentation behave differently in training), so cached features "
        "would freeze one draw of it. Move it after the frozen layers or out of the model"
    )


def _model_inputs(model, who):
    """Fresh symbolic inputs shaped like `model`'s, or a ValueError for an unbuilt model."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            f"{who} needs a built model with known inputs. Received: model "
            f"{model.name!r} ({type(model).__name__}) without inputs. Start it with "
            "`keras.Input(shape)` or call `model.build(input_shape)` first."
        )
    return [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name) for t in inputs]


def _trace(model, who="split_frozen_prefix"):
    """Returns (calls, input tensors, output structure, nested models with their outputs) of
    `model`, nested models inlined; `who` names the caller in errors."""
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"Expected a keras.Model. Received: model={model!r} of type {type(model).__name__}"
        )
    if not (isinstance(model, keras.Sequential) or compat.is_functional(model)):
        raise ValueError(
            f"{who} needs a Functional or Sequential model (subclassed models "
            f"have no graph to cut). Received: model {model.name!r} of type "
            f"{type(model).__name__}."
        )
    inputs = _model_inputs(model, who)
    tracer = _Tracer(who)
    structured = inputs[0] if isinstance(model, keras.Sequential) else inputs
    outputs = tracer.trace_model(model, structured)
    return tracer.calls, inputs, outputs, tracer.nested


# Analysis: the frozen region, the refusals and the cut.


def _eligible(call):
    """A call may sit in the frozen prefix: frozen, or weightless and deterministic."""
    if call.frozen:
        return True
    return not call.layer.trainable_weights and _training_behaviour(call.layer) is None


def _producers(calls):
    return {id(t): i for i, call in enumerate(calls) for t in call.outputs}


def _consumers(calls):
    consumers = {}
    for i, call in enumerate(calls):
        for t in call.inputs:
            consumers.setdefault(id(t), []).append(i)
    return consumers


def _region(calls, inputs):
    """Flags the calls whose layer is eligible and whose inputs all come from the region."""
    producer = _producers(calls)
    sources = {id(t) for t in inputs}
    flags = []
    for call in calls:
        parents = [producer.get(id(t)) for t in call.inputs if id(t) not in sources]
        flags.append(_eligible(call) and all(i is not None and flags[i] for i in parents))
    return flags


def _describe(layer):
    return f"{layer.name!r} ({type(layer).__name__})"


def _why_not_eligible(call):
    reason = _training_behaviour(call.layer)
    if reason is not None:
        return f"behaves differently in training: {reason}"
    return "is trainable"


def _first_blocker(calls, flags, index):
    """The earliest call outside the region among the ancestors of calls[index]."""
    producer = _producers(calls)
    seen, stack = set(), [index]
    while stack:
        i = stack.pop()
        for t in calls[i].inputs:
            j = producer.get(id(t))
            if j is not None and j not in seen:
                seen.add(j)
                stack.append(j)
    outside = sorted(j for j in seen if not flags[j])
    return calls[outside[0]] if outside else calls[index]


def _check_region(model, calls, flags):
    """Raises the ValueError that says why `model` has no usable frozen prefix, if any."""
    if not any(flags):
        detail = ""
        if calls:  # with no frozen region, the first call is not eligible
            detail = f": its first layer {_describe(calls[0].layer)} {_why_not_eligible(calls[0])}"
        raise ValueError(
            f"Model {model.name!r} has no frozen prefix{detail}. Freeze its first layers "
            "first, e.g. `keras_freeze.freeze_fraction(base, 0.5)` (the paper's Mobile "
            "Freeze-Net), then split it."
        )
    for i, call in enumerate(calls):
        if not flags[i] and call.frozen and call.layer.weights:
            blocker = _first_blocker(calls, flags, i)
            raise ValueError(
                f"Layer {_describe(call.layer)} is frozen but comes after layer "
                f"{_describe(blocker.layer)}, which {_why_not_eligible(blocker)}. The frozen "
                "layers do not form a prefix (a stochastic freeze?), so a feature cache would "
                "hold only the layers before it and quietly drop most of the savings. Freeze "
                "an ordered prefix (`freeze_fraction(base, 0.5, mode='ordered')`) or set "
                f"`trainable = True` on {call.layer.name!r}."
            )
    for i, call in enumerate(calls):
        reason = _training_behaviour(call.layer) if flags[i] else None
        if reason is not None:
            raise ValueError(
                f"Layer {_describe(call.layer)} is in the frozen prefix of model "
                f"{model.name!r}, but {reason}."
            )
        if call.frozen and call.layer.trainable and call.layer.trainable_weights:
            raise ValueError(
                f"Layer {_describe(call.layer)} has trainable=True inside a frozen model: "
                "Keras does not train it, but a split model would. Set its `trainable` to "
                "False (or unfreeze the model around it) before splitting."
            )
    if not model.trainable_weights:
        raise ValueError(
            f"Model {model.name!r} has no trainable weights: there is nothing for a suffix "
            "to train. Unfreeze the layers to train (e.g. freeze_fraction(base, 0.5))."
        )


def _values(tensor, call):
    dims = tuple(tensor.shape[1:])
    if any(d is None for d in dims):
        name = "the model input" if call is None else f"layer {_describe(call.layer)}"
        raise ValueError(
            f"Cannot size the cached features of {name}: its output shape {tensor.shape} "
            "has an unknown dimension besides the batch. Build the model with a fixed "
            "input shape, e.g. `input_shape=(224, 224, 3)`."
        )
    return math.prod(dims)


def _live(calls, k_calls, inputs, output_ids, consumers):
    """Tensors made before the cut (model inputs or k_calls' outputs) still needed after it."""
    inside = set(k_calls)
    candidates = [(t, None) for t in inputs]
    candidates += [(t, calls[i]) for i in k_calls for t in calls[i].outputs]
    return [
        (t, call)
        for t, call in candidates
        if id(t) in output_ids or any(j not in inside for j in consumers.get(id(t), ()))
    ]


def _best_cut(calls, flags, inputs, outputs):
    """(values, prefix call indices, live tensors) of the cut with the fewest values per
    sample among the region's cuts in call order, ties going to the latest."""
    consumers = _consumers(calls)
    output_ids = {id(t) for t in keras.tree.flatten(outputs)}
    region = [i for i, flag in enumerate(flags) if flag]
    best = None
    for k in range(1, len(region) + 1):
        live = _live(calls, region[:k], inputs, output_ids, consumers)
        values = sum(_values(t, call) for t, call in live)
        if best is None or values <= best[0]:
            best = (values, region[:k], live)
    return best


# The result.


@dataclasses.dataclass(frozen=True, eq=False)
class FrozenPrefixSplit:
    """A model cut after its frozen prefix: `suffix(prefix(x))` computes `model(x)`.

    Attributes:
        model: The model that was split.
        prefix: A `keras.Model` from the model's inputs to the cached tensors
            (`cut`); every layer in it is frozen and deterministic.
        suffix: A `keras.Model` from the cached tensors to the model's outputs.
            It calls the model's own layer objects, so training it trains the
            model.
        cut: Names of the cached tensors: the layer producing each one (or the
            model input passed through), in the order of `prefix.outputs` and
            `suffix.inputs`.
        cut_shapes: Per-sample shape of each cached tensor.
        values_per_sample: Values cached per sample, all cut tensors together.
        prefix_layers: Names of the layers computed by `prefix`, in call order.
        suffix_layers: Names of the layers computed by `suffix`, in call order.
    """

    model: keras.Model
    prefix: keras.Model
    suffix: keras.Model
    cut: tuple
    cut_shapes: tuple
    values_per_sample: int
    prefix_layers: tuple
    suffix_layers: tuple

    def bytes_per_sample(self, dtype="float16"):
        """Bytes cached per sample in `dtype` (`"float16"` or `"float32"`)."""
        return self.values_per_sample * _dtype_bytes(dtype)

    def summary(self):
        """Returns a short human-readable account of the split, as a string."""
        shapes = ", ".join(
            f"{name} {'x'.join(map(str, shape))}"
            for name, shape in zip(self.cut, self.cut_shapes, strict=True)
        )
        return "\n".join(
            [
                f"split_frozen_prefix({self.model.name!r})",
                f"  prefix: {len(self.prefix_layers)} layers, frozen",
                f"  suffix: {len(self.suffix_layers)} layers",
                f"  cut:    {shapes}",
                f"  cached per sample: {self.values_per_sample:,} values = "
                f"{self.bytes_per_sample('float16'):,} bytes (float16), "
                f"{self.bytes_per_sample('float32'):,} bytes (float32)",
            ]
        )

    def __str__(self):
        return self.summary()


def _dtype_bytes(dtype):
    key = str(dtype)
    if key not in _DTYPE_BYTES:
        raise ValueError(f"Expected dtype 'float16' or 'float32'. Received: dtype={dtype!r}")
    return _DTYPE_BYTES[key]


def _cut_names(live):
    names, seen = [], {}
    for t, call in live:
        if call is None:
            name = t.name
        elif len(call.outputs) > 1:
            name = f"{call.layer.name}_{[id(o) for o in call.outputs].index(id(t))}"
        else:
            name = call.layer.name
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}_{seen[name] - 1}")
    return names


def _replay(calls, prefix_calls, live, names, outputs, name):
    """Builds the suffix: new inputs for the live tensors, the remaining calls replayed."""
    inputs = [
        keras.Input(batch_shape=t.shape, dtype=t.dtype, name=n)
        for (t, _), n in zip(live, names, strict=True)
    ]
    mapping = {id(t): new for (t, _), new in zip(live, inputs, strict=True)}
    inside = set(prefix_calls)

    def remap(x):
        return mapping.get(id(x), x) if isinstance(x, keras.KerasTensor) else x

    for i, call in enumerate(calls):
        if i in inside or not all(id(t) in mapping for t in call.inputs):
            continue  # in the prefix, or not needed by any output
        args = keras.tree.map_structure(remap, call.args)
        kwargs = keras.tree.map_structure(remap, call.kwargs)
        new_outputs = keras.tree.flatten(call.layer(*args, **kwargs))
        mapping.update((id(t), new) for t, new in zip(call.outputs, new_outputs, strict=True))
    suffix_outputs = keras.tree.map_structure(lambda t: mapping[id(t)], outputs)
    return keras.Model(_single(inputs), suffix_outputs, name=name)


def _single(tensors):
    return tensors[0] if len(tensors) == 1 else list(tensors)


def _cut(calls, inputs, outputs, prefix_calls, live, name):
    """The models of a cut of a traced graph after `prefix_calls` (call indices, in order).

    Returns (prefix, suffix, names): `prefix` maps the inputs to the `live`
    tensors (`_live`'s), `suffix` maps new inputs named `names`, one per live
    tensor, to `outputs` (any structure of the graph's tensors).
    """
    names = _cut_names(live)
    prefix = keras.Model(_single(inputs), _single([t for t, _ in live]), name=f"{name}_prefix")
    suffix = _replay(calls, prefix_calls, live, names, outputs, f"{name}_suffix")
    return prefix, suffix, names


def split_frozen_prefix(model):
    """Splits a partly frozen model into a frozen `prefix` and a trainable `suffix`.

    Nested Functional and Sequential models are inlined into one graph of
    layer calls. The *frozen region* is every call whose layer is frozen (or
    weightless and the same in training and inference: `ReLU`, `Add`,
    pooling) with all its inputs from the region. Among the region's cuts the
    one caching the fewest values per sample wins, ties going to the latest;
    a residual connection crossing it makes a cut of several tensors. On the
    paper's Mobile Freeze-Net (`freeze_fraction(base, 0.5)` on MobileNetV2)
    that is `block_7_add`, 14 x 14 x 64 = 12,544 values at 224 px.

    `suffix(prefix(x))` computes `model(x)`. The suffix calls the model's own
    layers: training it trains them. Split again after changing `trainable`.

    Args:
        model: A built Functional or Sequential `keras.Model` with a fixed
            input shape whose first layers are frozen.

    Returns:
        A `FrozenPrefixSplit`: `prefix`, `suffix`, the cut tensors' names and
        shapes, and the values (and bytes) cached per sample.

    Raises:
        ValueError: Naming the layer: no frozen prefix; a frozen layer with
            weights after a trainable one (a stochastic freeze); a layer of the
            frozen region that behaves differently in training (Dropout, noise,
            random augmentation, a BatchNormalization with `trainable=True`);
            nothing trainable; an unbuilt or subclassed model; an unsized cut.

    Example:

    >>> import keras
    >>> base = keras.applications.MobileNetV2(
    ...     include_top=False, weights=None, input_shape=(64, 64, 3))
    >>> for layer in base.layers[:77]: layer.trainable = False  # freeze_fraction(base, 0.5)
    >>> model = keras.Sequential([base, keras.layers.GlobalMaxPooling2D(),
    ...                           keras.layers.Dense(4, activation="softmax")])
    >>> split = split_frozen_prefix(model)
    >>> split.cut, split.cut_shapes, split.values_per_sample
    (('block_7_add',), ((4, 4, 64),), 1024)
    """
    calls, inputs, outputs, _ = _trace(model)
    flags = _region(calls, inputs)
    _check_region(model, calls, flags)
    values, prefix_calls, live = _best_cut(calls, flags, inputs, outputs)
    prefix, suffix, names = _cut(calls, inputs, outputs, prefix_calls, live, model.name)
    inside = set(prefix_calls)
    return FrozenPrefixSplit(
        model=model,
        prefix=prefix,
        suffix=suffix,
        cut=tuple(names),
        cut_shapes=tuple(tuple(t.shape[1:]) for t, _ in live),
        values_per_sample=int(values),
        prefix_layers=tuple(calls[i].layer.name for i in prefix_calls),
        suffix_layers=tuple(c.layer.name for i, c in enumerate(calls) if i not in inside),
    )
