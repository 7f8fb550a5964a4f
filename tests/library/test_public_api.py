"""Package-level checks: no TensorFlow at import, public API, doctests."""

import ast
import doctest
import importlib
import os
import pathlib
import subprocess
import sys

import keras
import pytest

import keras_freeze

PACKAGE_DIR = pathlib.Path(keras_freeze.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE_DIR.glob("*.py") if p.stem != "__init__")


def _top_level_imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:  # module level only; lazy imports inside functions are fine
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


@pytest.mark.parametrize("path", sorted(PACKAGE_DIR.glob("*.py")), ids=lambda p: p.name)
def test_no_module_level_tensorflow_import(path):
    offending = [m for m in _top_level_imports(path) if m.split(".")[0] == "tensorflow"]
    assert not offending, f"{path.name} imports {offending} at module level"


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_import_works_with_tensorflow_absent(backend):
    if keras.backend.backend() != backend:  # a fresh interpreter: once, in that backend's run
        pytest.skip(f"runs with KERAS_BACKEND={backend}")
    pytest.importorskip(backend)
    # `None` in sys.modules makes `import tensorflow` fail and `find_spec` return
    # None, exactly as on a machine without TensorFlow.
    code = (
        "import sys\n"
        "sys.modules['tensorflow'] = None\n"
        "import keras_freeze, keras\n"
        "assert keras.backend.backend() == sys.argv[1], keras.backend.backend()\n"
        "assert not [m for m in sys.modules if m.startswith('tensorflow.')]\n"
        "print(sorted(keras_freeze.__all__))\n"
    )
    env = dict(os.environ, KERAS_BACKEND=backend)
    result = subprocess.run(
        [sys.executable, "-c", code, backend], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "freeze_fraction" in result.stdout


def test_version_is_single_sourced():
    from keras_freeze._version import __version__

    assert keras_freeze.__version__ == __version__
    pyproject = (PACKAGE_DIR.parent / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert 'attr = "keras_freeze._version.__version__"' in pyproject


def test_public_names_resolve():
    for name in keras_freeze.__all__:
        assert getattr(keras_freeze, name) is not None, name


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module):
    mod = importlib.import_module(f"keras_freeze.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


@pytest.mark.parametrize("path", sorted(PACKAGE_DIR.glob("*.py")), ids=lambda p: p.name)
def test_no_scikit_learn_or_scipy_anywhere(path):
    """Neither is a dependency: no import of them, even a lazy one inside a function."""
    tree = ast.parse(path.read_text(), filename=str(path))
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.append(node.module)
    offending = [m for m in imported if m.split(".")[0] in ("sklearn", "scipy")]
    assert not offending, f"{path.name} imports {offending}"


def test_import_is_cheap():
    if keras.backend.backend() != "jax":  # a fresh JAX interpreter: once, in the JAX run
        pytest.skip("runs with KERAS_BACKEND=jax")
    """`import keras_freeze` imports nothing heavy beyond what `import keras` does.

    (Keras itself imports scikit-learn and Pillow when they are installed.)
    """
    code = (
        "import sys\n"
        "import keras\n"
        "before = set(sys.modules)\n"
        "import keras_freeze\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(new & {'tensorflow', 'sklearn', 'scipy', 'PIL', 'torch'}))\n"
    )
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
