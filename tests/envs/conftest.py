"""Shared fixtures for the environment tests."""

from pathlib import Path

import pytest

from tests.conformance.env_suite import tw_test_cache_dir


@pytest.fixture(scope="session")
def tw_cache_dir() -> Path:
    """Generated TextWorld games persist between runs (see `tw_test_cache_dir`)."""
    return tw_test_cache_dir()
