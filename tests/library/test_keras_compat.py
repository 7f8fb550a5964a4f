"""The Keras privates keras-freeze relies on still exist and behave as assumed.

Each test names the private in its failure message, so that a Keras release
that changes one fails here first, loudly, instead of deep inside
GradualUnfreezing, freeze_fraction or the losses.
"""

import ast
import pathlib

import keras
import numpy as np
import pytest

import keras_freeze
from keras_freeze import _keras_compat as compat

PACKAGE_DIR = pathlib.Path(keras_freeze.__file__).parent


def _model():
    return keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, name="a"), keras.layers.Dense(2, name="b")]
    )


def test_optimizer_trainable_variables_lists_the_built_variables():
    model = _model()
    optimizer = keras.optimizers.Adam()
    variables = list(model.trainable_variables)
    optimizer.build(variables[:2])
    assert hasattr(optimizer, "_trainable_variables"), (
        f"Keras {keras.__version__} removed the private `optimizer._trainable_variables`; "
        "keras_freeze._keras_compat.optimizer_built_variables must be rewritten."
    )
    built = compat.optimizer_built_variables(optimizer)
    assert len(built) == 2 and all(a is b for a, b in zip(built, variables[:2], strict=True)), (
        "`optimizer._trainable_variables` no longer holds the variables passed to "
        f"`optimizer.build` (Keras {keras.__version__})."
    )
    assert compat.optimizer_built_variables(keras.optimizers.SGD()) == []


def test_compile_config_holds_the_optimizer_that_save_writes():
    model = _model()
    optimizer = keras.optimizers.Adam(learning_rate=0.5)
    model.compile(optimizer, "mse")
    config = getattr(getattr(model, "_compile_config", None), "config", None)
    assert isinstance(config, dict) and config.get("optimizer") is optimizer, (
        f"Keras {keras.__version__} changed the private `model._compile_config.config` "
        "(expected a dict holding the compile() optimizer object); "
        "keras_freeze._keras_compat.replace_compiled_optimizer must be rewritten."
    )
    fresh = keras.optimizers.Adam(learning_rate=0.25)
    assert compat.replace_compiled_optimizer(model, optimizer, fresh)
    saved = model.get_compile_config()["optimizer"]
    assert saved["config"]["learning_rate"] == pytest.approx(0.25), (
        "`model.get_compile_config()` no longer serialises `model._compile_config.config`."
    )
    assert not compat.replace_compiled_optimizer(model, optimizer, fresh)  # not held any more
    assert not compat.replace_compiled_optimizer(_model(), optimizer, fresh)  # never compiled


def test_softmax_attaches_its_logits_on_tensorflow():
    x = np.array([[1.0, 2.0, 3.0]], dtype="float32")
    out = keras.activations.softmax(keras.ops.convert_to_tensor(x))
    logits = compat.softmax_logits(out)
    if keras.backend.backend() != "tensorflow":
        pytest.skip("only the TensorFlow cross-entropies read `_keras_logits`")
    assert logits is not None, (
        f"Keras {keras.__version__} no longer attaches the private `_keras_logits` to "
        "softmax outputs on TensorFlow; keras_freeze._losses can drop "
        "_maybe_keras_logits (check AttentionWeightedCCE == CategoricalCrossentropy)."
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(logits), x)


def test_trainable_setter_resets_sublayers_even_when_unchanged():
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="inner_dense")])
    outer = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(1)])
    inner.layers[0].trainable = False
    assert outer.trainable  # unchanged value: TF's AutoTrackable would skip a plain assignment
    compat.set_trainable(outer, True)
    assert inner.layers[0].trainable, (
        "`keras.layers.Layer.trainable.fset(model, True)` no longer resets sublayers "
        f"(Keras {keras.__version__}); keras_freeze._keras_compat.set_trainable must change."
    )
    compat.set_trainable(outer, False)
    assert not any(layer.trainable for layer in keras_freeze.flatten_layers(outer))


def test_flatten_layers_lists_every_sublayer():
    class Holder(keras.layers.Layer):  # a custom layer (not a model) holding a sublayer
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2, name="held")

        def call(self, x):
            return self.dense(x)

    holder = Holder()
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="inner_dense")])
    outer = keras.Sequential([keras.Input((3,)), inner, holder])
    names = [layer.name for layer in compat.sublayers(outer)]
    assert names[0] == outer.name and {"inner_dense", "held", inner.name} <= set(names), (
        f"Keras {keras.__version__} changed the private `layer._flatten_layers()`; "
        f"got {names}. keras_freeze._keras_compat.sublayers must be rewritten."
    )


def test_untracked_attribute_is_invisible_to_keras():
    model = _model()
    model(np.zeros((1, 3)))
    n_layers, n_weights = len(model.layers), len(model.weights)
    flags = [(layer, layer.trainable) for layer in model.layers]
    compat.set_untracked_attribute(model, "_keras_freeze_test_attr", flags)
    assert model._keras_freeze_test_attr is flags  # stored as is, not wrapped by a tracker
    assert (len(model.layers), len(model.weights)) == (n_layers, n_weights), (
        "object.__setattr__ on a Keras layer is now tracked (Keras "
        f"{keras.__version__}); keras_freeze._keras_compat.set_untracked_attribute must change."
    )
    compat.delete_untracked_attribute(model, "_keras_freeze_test_attr")
    assert not hasattr(model, "_keras_freeze_test_attr")


def test_distribute_strategy_only_on_tensorflow():
    strategy = compat.distribute_strategy(_model())
    if keras.backend.backend() == "tensorflow":
        assert strategy is not None, (
            f"Keras {keras.__version__}: TensorFlow models no longer expose "
            "`model.distribute_strategy`; GradualUnfreezing builds optimizers under it."
        )
    else:
        assert strategy is None


# Names of Keras privates; only keras_freeze/_keras_compat.py may touch them.
_KERAS_PRIVATES = {"_trainable_variables", "_compile_config", "_keras_logits", "_flatten_layers"}


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE_DIR.glob("*.py") if p.name != "_keras_compat.py"),
    ids=lambda p: p.name,
)
def test_privates_are_only_used_in_the_compat_module(path):
    tree = ast.parse(path.read_text())
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in _KERAS_PRIVATES:
            used.add(node.attr)
        elif isinstance(node, ast.Constant) and node.value in _KERAS_PRIVATES:
            used.add(node.value)
        elif isinstance(node, ast.Attribute) and node.attr == "fset":
            used.add("Layer.trainable.fset")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            used.update(n for n in names if n and n.startswith("keras.src"))
    assert not used, f"{path.name} uses Keras privates {sorted(used)}: go through _keras_compat"


def _names_defined_in_the_package():
    """Every identifier keras_freeze itself defines (functions, classes, attributes, names)."""
    own = set()
    for path in PACKAGE_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                own.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "__setattr__"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
            ):
                own.add(node.args[1].value)  # object.__setattr__(self, "_x", ...)
    return own


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE_DIR.glob("*.py") if p.name != "_keras_compat.py"),
    ids=lambda p: p.name,
)
def test_no_foreign_private_attribute_outside_the_compat_module(path):
    """Any `obj._name` that keras_freeze does not define itself is someone else's private."""
    own = _names_defined_in_the_package()
    foreign = sorted(
        f"{node.attr} (line {node.lineno})"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and node.attr not in own
    )
    assert not foreign, f"{path.name} reads privates it does not define: {foreign}"


def test_run_through_graph_replaces_each_layer_call():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="a")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="b")(hidden))
    assert compat.is_functional(model)
    assert not compat.is_functional(_model()) and not compat.is_functional(keras.layers.Dense(2))
    assert hasattr(model, "_run_through_graph"), (
        f"Keras {keras.__version__} removed the private `Functional._run_through_graph`; "
        "keras_freeze._keras_compat.run_functional_graph must be rewritten."
    )
    seen = []

    def call(layer, *args, **kwargs):
        seen.append(layer.name)
        return layer(*args, **kwargs)

    x = np.random.default_rng(0).normal(size=(2, 3)).astype("float32")
    out = compat.run_functional_graph(model, keras.ops.convert_to_tensor(x), call)
    assert seen == ["a", "b"], f"`_run_through_graph` called {seen}, expected each layer once"
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(out), keras.ops.convert_to_numpy(model(x)), rtol=1e-6
    )
