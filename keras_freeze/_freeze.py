"""Freezing a fraction of a model's layers: the paper's Mobile Freeze-Net cut.

Roy & Khurana (ACM SAC 2023) freeze the first 50% of the layers of an ImageNet
MobileNetV2 (``base.layers[:77]`` of its 154 layers) and fine-tune the rest.
`freeze_fraction` does that for any Keras model, in three flavours: an ordered
prefix (the paper's method), a seeded random subset (the paper's "50%
stochastic fine tuning" baseline), and a prefix measured in parameters.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import math
import warnings
from fractions import Fraction

import keras
import numpy as np

from keras_freeze import _keras_compat as compat
from keras_freeze import _sampling
from keras_freeze import _validation as check

_ORIGINAL_FLAGS_ATTR = "_keras_freeze_original_trainable"


class _FlagRecord:
    """The `(layer, trainable)` pairs from before the first freeze, for `unfreeze`.

    A plain object, not a list: Keras' weight saving and loading walk a
    model's attributes and recurse into lists and tuples, and this record
    holds the model itself (a cycle `load_weights` would follow forever).
    """

    def __init__(self, pairs):
        self.pairs = pairs

    def __iter__(self):
        return iter(self.pairs)


def flatten_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Lists a model's layers in order, expanding nested models.

    This is the list `freeze_fraction` counts and cuts. The rule: walk
    `model.layers` in order; a layer that is itself a `keras.Model`
    (Functional, Sequential or subclassed) is replaced by its own flattened
    layers, recursively; every other layer is one entry, weightless or not
    (`InputLayer`, `ReLU`, `Add`, `ZeroPadding2D` all count, as they do in
    the paper's count of 154 MobileNetV2 layers). A custom layer that merely
    holds sublayers (not a `keras.Model`) stays one entry.

    A layer shared by nested models (the same layer object reached twice) is
    listed once, at its first position, so it is counted and frozen once.

    Note that Keras lists a Functional model's `InputLayer` in `.layers` but
    not a Sequential model's, and this function follows `.layers`.

    Args:
        model: A `keras.Model` (or any layer exposing `.layers`).

    Returns:
        A list of `keras.layers.Layer`, outermost order, no models in it.

    Example:

    >>> import keras
    >>> inner = keras.Sequential([keras.layers.Dense(4), keras.layers.ReLU()])
    >>> outer = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(2)])
    >>> [type(layer).__name__ for layer in flatten_layers(outer)]
    ['Dense', 'ReLU', 'Dense']
    """
    layers, seen = [], set()
    for layer in _flat(model):
        if id(layer) not in seen:
            seen.add(id(layer))
            layers.append(layer)
    return layers


def _flat(model):
    """Every non-model layer under `model`, in order, repeats included."""
    for layer in _get_layers(model):
        if isinstance(layer, keras.Model):
            yield from _flat(layer)
        else:
            yield layer


def _get_layers(model):
    layers = getattr(model, "layers", None)
    if layers is None:
        raise ValueError(
            "Expected a keras.Model (an object with a `.layers` list). "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    return list(layers)


def _walk(model):
    """Pre-order walk over every layer, containers included (the model too)."""
    yield model
    for layer in getattr(model, "layers", []):
        yield from _walk(layer)


def _count(weights):
    return int(sum(math.prod(w.shape) for w in weights))


@dataclasses.dataclass(frozen=True)
class FreezeReport:
    """What `freeze_fraction` did to a model.

    Attributes:
        frozen: Names of the layers now frozen, in model order.
        trainable: Names of the layers left trainable, in model order.
        n_layers: Number of layers counted (`len(flatten_layers(model))`).
        fraction: The requested fraction.
        mode: `"ordered"` or `"stochastic"`.
        by: `"layers"` or `"params"`.
        seed: The seed used by `mode="stochastic"` (`None` otherwise); when
            none was passed, the seed drawn, so the freeze can be repeated.
        trainable_params_before: Trainable parameters before the call.
        non_trainable_params_before: Non-trainable parameters before the call.
        trainable_params_after: Trainable parameters after the call.
        non_trainable_params_after: Non-trainable parameters after the call.
        train_bn: Whether BatchNormalization layers of the frozen set were
            left trainable (`train_bn=True`).
        kept_trainable: Names of the BatchNormalization layers that were
            chosen but left trainable by `train_bn=True` (listed in
            `trainable`, not in `frozen`).
        until: The `until` layer name of a `freeze(...)` call, else `None`.
        match: The `match` patterns of a `freeze(...)` call, else `None`.

    For `freeze(...)`, `mode` is `"until"` or `"match"` and `fraction` is the
    share of layers chosen (`chosen / n_layers`).
    """

    frozen: tuple
    trainable: tuple
    n_layers: int
    fraction: float
    mode: str
    by: str
    seed: int | None
    trainable_params_before: int
    non_trainable_params_before: int
    trainable_params_after: int
    non_trainable_params_after: int
    train_bn: bool = False
    kept_trainable: tuple = ()
    until: str | None = None
    match: tuple | None = None

    @property
    def n_frozen(self) -> int:
        """Number of layers frozen."""
        return len(self.frozen)

    @property
    def n_trainable(self) -> int:
        """Number of layers left trainable."""
        return len(self.trainable)

    def summary(self) -> str:
        """Returns a short human-readable account of the freeze, as a string."""
        seed = f", seed={self.seed}" if self.mode == "stochastic" else ""
        bn = ", train_bn=True" if self.train_bn else ""
        if self.mode in ("until", "match"):
            value = self.until if self.mode == "until" else list(self.match)
            call = f"freeze({self.mode}={value!r}{bn})"
        else:
            call = (
                f"freeze_fraction(fraction={self.fraction}, mode={self.mode!r}, "
                f"by={self.by!r}{seed}{bn})"
            )
        lines = [
            call,
            f"  layers frozen:     {self.n_frozen} / {self.n_layers}",
            f"  layers trainable:  {self.n_trainable} / {self.n_layers}",
            "  parameters         before -> after",
            f"    trainable:       {self.trainable_params_before:,} -> "
            f"{self.trainable_params_after:,}",
            f"    non-trainable:   {self.non_trainable_params_before:,} -> "
            f"{self.non_trainable_params_after:,}",
        ]
        if self.frozen:
            shown = ", ".join(self.frozen[:3])
            if self.n_frozen > 6:
                shown += ", ..., " + ", ".join(self.frozen[-3:])
            elif self.n_frozen > 3:
                shown = ", ".join(self.frozen)
            lines.append(f"  frozen: {shown}")
        if self.kept_trainable:
            lines.append(
                f"  BatchNormalization kept trainable (train_bn): {len(self.kept_trainable)}"
            )
        return "\n".join(lines)

    def __str__(self):
        return self.summary()


def _n_to_freeze(fraction, n):
    """floor(fraction * n), reading `fraction` as the decimal it prints as.

    Reading 0.29 as the decimal 0.29 (not as its binary value
    0.28999999999999998) makes 0.29 of 100 layers 29, as a user expects.
    """
    return math.floor(Fraction(repr(fraction)) * n)


def _prefix_by_params(params, fraction):
    """Shortest prefix length whose parameter sum is >= fraction * total."""
    total = int(sum(params))
    target = Fraction(repr(fraction)) * total
    if target == 0:
        return 0
    cumulative = np.cumsum(params)
    return int(np.searchsorted(cumulative, math.ceil(target), side="left")) + 1


def freeze_fraction(
    model: keras.Model,
    fraction: float = 0.5,
    mode: str = "ordered",
    *,
    by: str = "layers",
    seed: int | None = None,
    train_bn: bool = False,
) -> FreezeReport:
    """Freezes a fraction of a model's layers, as the paper's Mobile Freeze-Net.

    The layers counted are `flatten_layers(model)`: `model.layers` in order,
    with nested models expanded into their own layers. Of those N layers:

    - `mode="ordered"`, `by="layers"` freezes the first `floor(fraction * N)`
      (the paper's method: on `keras.applications.MobileNetV2(include_top=False)`,
      154 layers, `fraction=0.5` freezes exactly `layers[:77]`);
    - `mode="stochastic"`, `by="layers"` freezes a uniformly random subset of the
      same size, reproducible with `seed` (the paper's "50% stochastic fine
      tuning" baseline);
    - `by="params"` freezes the shortest run of layers, in model order (ordered)
      or in a seeded random order (stochastic), that holds at least
      `fraction` of the model's parameters.

    Every layer not chosen is made trainable, so the result depends only on the
    arguments, never on earlier calls: calling it twice gives the same state.
    `unfreeze(model)` restores the flags the model had before the first call.

    The paper freezes half of the backbone (`freeze_fraction(base, 0.5)` on
    the MobileNetV2 base, as in the example below), not of the whole
    classifier, whose head adds two layers.

    Frozen `BatchNormalization` layers run in inference mode during `fit`
    (Keras 3 semantics), so their moving statistics stay as loaded. Freeze
    before `model.compile(...)`, or compile again after freezing; inside
    `fit` (a callback) call `model.make_train_function(force=True)` after it.
    Changing the flags of a model that is already compiled warns (a
    `UserWarning`) that the change takes effect at the next `compile()`.
    The warning looks at `model` only: freezing a sub-model (a backbone) of a
    compiled model does not warn, yet needs the same recompile.

    Args:
        model: The `keras.Model` to freeze in place.
        fraction: Float in [0, 1], the share of layers (or parameters) to
            freeze. Defaults to `0.5`, the paper's choice. It is read as the
            decimal it prints as, so `0.29` of 100 layers freezes 29.
        mode: `"ordered"` (a prefix) or `"stochastic"` (a seeded random
            subset). Defaults to `"ordered"`.
        by: `"layers"` to count layers, `"params"` to count parameters
            (the model must be built). Defaults to `"layers"`.
        seed: Integer seed >= 0 for `mode="stochastic"`; `None` draws a
            seed (recorded in the report's `seed`). Must be `None` with
            `mode="ordered"`.
        train_bn: If `True`, the BatchNormalization layers among the chosen
            layers stay trainable (fastai's `train_bn`); see `freeze`.
            Defaults to `False`.

    Returns:
        A `FreezeReport` naming the frozen layers, with parameter counts
        before and after.

    Raises:
        ValueError: If `fraction` is not a number in [0, 1], `mode` or `by`
            is unknown, `seed` is given with `mode="ordered"`, the model has no
            layers, or `by="params"` is asked of an unbuilt or weightless model.

    Example:

    >>> import keras
    >>> base = keras.applications.MobileNetV2(
    ...     include_top=False, weights=None, input_shape=(96, 96, 3))
    >>> report = freeze_fraction(base, 0.5)
    >>> report.n_frozen, len(base.layers)
    (77, 154)
    >>> all(not layer.trainable for layer in base.layers[:77])
    True
    >>> all(layer.trainable for layer in base.layers[77:])
    True
    """
    fraction = check.fraction(fraction)
    check.mode_by_seed(mode, by, seed)
    train_bn = check.boolean("train_bn", train_bn)
    return apply_freeze(model, fraction, mode, by, seed, warn_if_compiled=True, train_bn=train_bn)


def apply_freeze(model, fraction, mode, by, seed, *, warn_if_compiled, train_bn=False):
    """`freeze_fraction` on checked arguments; a callback passes `warn_if_compiled=False`."""
    layers = flatten_layers(model)
    if mode == "stochastic" and seed is None:
        seed = _sampling.new_seed()  # recorded in the report, so the freeze can be repeated
    chosen = _choose(model, layers, fraction, mode, by, seed)
    what = "freeze_fraction" if warn_if_compiled else None
    return _freeze_chosen(
        model,
        layers,
        chosen,
        train_bn,
        what,
        fraction=fraction,
        mode=mode,
        by=by,
        seed=None if seed is None else int(seed),
    )


def _freeze_chosen(model, layers, chosen, train_bn, what, stacklevel=5, **fields):
    """Freezes `layers[i]` for `i` in `chosen` (BN kept with `train_bn`), the rest trainable."""
    before = (_count(model.trainable_weights), _count(model.non_trainable_weights))
    flags_before = [layer.trainable for layer in _walk(model)]
    if not hasattr(model, _ORIGINAL_FLAGS_ATTR):
        compat.set_untracked_attribute(
            model,
            _ORIGINAL_FLAGS_ATTR,
            _FlagRecord([(layer, layer.trainable) for layer in _walk(model)]),
        )
    kept = {
        i for i in chosen if train_bn and isinstance(layers[i], keras.layers.BatchNormalization)
    }
    frozen = set(chosen) - kept
    compat.set_trainable(model, True)  # recursive in Keras 3: resets every sublayer
    for i in sorted(frozen):
        layers[i].trainable = False
    if what is not None:
        _warn_if_compiled(model, flags_before, what, stacklevel=stacklevel)
    return FreezeReport(
        frozen=tuple(layer.name for i, layer in enumerate(layers) if i in frozen),
        trainable=tuple(layer.name for i, layer in enumerate(layers) if i not in frozen),
        n_layers=len(layers),
        trainable_params_before=before[0],
        non_trainable_params_before=before[1],
        trainable_params_after=_count(model.trainable_weights),
        non_trainable_params_after=_count(model.non_trainable_weights),
        train_bn=bool(train_bn),
        kept_trainable=tuple(layers[i].name for i in sorted(kept)),
        **fields,
    )


def _warn_if_compiled(model, flags_before, what, stacklevel):
    """Warns when the trainable flags of an already compiled model changed."""
    if not getattr(model, "compiled", False):
        return
    if [layer.trainable for layer in _walk(model)] == flags_before:
        return
    warnings.warn(
        f"{what} changed which layers of model {model.name!r} are trainable after the "
        "model was compiled. The change takes effect at the next `model.compile(...)`: "
        "until then `fit` may keep training the layers as they were compiled (Keras reuses "
        "its train function and optimizer). Compile again before training; inside `fit`, "
        "a callback must call `model.make_train_function(force=True)`, as "
        "`GradualUnfreezing` does.",
        stacklevel=stacklevel,
    )


def _choose(model, layers, fraction, mode, by, seed):
    """Indices (a set) into `layers` of the layers to freeze."""
    n = len(layers)
    if n == 0:
        raise ValueError(
            f"Expected a model with at least one layer. Received: model {model.name!r} "
            "with no layers. Build or define the model's layers first."
        )
    order = np.arange(n)
    if mode == "stochastic":
        order = np.random.default_rng(seed).permutation(n)
    if by == "layers":
        k = _n_to_freeze(fraction, n)
    else:
        k = _prefix_by_params(_layer_params(model, layers)[order], fraction)
    return set(order[:k].tolist())


def _layer_params(model, layers):
    unbuilt = [layer.name for layer in layers if not layer.built]
    if unbuilt:
        raise ValueError(
            "by='params' needs a built model to count parameters. Received: model "
            f"{model.name!r} with unbuilt layers {unbuilt[:5]}. Call the model on "
            "data or `model.build(input_shape)` first."
        )
    params = np.array([layer.count_params() for layer in layers], dtype=np.int64)
    if params.sum() == 0:
        raise ValueError(
            f"by='params' needs parameters to count. Received: model {model.name!r} "
            "with 0 parameters. Use by='layers'."
        )
    return params


def _close_names(name, names):
    return difflib.get_close_matches(name, names, n=5, cutoff=0.5)


def _check_until_match(until, match):
    """Returns `(until, patterns)`; exactly one of the two is given."""
    if (until is None) == (match is None):
        raise ValueError(
            "Expected exactly one of `until` (a layer name) or `match` (glob patterns). "
            f"Received: until={until!r}, match={match!r}"
        )
    if until is not None:
        if not isinstance(until, str):
            raise ValueError(f"Expected until to be a layer name (str). Received: until={until!r}")
        return until, None
    patterns = (match,) if isinstance(match, str) else match
    if (
        not isinstance(patterns, (list, tuple))
        or not patterns
        or not all(isinstance(p, str) for p in patterns)
    ):
        raise ValueError(
            "Expected match to be a glob pattern or a non-empty list of patterns (str). "
            f"Received: match={match!r}"
        )
    return None, tuple(patterns)


def _chosen_by_name(model, layers, until, patterns):
    """Indices of the layers to freeze: up to `until` included, or those matching `patterns`."""
    names = [layer.name for layer in layers]
    if until is not None:
        if until not in names:
            raise ValueError(
                f"Expected until to name a layer of model {model.name!r} (nested models "
                f"expanded). Received: until={until!r}; close names: "
                f"{_close_names(until, names)}"
            )
        return set(range(names.index(until) + 1))
    chosen = set()
    for pattern in patterns:
        hits = {i for i, name in enumerate(names) if fnmatch.fnmatchcase(name, pattern)}
        if not hits:
            raise ValueError(
                f"Expected every pattern to match a layer of model {model.name!r}. "
                f"Received: pattern {pattern!r} in match={list(patterns)!r} matches none; "
                f"close names: {_close_names(pattern, names)}"
            )
        chosen |= hits
    return chosen


def freeze(
    model: keras.Model,
    *,
    until: str | None = None,
    match: str | list[str] | None = None,
    train_bn: bool = False,
) -> FreezeReport:
    """Freezes layers by name: every layer up to `until`, or those matching `match`.

    The layers are those of `flatten_layers(model)` (nested models expanded
    into their layers, in order). With `until`, the named layer and every
    layer before it are frozen: `freeze(base, until="block_8_depthwise_BN")`
    on Keras' MobileNetV2 (154 layers) freezes `base.layers[:77]`, the paper's
    50% cut. With `match`, a glob pattern or a list of them (`fnmatch`, case
    sensitive), the layers whose name matches any pattern are frozen, e.g.
    `match=["Conv1", "block_[1-4]_*"]`. As with `freeze_fraction`, every other
    layer is made trainable, and `unfreeze(model)` undoes the call.

    `train_bn=True` keeps the BatchNormalization layers of the chosen set
    trainable (fastai's `train_bn`): their `gamma` and `beta` train and, being
    trainable, they run in training mode during `fit` (Keras 3 semantics),
    normalising with batch statistics and updating their moving mean and
    variance. With the default `train_bn=False` they are frozen like the
    rest: inference mode, moving statistics kept as loaded, which is what
    Keras' transfer-learning guide recommends for small fine-tuning sets.

    Freeze before `model.compile(...)` (or compile again after it), as for
    `freeze_fraction`.

    Args:
        model: The `keras.Model` to freeze in place.
        until: Name of the last layer to freeze.
        match: A glob pattern, or a list of patterns, naming the layers to
            freeze. Exactly one of `until` and `match` must be given.
        train_bn: Keep the chosen BatchNormalization layers trainable.
            Defaults to `False`.

    Returns:
        A `FreezeReport` (`mode` is `"until"` or `"match"`).

    Raises:
        ValueError: If both or neither of `until` and `match` are given, a
            name or pattern matches no layer (the message lists close
            names), or the call would freeze no layer at all (e.g. every
            chosen layer is a BatchNormalization with `train_bn=True`).

    Example:

    >>> import keras
    >>> base = keras.applications.MobileNetV2(
    ...     include_top=False, weights=None, input_shape=(96, 96, 3))
    >>> report = freeze(base, until="block_8_depthwise_BN")
    >>> report.n_frozen, [layer.trainable for layer in base.layers] == [False] * 77 + [True] * 77
    (77, True)
    >>> report = freeze(base, match="block_1_*", train_bn=True)
    >>> report.frozen[:3], report.kept_trainable[:2]
    (('block_1_expand', 'block_1_expand_relu', 'block_1_pad'),
     ('block_1_expand_BN', 'block_1_depthwise_BN'))
    """
    until, patterns = _check_until_match(until, match)
    train_bn = check.boolean("train_bn", train_bn)
    layers = flatten_layers(model)
    chosen = _chosen_by_name(model, layers, until, patterns)
    if train_bn and all(isinstance(layers[i], keras.layers.BatchNormalization) for i in chosen):
        raise ValueError(
            "Expected the call to freeze at least one layer. Received: "
            f"{'until' if until else 'match'}={until or list(patterns)!r} chooses only "
            "BatchNormalization layers, which train_bn=True keeps trainable."
        )
    return _freeze_chosen(
        model,
        layers,
        chosen,
        train_bn,
        "freeze",
        stacklevel=4,
        fraction=len(chosen) / len(layers),
        mode="until" if until else "match",
        by="layers",
        seed=None,
        until=until,
        match=patterns,
    )


def unfreeze(model: keras.Model) -> int:
    """Undoes `freeze_fraction`: restores the trainable flags from before it.

    If `freeze_fraction` was called on `model` (once or more), every layer gets
    back the `trainable` flag it had before the first call. Otherwise (say, a
    model loaded from a `.keras` file) every layer is made trainable.
    As with freezing, compile again afterwards (or, inside `fit`, call
    `model.make_train_function(force=True)`).

    Args:
        model: The `keras.Model` to unfreeze in place.

    Returns:
        The number of layers of `flatten_layers(model)` that are trainable
        afterwards.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2),
    ...                           keras.layers.Dense(1)])
    >>> _ = freeze_fraction(model, 0.5)
    >>> [layer.trainable for layer in model.layers]
    [False, True]
    >>> unfreeze(model)
    2
    >>> [layer.trainable for layer in model.layers]
    [True, True]
    """
    _get_layers(model)
    flags_before = [layer.trainable for layer in _walk(model)]
    original = getattr(model, _ORIGINAL_FLAGS_ATTR, None)
    if original is None:
        compat.set_trainable(model, True)
    else:
        for layer, flag in original:  # pre-order: containers before their layers
            compat.set_trainable(layer, flag)
        compat.delete_untracked_attribute(model, _ORIGINAL_FLAGS_ATTR)
    _warn_if_compiled(model, flags_before, "unfreeze", stacklevel=3)
    return sum(layer.trainable for layer in flatten_layers(model))
