"""Shared fixtures for the environment tests.

TextWorld games take seconds each to generate, so the TextWorld cache persists between
runs in ``<repo>/.nightowl/cache/textworld`` (keyed by challenge settings, seed and
TextWorld version; override with NIGHTOWL_TEST_TW_CACHE).
"""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tw_cache_dir() -> Path:
    default = REPO / ".nightowl" / "cache" / "textworld"
    return Path(os.environ.get("NIGHTOWL_TEST_TW_CACHE", default))
