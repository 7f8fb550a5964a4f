"""The package installs what it imports: every run-time import of keras_freeze is a dependency.

`.ci/package_check.sh` proves the same on a real minimal install (the built wheel with the jax
extra only, running the README quickstart and the docs blocks); these tests catch a new import
early, on every backend, without building anything.
"""

import ast
import pathlib
import re
import sys

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE = ROOT / "keras_freeze"
# Distribution name -> the module it provides, where the two differ.
IMPORT_NAMES = {"pillow": "PIL", "scikit-learn": "sklearn"}


def _dist_name(requirement):
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()


def _imported_modules(path):
    """Top-level names of every module a file imports, wherever the import statement is."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


# Extras of documented features: their modules may be imported (lazily) by a file that says
# which `pip install "keras-freeze[<extra>]"` brings them, for the ImportError it raises.
FEATURE_EXTRAS = ("dicom",)


def test_every_runtime_import_is_a_dependency():
    declared = {_dist_name(r) for r in PYPROJECT["project"]["dependencies"]}
    provided = {IMPORT_NAMES.get(name, name) for name in declared}
    extras = PYPROJECT["project"]["optional-dependencies"]
    for path in sorted(PACKAGE.glob("*.py")):
        third_party = _imported_modules(path) - set(sys.stdlib_module_names) - {"keras_freeze"}
        missing = third_party - provided
        for extra in FEATURE_EXTRAS:
            in_extra = {IMPORT_NAMES.get(n, n) for n in map(_dist_name, extras[extra])} & missing
            if in_extra:
                assert f"keras-freeze[{extra}]" in path.read_text(), (
                    f"{path.name} imports {sorted(in_extra)} without naming "
                    f'`pip install "keras-freeze[{extra}]"`'
                )
            missing -= in_extra
        assert not missing, f"{path.name} imports {sorted(missing)}, not in dependencies"


def test_every_dependency_is_used():
    used = set()
    for path in PACKAGE.glob("*.py"):
        used |= _imported_modules(path)
    for requirement in PYPROJECT["project"]["dependencies"]:
        name = _dist_name(requirement)
        assert IMPORT_NAMES.get(name, name) in used, f"dependency {name} is never imported"


def test_no_backend_or_test_tool_is_a_dependency():
    declared = {_dist_name(r) for r in PYPROJECT["project"]["dependencies"]}
    for heavy in ("tensorflow", "tensorflow-cpu", "torch", "jax", "scikit-learn", "scipy"):
        assert heavy not in declared


def test_license_file_matches_the_declared_license():
    assert PYPROJECT["project"]["license"] == "MIT"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "WITHOUT WARRANTY OF ANY KIND" in text


def test_typed_marker_is_shipped():
    assert (PACKAGE / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["keras_freeze"]


def test_markers_are_declared_with_their_meaning():
    markers = PYPROJECT["tool"]["pytest"]["ini_options"]["markers"]
    slow = [m for m in markers if m.startswith("slow:")]
    assert slow and "CI runs these on the TensorFlow backend only" in slow[0]
    readme = (ROOT / "README.md").read_text()
    test_command = readme.split("<!-- test-command -->", 1)[1].split("<!-- /test-command -->")[0]
    full_run = "KERAS_BACKEND=tensorflow .venv/bin/python -m pytest -q -p no:cacheprovider -n 2"
    assert re.search(re.escape(full_run) + r"( --dist \w+)?;", test_command), test_command
    assert '-m "not slow and not once"' in test_command
    once = [m for m in markers if m.startswith("once:")]
    assert once and "CI runs these on the TensorFlow backend only" in once[0]


EXAMPLE = ROOT / "examples" / "covid_cxr"


def _long_functions(tree):
    return [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > 100
    ]


@pytest.mark.parametrize(
    "path",
    sorted(PACKAGE.glob("*.py")) + sorted(EXAMPLE.glob("*.py")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_no_function_over_100_lines(path):
    long = _long_functions(ast.parse(path.read_text(), str(path)))
    assert not long, f"{path.name}: functions over 100 lines {long}"


@pytest.mark.parametrize("path", sorted(EXAMPLE.glob("*.py")), ids=lambda p: p.name)
def test_example_module_is_a_thin_user_of_the_library(path):
    """No sys.path edit and no metric code of its own."""
    tree = ast.parse(path.read_text(), str(path))
    sys_path = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    ]
    assert not sys_path, f"{path.name} edits or reads sys.path at lines {sys_path}"
    metric_imports = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module
        and (node.module.startswith("sklearn.metrics") or node.module == "sklearn")
    ]
    assert not metric_imports, f"{path.name} imports scikit-learn metrics (lines {metric_imports})"
