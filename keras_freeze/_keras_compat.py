"""Every use of a Keras private attribute or internal behaviour, in one place.

keras-freeze builds on the public Keras 3 API except for the few facts below,
which Keras does not expose publicly. Each is wrapped in a small named
function, and `tests/test_keras_compat.py` checks on the installed Keras that
each still exists and behaves as assumed, so that a Keras release that changes
one fails loudly with a message naming it.

- `optimizer._trainable_variables`: the variables an optimizer was built for.
- `model._compile_config.config`: the compile arguments `model.save` writes.
- `tensor._keras_logits`: the logits `softmax` attaches to its output on the
  TensorFlow backend (Keras' cross-entropies read them).
- `layer._flatten_layers()`: a layer and all its sublayers (also those of
  custom layers that are not models).
- `keras.layers.Layer.trainable.fset`: the `trainable` setter, called
  directly because TensorFlow's `AutoTrackable.__setattr__` skips an
  assignment of an unchanged value (and so would not reset sublayers).
- `object.__setattr__` on a layer: stores a plain Python attribute without
  Keras' attribute tracking.
- `model.distribute_strategy`: the TensorFlow trainer's strategy, under
  whose scope optimizer variables must be created.
- `Functional._run_through_graph(inputs, operation_fn)`: runs a functional
  model's graph with a replacement call per layer (what
  `keras.models.clone_model(..., call_function=...)` does inside), used by
  `split_frozen_prefix` to rebuild a nested model's graph as one flat graph.
- `optimizer.load_own_variables(store)`: the hook Keras' weight loading calls
  on an optimizer, replaced per instance by `GradualUnfreezing` while a
  `BackupAndRestore` resume may load optimizer state saved for another set of
  trainable variables.
- `optimizer._exclude_from_weight_decay(_pattern)`: the weight-decay
  exclusions, copied to the per-group optimizers of `LayerwiseOptimizer`.

Besides these, one gap in the public API: Keras 3 has no backend-agnostic
gradient op, so `gradient` (used by `grad_cam`) calls each backend's own
autodiff, importing the backend inside the function.
"""

from __future__ import annotations

import functools
import sys

import keras
import numpy as np


def optimizer_built_variables(optimizer):
    """The variables `optimizer` was built for (`optimizer._trainable_variables`)."""
    return list(getattr(optimizer, "_trainable_variables", []))


def replace_compiled_optimizer(model, old, new):
    """Makes `model.save` write `new` where the compile config holds `old`.

    Keras keeps the `compile()` arguments in `model._compile_config.config`;
    `model.get_compile_config()` serialises that dict when saving.

    Returns:
        True if the compile config held `old` and now holds `new`.
    """
    config = getattr(getattr(model, "_compile_config", None), "config", None)
    if isinstance(config, dict) and config.get("optimizer") is old:
        config["optimizer"] = new
        return True
    return False


def softmax_logits(y_pred):
    """The logits TensorFlow-backend `softmax` attached to `y_pred`, or None."""
    return getattr(y_pred, "_keras_logits", None)


def sublayers(layer):
    """`layer` and all its sublayers, recursively (`layer._flatten_layers()`)."""
    return list(layer._flatten_layers(include_self=True, recursive=True))


def set_trainable(layer, value):
    """Sets `trainable` on `layer` and on every sublayer, even where unchanged.

    The `trainable` setter is called directly on each: the setter's own
    recursion assigns `sublayer.trainable = value`, which TensorFlow's
    `AutoTrackable.__setattr__` skips when the value is unchanged, so a frozen
    layer inside a trainable nested model would stay frozen.
    """
    for sub in sublayers(layer):
        keras.layers.Layer.trainable.fset(sub, value)


def set_untracked_attribute(layer, name, value):
    """Stores a plain Python attribute on a layer, bypassing Keras' tracking."""
    object.__setattr__(layer, name, value)


def delete_untracked_attribute(layer, name):
    """Removes an attribute stored with `set_untracked_attribute`."""
    object.__delattr__(layer, name)


def distribute_strategy(model):
    """The model's `tf.distribute` strategy (TensorFlow backend), else None."""
    return getattr(model, "distribute_strategy", None)


def is_functional(model):
    """True for a Functional model (a graph of layer calls), False for Sequential/subclassed."""
    return (
        isinstance(model, keras.Model)
        and not isinstance(model, keras.Sequential)
        and hasattr(model, "_run_through_graph")
    )


def run_functional_graph(model, inputs, call_fn):
    """Runs a Functional model's graph on `inputs`, one `call_fn(layer, *args, **kwargs)` per node.

    Keras' private `Functional._run_through_graph(inputs, operation_fn)` calls
    `operation_fn(layer)` for each node and runs what it returns on the node's
    arguments.
    """
    return model._run_through_graph(inputs, operation_fn=lambda op: functools.partial(call_fn, op))


def copy_weight_decay_exclusions(source, target):
    """Copies what `source.exclude_from_weight_decay(...)` set onto `target`.

    Keras keeps the exclusions in the private attributes
    `_exclude_from_weight_decay` (variable keys) and
    `_exclude_from_weight_decay_pattern` (a compiled regex); they are not in
    `get_config`, so an optimizer rebuilt from its config would lose them.
    """
    for name in ("_exclude_from_weight_decay", "_exclude_from_weight_decay_pattern"):
        if hasattr(source, name):
            setattr(target, name, getattr(source, name))


def intercept_optimizer_load(optimizer, sink):
    """Makes `optimizer.load_own_variables(store)` append the stored arrays to `sink`.

    Keras' weight loading (`model.load_weights`, as `BackupAndRestore` calls it)
    calls `load_own_variables` on the model's optimizer, which assigns the
    stored arrays by position, or skips them when their number differs. An
    instance attribute of that name, set without Keras' tracking, replaces the
    method for this optimizer only, so the caller can load the arrays into an
    optimizer built for the variables they were saved from. Undo with
    `release_optimizer_load`.
    """

    def load_own_variables(store):
        sink.append([np.array(store[str(i)]) for i in range(len(store.keys()))])

    object.__setattr__(optimizer, "load_own_variables", load_own_variables)


def release_optimizer_load(optimizer):
    """Undoes `intercept_optimizer_load` (a no-op if it was not set)."""
    if optimizer is not None and "load_own_variables" in vars(optimizer):
        object.__delattr__(optimizer, "load_own_variables")


# --------------------------------------------------------------------------
# Optimizer internals a wrapping optimizer (LayerwiseOptimizer) needs
# --------------------------------------------------------------------------


def optimizer_variable_key(optimizer, variable):
    """The key under which `optimizer` indexes `variable` (`optimizer._var_key`)."""
    return optimizer._var_key(variable)


def optimizer_own_variables(optimizer):
    """The variables an optimizer created itself (`optimizer._variables`), not a wrapped one's."""
    return list(optimizer._variables)


def optimizer_step_counter(optimizer):
    """The raw step counter variable (`optimizer._iterations`), before gradient accumulation."""
    return optimizer._iterations


def optimizer_current_learning_rate(optimizer):
    """The base optimizer's learning rate now (`optimizer._get_current_learning_rate()`)."""
    return optimizer._get_current_learning_rate()


def set_optimizer_learning_rate(optimizer, value):
    """Calls the base `Optimizer.learning_rate` setter (for a subclass that overrides it)."""
    keras.optimizers.Optimizer.learning_rate.fset(optimizer, value)


# --------------------------------------------------------------------------
# Gradients (Keras 3 has no backend-agnostic gradient op)
# --------------------------------------------------------------------------


def _backend_module(name):
    """The package of Keras' backend, which Keras imported when it started (no import here:
    `keras_freeze` depends on no backend)."""
    return sys.modules[name]


def gradient(fn, x):
    """d fn(x) / dx for a function `fn` of one tensor returning a scalar tensor.

    Uses `tf.GradientTape` on TensorFlow, `torch.autograd.grad` on PyTorch
    and `jax.grad` on JAX; `fn` must run eagerly on that backend's tensors
    (Keras layers and `keras.ops` do). A `fn` that does not depend on `x`
    gets zeros.

    Returns:
        A backend tensor shaped like `x`.

    Raises:
        ValueError: On a backend without gradients (numpy, openvino).
    """
    backend = keras.backend.backend()
    x = keras.ops.convert_to_tensor(x)
    if backend == "tensorflow":
        tf = _backend_module("tensorflow")
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        grad = tape.gradient(y, x)
    elif backend == "torch":
        torch = _backend_module("torch")
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            y = fn(x)
        grad = torch.autograd.grad(y, x, allow_unused=True)[0] if y.requires_grad else None
    elif backend == "jax":
        grad = _backend_module("jax").grad(fn)(x)
    else:
        raise ValueError(
            "Gradients need the tensorflow, torch or jax backend. Received: "
            f"KERAS_BACKEND={backend!r}. Set KERAS_BACKEND to one of them."
        )
    return keras.ops.zeros_like(x) if grad is None else grad
