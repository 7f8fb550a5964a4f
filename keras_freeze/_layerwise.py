"""Discriminative (per-layer) learning rates for any Keras optimizer.

`LayerwiseOptimizer` wraps a Keras optimizer and runs each variable at the
wrapped optimizer's learning rate times a per-layer factor, as fastai's
discriminative learning rates, ULMFiT's layer decay or BEiT's layer-wise
decay do; `layerwise_decay` builds such factors, decaying geometrically from
the head of a model towards its input.

The design is exact by construction: for every distinct non-zero factor the
wrapper keeps one clone of the wrapped optimizer (same class, same config,
learning rate times the factor) and hands it the variables of that factor.
So each variable follows precisely the update rule, state and step count of
a plain optimizer run at `learning_rate * factor`, for SGD with momentum as
for Adam or any other optimizer (scaling the gradient instead would do
nothing for Adam, which is invariant to gradient scale). Variables with
factor 0 are handed to no clone and stay bit-identical.
"""

from __future__ import annotations

import difflib
import fnmatch
import glob
import re
import warnings
from collections.abc import Mapping
from typing import Any

import keras

from keras_freeze import _keras_compat as compat
from keras_freeze import _validation as check
from keras_freeze._freeze import flatten_layers

__all__ = ["LayerwiseOptimizer", "ScaledSchedule", "layerwise_decay"]

#: Smallest learning-rate factor `layerwise_decay` gives. Below it the factor is
#: freezing in disguise: a float32 weight resolves relative steps of about 1e-7,
#: so no sensible learning rate times 1e-30 moves it, and a factor that underflows to 0.0
#: means "frozen" to `LayerwiseOptimizer`.
MIN_FACTOR = 1e-30


def _layer_names(variable):
    """The layer (and model) names in a variable's path: every part but the last."""
    return variable.path.split("/")[:-1]


def _check_multipliers(multipliers):
    """Returns `multipliers` as a tuple of `(pattern, factor)` pairs, order kept."""
    if isinstance(multipliers, Mapping):
        items = list(multipliers.items())
    elif isinstance(multipliers, (list, tuple)):
        items = list(multipliers)
    else:
        raise ValueError(
            "Expected multipliers to be a dict {layer_name_pattern: factor} (or a list of "
            f"(pattern, factor) pairs). Received: multipliers={multipliers!r}"
        )
    pairs = []
    for item in items:
        if not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[0], str):
            raise ValueError(
                "Expected each multiplier to be a (pattern, factor) pair with a string "
                f"pattern. Received: {item!r} in multipliers={multipliers!r}"
            )
        pattern, factor = item
        pairs.append((pattern, check.nonnegative_float(f"multipliers[{pattern!r}]", factor)))
    patterns = [p for p, _ in pairs]
    if len(set(patterns)) != len(patterns):
        raise ValueError(f"Expected distinct patterns. Received: multipliers={multipliers!r}")
    return tuple(pairs)


def _check_wrapped(optimizer):
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(
            "Expected optimizer to be a keras.optimizers.Optimizer instance, e.g. "
            f"keras.optimizers.Adam(1e-3). Received: optimizer={optimizer!r}"
        )
    if isinstance(optimizer, LayerwiseOptimizer):
        raise ValueError(
            "Expected a plain optimizer, not a LayerwiseOptimizer: merge the two "
            f"multipliers dicts into one. Received: optimizer={optimizer!r}"
        )
    inner = optimizer
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        inner = optimizer.inner_optimizer
    if inner.global_clipnorm is not None:
        raise ValueError(
            "LayerwiseOptimizer cannot wrap an optimizer with global_clipnorm: its "
            "groups of variables would each be clipped to the norm separately. "
            f"Received: global_clipnorm={inner.global_clipnorm}. Use clipnorm or "
            "clipvalue (per variable, exact) instead."
        )


@keras.saving.register_keras_serializable(package="keras_freeze")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate schedule times a constant factor: `schedule(step) * factor`.

    `LayerwiseOptimizer` gives this schedule to the optimizer of a group of
    layers when the wrapped optimizer has a `LearningRateSchedule`.

    Args:
        schedule: A `keras.optimizers.schedules.LearningRateSchedule`.
        factor: A finite number >= 0.

    Example:

    >>> import keras
    >>> base = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    >>> round(float(ScaledSchedule(base, 0.5)(10)), 6)
    0.025
    """

    def __init__(self, schedule, factor):
        if isinstance(schedule, dict):
            schedule = keras.optimizers.schedules.deserialize(schedule)
        self.schedule = schedule
        self.factor = check.nonnegative_float("factor", factor)

    def __call__(self, step):
        return keras.ops.multiply(self.schedule(step), self.factor)

    def get_config(self) -> dict[str, Any]:
        return {
            "schedule": keras.optimizers.schedules.serialize(self.schedule),
            "factor": self.factor,
        }


class _Parts:
    """Plain holder of the wrapper's inner optimizers, kept out of Keras' save walk.

    The wrapper's `variables` list holds every inner variable, so `.keras`
    files store them once, in order, under the wrapper.
    """

    def __init__(self):
        self.engine = None
        self.groups = {}  # factor -> clone of the wrapped optimizer
        self.factor_of = {}  # optimizer variable key -> factor


def _clone(template, config, factor, name):
    """A fresh optimizer of `template`'s class, `config` at `learning_rate * factor`."""
    config = dict(config)
    rate = config["learning_rate"]
    if isinstance(rate, dict):
        config["learning_rate"] = ScaledSchedule(
            keras.optimizers.schedules.deserialize(rate), factor
        )
    else:
        config["learning_rate"] = float(rate) * factor
    config["name"] = name
    clone = template.__class__.from_config(config)
    compat.copy_weight_decay_exclusions(template, clone)
    return clone


class _Groups(keras.optimizers.Optimizer):
    """One clone of `template` per distinct non-zero factor; the engine of `LayerwiseOptimizer`."""

    def __init__(self, template, factor_of, name):
        # Read eagerly here: TensorFlow may build the optimizer inside a tf.function.
        config = template.get_config()
        rate = config["learning_rate"]
        if isinstance(rate, dict):
            rate = keras.optimizers.schedules.deserialize(rate)
        super().__init__(
            learning_rate=rate, name=name, loss_scale_factor=template.loss_scale_factor
        )
        self._parts = _Parts()
        self._parts.template = template
        self._parts.config = config
        self._parts.rule = factor_of

    def build(self, variables):
        variables = list(variables)
        parts = self._parts
        parts.groups, parts.factor_of = {}, {}
        by_factor = {}
        for variable in variables:
            factor = parts.rule(variable)
            parts.factor_of[compat.optimizer_variable_key(self, variable)] = factor
            if factor != 0.0:
                by_factor.setdefault(factor, []).append(variable)
        for factor, members in by_factor.items():
            clone = _clone(parts.template, parts.config, factor, f"{self.name}_x{factor!r}")
            clone.build(members)
            parts.groups[factor] = clone
        super().build(variables)

    @property
    def variables(self):
        inner = [v for clone in self._parts.groups.values() for v in clone.variables]
        return compat.optimizer_own_variables(self) + inner

    def _split(self, grads, variables):
        split = {factor: ([], []) for factor in self._parts.groups}
        for grad, variable in zip(grads, variables, strict=True):
            key = compat.optimizer_variable_key(self, variable)
            if key not in self._parts.factor_of:
                raise ValueError(
                    f"Unknown variable {variable.path!r}: the LayerwiseOptimizer was built for "
                    "other variables. Compile the model again after changing which layers "
                    "are trainable."
                )
            factor = self._parts.factor_of[key]
            if factor != 0.0:
                split[factor][0].append(grad)
                split[factor][1].append(variable)
        return split

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None:
            if not self.built:
                raise ValueError(
                    "When passing `grads` without `variables`, the optimizer must already "
                    "be built. Call `optimizer.build(trainable_variables)` first."
                )
            trainable_variables = compat.optimizer_built_variables(self)
        elif not self.built:
            self.build(trainable_variables)
        grads, trainable_variables = list(grads), list(trainable_variables)
        for factor, (group_grads, group_variables) in self._split(
            grads, trainable_variables
        ).items():
            if group_variables:
                self._parts.groups[factor].apply(group_grads, group_variables)
        compat.optimizer_step_counter(self).assign_add(1)

    @property
    def learning_rate(self):
        return compat.optimizer_current_learning_rate(self)

    @learning_rate.setter
    def learning_rate(self, value):
        compat.set_optimizer_learning_rate(self, value)
        if isinstance(value, keras.optimizers.schedules.LearningRateSchedule):
            self._parts.config["learning_rate"] = keras.optimizers.schedules.serialize(value)
        elif isinstance(value, (int, float)):
            self._parts.config["learning_rate"] = float(value)
        for factor, clone in self._parts.groups.items():
            if isinstance(value, keras.optimizers.schedules.LearningRateSchedule):
                clone.learning_rate = ScaledSchedule(value, factor)
            else:
                clone.learning_rate = keras.ops.multiply(value, factor)

    def finalize_variable_values(self, var_list):
        for factor, clone in self._parts.groups.items():
            members = [
                v
                for v in var_list
                if self._parts.factor_of.get(compat.optimizer_variable_key(self, v)) == factor
            ]
            clone.finalize_variable_values(members)


@keras.saving.register_keras_serializable(package="keras_freeze")
class LayerwiseOptimizer(keras.optimizers.Optimizer):
    """Per-layer learning rates: wraps an optimizer, one factor per layer-name pattern.

    Each trainable variable is updated exactly as the wrapped `optimizer`
    would update it at `learning_rate * factor`, where `factor` is that of the
    first pattern of `multipliers` (in order) that matches one of the layer
    names in the variable's path, or `default` if none does. This is fastai's
    discriminative learning rates and the layer decay of ULMFiT and BEiT (see
    `layerwise_decay`).

    **Which layer a variable belongs to.** The optimizer sees variables, not
    layers, and reads the layer names from `variable.path`: every part but
    the last. A Dense layer `"head"` has `"head/kernel"`; a layer of a nested
    Sequential model has `"outer/inner/dense/kernel"`, so the pattern
    `"inner"` matches all of `inner`'s variables and `"dense"` that one layer.
    A Functional backbone built before it was nested (e.g. a
    `keras.applications` model) keeps paths without the model name, such as
    `"block_1_expand/kernel"`. Patterns are `fnmatch` globs (case sensitive):
    `"block_1*"`, `"*_BN"`, `"head"`. A pattern that matches none of the
    variables the optimizer is built for (the trainable ones) warns, listing
    close layer names.

    **How it is exact.** For each distinct non-zero factor the wrapper keeps a
    clone of `optimizer` (same class and config) with learning rate times the
    factor (a `LearningRateSchedule` is wrapped in `ScaledSchedule`), and
    gives it that factor's variables. So momentum, Adam moments and bias
    correction, step counts, `clipnorm` / `clipvalue` and EMA are those of a
    plain optimizer at `learning_rate * factor`. Weight decay scales with the
    factor too, as Keras applies it as `variable -= variable * weight_decay *
    learning_rate` (AdamW, or `weight_decay=` on any optimizer). A factor of
    0 gives the variable to no clone: it stays bit-identical and holds no
    optimizer state. `global_clipnorm` is refused: the norm of all gradients
    would be taken per group.

    **Mixed precision.** Both `LossScaleOptimizer(LayerwiseOptimizer(opt,
    ...))` and `LayerwiseOptimizer(LossScaleOptimizer(opt), ...)` work and
    are the same: in the second the wrapper keeps one loss scale for all
    groups (a skipped step skips every group).

    Setting `learning_rate` (as `ReduceLROnPlateau` does) sets the base rate;
    every group follows at its factor. The wrapper saves and loads with a
    `.keras` model, optimizer state included; it is rebuilt at `compile` and
    by `GradualUnfreezing` when the trainable layers change.

    Args:
        optimizer: A `keras.optimizers.Optimizer` instance (or a
            `LossScaleOptimizer`), the base learning rate and update rule.
        multipliers: A dict `{pattern: factor}` (or a list of `(pattern,
            factor)` pairs): factors >= 0 on the learning rate of the layers
            whose names match the glob `pattern`; the first match wins.
        default: Factor for variables no pattern matches. Defaults to `1.0`.
        name: Optional name of the optimizer. Defaults to
            `"layerwise_optimizer"`.

    Raises:
        ValueError: If `optimizer` is not a Keras optimizer (or is a
            `LayerwiseOptimizer`, or uses `global_clipnorm`), a pattern is not
            a string or repeats, or a factor is negative or not finite.

    Example:

    >>> import keras
    >>> import numpy as np
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="body"),
    ...                           keras.layers.Dense(2, name="head")], name="net")
    >>> optimizer = LayerwiseOptimizer(keras.optimizers.Adam(1e-3), {"body": 0.1})
    >>> model.compile(optimizer=optimizer, loss="mse")
    >>> _ = model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1, verbose=0)
    >>> sorted(optimizer.factors().items())
    [('net/body/bias', 0.1), ('net/body/kernel', 0.1), ('net/head/bias', 1.0),
     ('net/head/kernel', 1.0)]
    """

    def __init__(
        self,
        optimizer: keras.optimizers.Optimizer,
        multipliers: Mapping[str, float] | list,
        default: float = 1.0,
        name: str | None = None,
    ) -> None:
        _check_wrapped(optimizer)
        multipliers = _check_multipliers(multipliers)
        default = check.nonnegative_float("default", default)
        super().__init__(learning_rate=0.0, name=name or "layerwise_optimizer")
        self.multipliers = multipliers
        self.default = default
        self._parts = _Parts()
        self._parts.wrapped = optimizer
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            groups = _Groups(optimizer.inner_optimizer, self.factor_for, f"{self.name}_groups")
            self._parts.engine = keras.optimizers.LossScaleOptimizer(
                groups,
                initial_scale=optimizer.initial_scale,
                dynamic_growth_steps=optimizer.dynamic_growth_steps,
                name=optimizer.name,
            )
        else:
            self._parts.engine = _Groups(optimizer, self.factor_for, f"{self.name}_groups")

    @property
    def optimizer(self) -> keras.optimizers.Optimizer:
        """The wrapped optimizer, as passed."""
        return self._parts.wrapped

    def factor_for(self, variable) -> float:
        """Returns the learning-rate factor of `variable` (read from `variable.path`)."""
        names = _layer_names(variable)
        for pattern, factor in self.multipliers:
            if any(fnmatch.fnmatchcase(name, pattern) for name in names):
                return factor
        return self.default

    def factors(self) -> dict[str, float]:
        """Returns `{variable.path: factor}` for the variables the optimizer was built for."""
        return {v.path: self.factor_for(v) for v in compat.optimizer_built_variables(self)}

    def build(self, variables):
        variables = list(variables)
        self._warn_unmatched(variables)
        self._parts.engine.build(variables)
        super().build(variables)

    def _warn_unmatched(self, variables):
        names = sorted({name for v in variables for name in _layer_names(v)})
        for pattern, _ in self.multipliers:
            if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                close = difflib.get_close_matches(pattern, names, n=5, cutoff=0.5)
                warnings.warn(
                    f"LayerwiseOptimizer: pattern {pattern!r} matches no layer of the "
                    f"{len(variables)} trainable variables it was built for, so its factor "
                    f"has no effect. Close layer names: {close}. Layer names are the parts "
                    "of `variable.path` before the variable name.",
                    stacklevel=3,
                )

    @property
    def variables(self):
        return compat.optimizer_own_variables(self) + self._parts.engine.variables

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            if trainable_variables is None:
                raise ValueError(
                    "When passing `grads` without `variables`, the optimizer must already "
                    "be built. Call `optimizer.build(trainable_variables)` first."
                )
            self.build(trainable_variables)
        self._parts.engine.apply(grads, trainable_variables)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        own = len(compat.optimizer_own_variables(self))
        new_trainable, new_inner = self._parts.engine.stateless_apply(
            list(optimizer_variables[own:]), grads, trainable_variables
        )
        unchanged = [keras.ops.convert_to_tensor(v) for v in optimizer_variables[:own]]
        return new_trainable, unchanged + list(new_inner)

    @property
    def iterations(self):
        return self._parts.engine.iterations

    @property
    def learning_rate(self):
        return self._parts.engine.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        if not hasattr(self, "_parts"):  # the base constructor sets its own rate
            compat.set_optimizer_learning_rate(self, value)
            return
        self._parts.engine.learning_rate = value
        self._parts.wrapped.learning_rate = value

    def scale_loss(self, loss):
        return self._parts.engine.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self._parts.engine.finalize_variable_values(var_list)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "optimizer": keras.saving.serialize_keras_object(self._parts.wrapped),
            "multipliers": [[pattern, factor] for pattern, factor in self.multipliers],
            "default": self.default,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        optimizer = keras.saving.deserialize_keras_object(
            config.pop("optimizer"), custom_objects=custom_objects
        )
        return cls(optimizer, **config)


def _blocks(layers, block):
    """Groups of consecutive layers (lists of names), input side first."""
    groups, keys = [], []
    for layer in layers:
        match = re.match(block, layer.name) if block is not None else None
        key = ("block", match.group(1) if match.groups() else match.group(0)) if match else None
        if key is not None and keys and keys[-1] == key:
            groups[-1].append(layer.name)
        else:
            groups.append([layer.name])
            keys.append(key)
    return groups


def layerwise_decay(
    model: keras.Model, decay: float, *, block: str | None = None
) -> dict[str, float]:
    """Learning-rate factors decaying geometrically from the head to the input.

    The layers with weights of `flatten_layers(model)` (nested models
    expanded) are taken in order. Without `block`, each is one step: the
    last layer (the head) gets factor 1, the one before it `decay`, the one
    before that `decay ** 2`, and so on (ULMFiT's discriminative fine-tuning
    by depth). With `block`, a regular expression, consecutive layers whose
    names match it with the same first group (or the same whole match, if it
    has no group) form one block and share a factor; a layer that does not
    match is a block of its own. `block=r"(block_\\d+)_"` groups
    MobileNetV2's inverted-residual blocks, as BEiT's layer decay groups
    transformer blocks.

    Args:
        model: A built `keras.Model`.
        decay: Factor in (0, 1] between consecutive steps (e.g. `0.8`).
        block: Optional regular expression (matched at the start of each
            layer name) that groups layers into blocks. Defaults to `None`
            (every layer with weights is its own step).

    Returns:
        An ordered dict `{pattern: factor}`, the head first, one entry per
        layer with weights (its name, glob-escaped), ready to pass as
        `LayerwiseOptimizer(optimizer, multipliers=...)`.

    Raises:
        ValueError: If `decay` is not in (0, 1] or so small that the
            input block's factor `decay ** depth` falls below `MIN_FACTOR`
            (1e-30; the message names the smallest usable decay), `block` is not a valid
            regular expression, or the model has no layer with weights.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="a"),
    ...                           keras.layers.ReLU(), keras.layers.Dense(4, name="b"),
    ...                           keras.layers.Dense(2, name="head")])
    >>> layerwise_decay(model, 0.5)
    {'head': 1.0, 'b': 0.5, 'a': 0.25}
    """
    if not check.is_integer(decay) and not isinstance(decay, float) or not 0 < decay <= 1:
        raise ValueError(f"Expected decay in (0, 1]. Received: decay={decay!r}")
    if block is not None:
        try:
            re.compile(block)
        except (TypeError, re.error) as error:
            raise ValueError(
                f"Expected block to be a regular expression. Received: block={block!r}"
            ) from error
    layers = [layer for layer in flatten_layers(model) if layer.weights]
    if not layers:
        raise ValueError(
            f"Expected a built model with weights. Received: model {model.name!r} has no "
            "layer with weights. Build it (call it on data) first."
        )
    blocks = list(reversed(_blocks(layers, block)))
    deepest = len(blocks) - 1
    if deepest and float(decay) ** deepest < MIN_FACTOR:
        smallest = MIN_FACTOR ** (1.0 / deepest)
        raise ValueError(
            f"Expected decay >= {smallest:.4g} for this model: its {deepest + 1} blocks give "
            f"the input block the factor decay**{deepest} = {float(decay) ** deepest:.3g}, "
            f"below {MIN_FACTOR:g}, where a learning rate changes no float32 weight (and 0.0, "
            "where the power underflows, means frozen to LayerwiseOptimizer). Received: "
            f"decay={decay!r}. Use a decay >= {smallest:.4g}, or freeze the early layers "
            "(`freeze_fraction`) instead."
        )
    multipliers = {}
    for depth, names in enumerate(blocks):
        for name in names:
            multipliers.setdefault(glob.escape(name), float(decay) ** depth)
    return dict(sorted(multipliers.items(), key=lambda item: -item[1]))
