"""Shared test configuration: a hypothesis profile fit for CI and small helpers.

Library tests live in tests/library/, the COVID CXR example's in tests/example/. The example
(examples/covid_cxr/) is a folder of scripts, not a package: when `reproduce.py` runs, its own
folder is on sys.path and it imports its siblings plainly (`import folds`). Its tests import them
the same way; pyproject.toml's pytest `pythonpath` setting puts the folder on the path.
"""

import os

import keras
import pytest
from hypothesis import HealthCheck
from hypothesis import settings

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
)
settings.register_profile(
    "dev",
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _clear_keras_session():
    """Keep layer names and global state independent between tests."""
    keras.utils.clear_session(free_memory=False)
    yield


@pytest.fixture
def backend():
    return keras.backend.backend()
