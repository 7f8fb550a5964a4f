"""LayerwiseOptimizer and layerwise_decay, against plain Keras optimizers run at lr * factor.

The oracle for each variable is a fresh plain optimizer of the wrapped class at
`learning_rate * factor`, applied to a copy of that variable with the same gradients.
The base rate (2**-6) and most factors are powers of two, so `lr * factor` is exact in
float32 and the comparison is bit for bit.
"""

import json
import warnings

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_freeze import GradualUnfreezing
from keras_freeze import LayerwiseOptimizer
from keras_freeze import layerwise_decay

LR = 2.0**-6
LAYERS = ("stem", "body", "head")


def _layers():
    """Three built Dense layers: variable paths "stem/kernel", "body/bias", ..."""
    layers = []
    for i, name in enumerate(LAYERS):
        layer = keras.layers.Dense(3, name=name)
        layer.build((None, 2 + i))
        layers.append(layer)
    return layers


def _values(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def _grads(variables, steps, seed=0):
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=v.shape).astype("float32") for v in variables] for _ in range(steps)]


def _run(optimizer, variables, grads, scale=1.0):
    """Applies each step's gradients; on JAX through `stateless_apply`, as `fit` does."""
    if not optimizer.built:
        optimizer.build(variables)
    for step in grads:
        step = [keras.ops.convert_to_tensor(g * scale) for g in step]
        if keras.backend.backend() != "jax":
            optimizer.apply(step, variables)
            continue
        new_variables, new_state = optimizer.stateless_apply(
            [v.value for v in optimizer.variables], step, [v.value for v in variables]
        )
        for variable, value in zip(variables, new_variables, strict=True):
            variable.assign(value)
        for variable, value in zip(optimizer.variables, new_state, strict=True):
            variable.assign(value)
    return _values(variables)


def _oracle(make, factors, start, grads):
    """Each layer's variables trained by its own plain optimizer at LR * factor."""
    out = []
    for i, factor in enumerate(factors):
        variables = [keras.Variable(v) for v in start[2 * i : 2 * i + 2]]
        if factor == 0:
            out.extend(_values(variables))
            continue
        step_grads = [step[2 * i : 2 * i + 2] for step in grads]
        out.extend(_run(make(LR * factor), variables, step_grads))
    return out


OPTIMIZERS = {
    "sgd-momentum": lambda lr: keras.optimizers.SGD(lr, momentum=0.9, nesterov=True),
    "adam": lambda lr: keras.optimizers.Adam(lr),
    "adamw": lambda lr: keras.optimizers.AdamW(lr, weight_decay=0.25),
    "rmsprop-clipnorm": lambda lr: keras.optimizers.RMSprop(lr, clipnorm=0.5),
}
FACTOR = st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0])


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
@settings(max_examples=5)
@given(factors=st.tuples(FACTOR, FACTOR, FACTOR), default=FACTOR)
def test_each_variable_steps_as_the_plain_optimizer_at_lr_times_factor(kind, factors, default):
    make = OPTIMIZERS[kind]
    layers = _layers()
    variables = [v for layer in layers for v in layer.trainable_variables]
    start = _values(variables)
    grads = _grads(variables, 2)
    # The last layer gets `default` (no pattern); patterns use globs.
    multipliers = {"st*": factors[0], "b?dy": factors[1]}
    optimizer = LayerwiseOptimizer(make(LR), multipliers, default=default)
    got = _run(optimizer, variables, grads)
    expected = _oracle(make, (factors[0], factors[1], default), start, grads)
    for g, e, s, f in zip(got, expected, start, np.repeat([*factors[:2], default], 2), strict=True):
        np.testing.assert_array_equal(g, e)
        if f == 0:
            np.testing.assert_array_equal(g, s)  # bit-identical
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 2


def test_first_matching_pattern_wins_and_factors_are_reported():
    layers = _layers()
    optimizer = LayerwiseOptimizer(
        keras.optimizers.SGD(LR), [("head", 0.5), ("h*", 2.0), ("*", 0.25)]
    )
    optimizer.build([v for layer in layers for v in layer.trainable_variables])
    assert optimizer.factors() == {
        "stem/kernel": 0.25,
        "stem/bias": 0.25,
        "body/kernel": 0.25,
        "body/bias": 0.25,
        "head/kernel": 0.5,
        "head/bias": 0.5,
    }


def test_nested_model_variables_match_inner_and_outer_names():
    inner = keras.Sequential([keras.layers.Dense(2, name="d1")], name="inner")
    model = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(1, name="head")])
    optimizer = LayerwiseOptimizer(keras.optimizers.SGD(LR), {"inner": 0.5, "head": 0.0})
    optimizer.build(model.trainable_variables)
    factors = {path.split("/")[-2]: f for path, f in optimizer.factors().items()}
    assert factors == {"d1": 0.5, "head": 0.0}


def test_learning_rate_schedule_is_scaled():
    def schedule(lr):
        return keras.optimizers.schedules.ExponentialDecay(lr, decay_steps=1, decay_rate=0.5)

    layers = _layers()
    variables = [v for layer in layers for v in layer.trainable_variables]
    start, grads = _values(variables), _grads(variables, 2, seed=1)
    optimizer = LayerwiseOptimizer(keras.optimizers.Adam(schedule(LR)), {"stem": 0.5, "body": 0})
    got = _run(optimizer, variables, grads)
    expected = _oracle(lambda lr: keras.optimizers.Adam(schedule(lr)), (0.5, 0, 1), start, grads)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7)
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == LR * 0.5**2


@pytest.mark.parametrize("outside", [True, False], ids=["lso-outside", "lso-inside"])
def test_inside_or_around_loss_scale_optimizer(outside):
    layers = _layers()
    variables = [v for layer in layers for v in layer.trainable_variables]
    start, grads = _values(variables), _grads(variables, 3, seed=2)
    multipliers = {"stem": 0.25, "head": 0.0}
    if outside:
        optimizer = keras.optimizers.LossScaleOptimizer(
            LayerwiseOptimizer(keras.optimizers.Adam(LR), multipliers), initial_scale=2.0**10
        )
    else:
        optimizer = LayerwiseOptimizer(
            keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(LR), initial_scale=2.0**10),
            multipliers,
        )
    # Gradients of the scaled loss: the optimizer divides them by 2**10 (exact).
    got = _run(optimizer, variables, grads, scale=2.0**10)
    expected = _oracle(keras.optimizers.Adam, (0.25, 1.0, 0.0), start, grads)
    # XLA compiles the cond branches of the loss scaling: 1 ulp.
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-9)
    # A non-finite gradient skips the step for every group.
    before = _values(variables)
    _run(optimizer, variables, [[g * np.inf for g in grads[0]]])
    for g, e in zip(_values(variables), before, strict=True):
        np.testing.assert_array_equal(g, e)
    loss = optimizer.scale_loss(keras.ops.convert_to_tensor(1.0))
    assert float(keras.ops.convert_to_numpy(loss)) == 2.0**9  # halved once


def _mlp():
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(5, name="body"), keras.layers.Dense(3, name="head")]
    )


def _fit_data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, 3, 32)


def _fit(optimizer, weights, prepare=None, epochs=2):
    model = _mlp()
    model.set_weights(weights)
    if prepare is not None:
        prepare(model)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    x, y = _fit_data()
    model.fit(x, y, epochs=epochs, batch_size=8, shuffle=False, verbose=0)
    return model


@pytest.mark.parametrize("loss_scale", [False, True], ids=["plain", "loss-scale"])
def test_fit_with_one_factor_equals_plain_optimizer_at_scaled_rate(loss_scale):
    """model.fit (JAX: the stateless_apply path) at factor 0.5 == Adam(LR * 0.5)."""
    keras.utils.set_random_seed(3)
    weights = _mlp().get_weights()

    def wrap(optimizer):
        return keras.optimizers.LossScaleOptimizer(optimizer) if loss_scale else optimizer

    got = _fit(wrap(LayerwiseOptimizer(keras.optimizers.Adam(LR), {"*": 0.5})), weights)
    expected = _fit(wrap(keras.optimizers.Adam(LR * 0.5)), weights)
    for g, e in zip(got.get_weights(), expected.get_weights(), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7)


def test_fit_with_factor_zero_equals_a_frozen_layer():
    keras.utils.set_random_seed(4)
    weights = _mlp().get_weights()
    got = _fit(LayerwiseOptimizer(keras.optimizers.Adam(LR), {"body": 0.0}), weights)

    def freeze_body(model):
        model.get_layer("body").trainable = False

    expected = _fit(keras.optimizers.Adam(LR), weights, prepare=freeze_body)
    for g, e in zip(got.get_weights(), expected.get_weights(), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got.get_layer("body").get_weights()[0], weights[0])


def test_save_load_and_continue_training_identically(tmp_path):
    keras.utils.set_random_seed(5)
    optimizer = LayerwiseOptimizer(keras.optimizers.Adam(LR), {"body": 0.25}, name="lw")
    model = _fit(optimizer, _mlp().get_weights(), epochs=1)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects
    assert isinstance(loaded.optimizer, LayerwiseOptimizer)
    assert loaded.optimizer.get_config() == optimizer.get_config()
    for a, b in zip(_values(loaded.optimizer.variables), _values(optimizer.variables), strict=True):
        np.testing.assert_array_equal(a, b)
    x, y = _fit_data()
    for m in (model, loaded):
        m.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_serialisation_round_trip():
    optimizer = LayerwiseOptimizer(
        keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1, momentum=0.5)),
        {"block_1*": 0.1, "head": 2.0},
        default=0.5,
    )
    payload = json.loads(json.dumps(keras.saving.serialize_keras_object(optimizer)))
    restored = keras.saving.deserialize_keras_object(payload)
    assert isinstance(restored, LayerwiseOptimizer)
    assert restored.get_config() == optimizer.get_config()
    assert restored.multipliers == (("block_1*", 0.1), ("head", 2.0))
    assert isinstance(restored.optimizer, keras.optimizers.LossScaleOptimizer)


def test_unmatched_pattern_warns_with_close_names():
    optimizer = LayerwiseOptimizer(keras.optimizers.SGD(LR), {"hed": 0.5, "stem": 1.0})
    with pytest.warns(UserWarning, match=r"'hed' matches no layer.*\['head'\]") as record:
        optimizer.build([v for layer in _layers() for v in layer.trainable_variables])
    assert len(record) == 1


def test_learning_rate_setter_moves_every_group():
    layers = _layers()
    variables = [v for layer in layers for v in layer.trainable_variables]
    start, grads = _values(variables), _grads(variables, 2, seed=6)
    optimizer = LayerwiseOptimizer(keras.optimizers.SGD(1.0), {"stem": 0.5, "body": 0.25})
    optimizer.build(variables)
    optimizer.learning_rate = LR  # as ReduceLROnPlateau does
    got = _run(optimizer, variables, grads)
    expected = _oracle(keras.optimizers.SGD, (0.5, 0.25, 1.0), start, grads)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize(
    "args, match",
    [
        (("adam", {"a": 1.0}), "keras.optimizers.Optimizer"),
        ((None, {"a": -1.0}), r"multipliers\['a'\]"),
        ((None, {"a": float("nan")}), r"multipliers\['a'\]"),
        ((None, [("a", 1.0), ("a", 2.0)]), "distinct patterns"),
        ((None, [(1, 1.0)]), "string pattern"),
        ((None, "a"), "dict"),
    ],
)
def test_validation(args, match):
    optimizer = keras.optimizers.SGD(LR) if args[0] is None else args[0]
    with pytest.raises(ValueError, match=match):
        LayerwiseOptimizer(optimizer, args[1])


def test_global_clipnorm_and_double_wrapping_are_refused():
    with pytest.raises(ValueError, match="global_clipnorm"):
        LayerwiseOptimizer(keras.optimizers.Adam(global_clipnorm=1.0), {"a": 1.0})
    inner = LayerwiseOptimizer(keras.optimizers.Adam(), {"a": 1.0})
    with pytest.raises(ValueError, match="merge"):
        LayerwiseOptimizer(inner, {"b": 1.0})
    with pytest.raises(ValueError, match="default"):
        LayerwiseOptimizer(keras.optimizers.Adam(), {"a": 1.0}, default=-1)


def test_gradual_unfreezing_rebuilds_the_wrapper_and_keeps_its_state():
    keras.utils.set_random_seed(7)
    model = _mlp()
    optimizer = LayerwiseOptimizer(keras.optimizers.Adam(LR), {"body": 0.5})
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    x, y = _fit_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "body" is frozen in epoch 0: no match yet
        model.fit(
            x, y, epochs=2, batch_size=8, verbose=0, callbacks=[GradualUnfreezing({0: 0.5, 1: 0.0})]
        )
    assert isinstance(model.optimizer, LayerwiseOptimizer)
    assert model.optimizer.factors() == {
        "sequential/body/kernel": 0.5,
        "sequential/body/bias": 0.5,
        "sequential/head/kernel": 1.0,
        "sequential/head/bias": 1.0,
    }
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 8


# --------------------------------------------------------------------------
# layerwise_decay
# --------------------------------------------------------------------------


def _named_model():
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, name="stem"),
            keras.layers.Dense(4, name="block_1_a"),
            keras.layers.ReLU(name="block_1_relu"),
            keras.layers.Dense(4, name="block_1_b"),
            keras.layers.Dense(4, name="block_2_a"),
            keras.layers.Dense(2, name="head"),
        ]
    )


NAMED_MODEL = _named_model()


@settings(max_examples=10)
@given(decay=st.floats(0.05, 1.0))
def test_decay_by_depth_is_geometric_from_the_head(decay):
    multipliers = layerwise_decay(NAMED_MODEL, decay)
    assert list(multipliers) == ["head", "block_2_a", "block_1_b", "block_1_a", "stem"]
    assert list(multipliers.values()) == [decay**k for k in range(5)]


def test_decay_by_block_shares_a_factor_per_block():
    multipliers = layerwise_decay(_named_model(), 0.5, block=r"(block_\d+)_")
    assert multipliers == {
        "head": 1.0,
        "block_2_a": 0.5,
        "block_1_a": 0.25,
        "block_1_b": 0.25,
        "stem": 0.125,
    }


def test_decay_names_are_glob_escaped_and_used_by_the_optimizer():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="a[1]")])
    multipliers = layerwise_decay(model, 0.5)
    assert multipliers == {"a[[]1]": 1.0}
    optimizer = LayerwiseOptimizer(keras.optimizers.SGD(LR), multipliers, default=0.0)
    optimizer.build(model.trainable_variables)
    assert set(optimizer.factors().values()) == {1.0}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"decay": 0.0}, "decay"),
        ({"decay": 1.5}, "decay"),
        ({"decay": "0.5"}, "decay"),
        ({"decay": 0.5, "block": "("}, "regular expression"),
    ],
)
def test_decay_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        layerwise_decay(_named_model(), **kwargs)


# --------------------------------------------------------------------------
# The Keras optimizer internals the wrapper and GradualUnfreezing rely on
# --------------------------------------------------------------------------


def test_keras_optimizer_internals_behave_as_assumed(tmp_path):
    from keras_freeze import _keras_compat as compat

    layers = _layers()
    variables = [v for layer in layers for v in layer.trainable_variables]
    optimizer = keras.optimizers.Adam(LR, gradient_accumulation_steps=2)
    optimizer.build(variables)
    own = compat.optimizer_own_variables(optimizer)
    assert [v.path for v in own] == [v.path for v in optimizer.variables], (
        f"Keras {keras.__version__}: `optimizer._variables` is no longer the optimizer's variables"
    )
    keys = {compat.optimizer_variable_key(optimizer, v) for v in variables}
    assert len(keys) == len(variables), "`optimizer._var_key` no longer tells variables apart"
    optimizer.apply([keras.ops.zeros(v.shape) for v in variables], variables)
    assert int(keras.ops.convert_to_numpy(compat.optimizer_step_counter(optimizer))) == 1
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 0  # 1 // 2 accumulated
    compat.set_optimizer_learning_rate(optimizer, 0.5)
    assert (
        float(keras.ops.convert_to_numpy(compat.optimizer_current_learning_rate(optimizer))) == 0.5
    )
    # `model.load_weights` calls the optimizer's `load_own_variables`: an instance
    # attribute of that name replaces it for that optimizer only.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.5), "mse")
    model.fit(np.ones((2, 2)), np.ones((2, 3)), verbose=0)
    model.save_weights(tmp_path / "w.weights.h5")
    sink = []
    compat.intercept_optimizer_load(model.optimizer, sink)
    model.load_weights(tmp_path / "w.weights.h5")
    assert [a.shape for a in sink[0]] == [tuple(v.shape) for v in model.optimizer.variables], (
        "`load_own_variables` is no longer what `load_weights` calls on the optimizer"
    )
    compat.release_optimizer_load(model.optimizer)
    model.load_weights(tmp_path / "w.weights.h5")
    assert len(sink) == 1
