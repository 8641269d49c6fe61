"""Shared by every test: the package is importable from operator/ even without an install, and no test
leaks environment variables into the next (programs under test set some for their own process)."""

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "operator"))


@pytest.fixture(autouse=True)
def _isolated_environment() -> Iterator[None]:
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
