"""Shared test configuration: a hypothesis profile fit for CI and small helpers.

The COVID CXR example (examples/covid_cxr/) is a folder of scripts, not a package: when
`reproduce.py` runs, its own folder is on sys.path and it imports its siblings plainly
(`import data`). The tests import them the same way, so the folder is put on sys.path once,
here.
"""

import os
import sys
from pathlib import Path

import keras
import pytest
from hypothesis import HealthCheck
from hypothesis import settings

EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "examples" / "covid_cxr"
if str(EXAMPLE_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLE_DIR))

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
