"""The docstring examples of the COVID CXR example's modules run (examples/covid_cxr/*.py).

The modules are imported plainly, as `reproduce.py` imports its siblings (pyproject.toml's
pytest `pythonpath` puts examples/covid_cxr on the path).
"""

import doctest
import importlib

import pytest

MODULES = [
    "console",
    "environment",
    "folds",
    "kaggle",
    "protocol",
    "records",
    "report",
    "paired",
    "runner",
    "saved",
    "settings",
    "synthetic",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.attempted > 0, f"{name} has no docstring example"
    assert result.failed == 0
