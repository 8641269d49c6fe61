"""Shared by every test: the package is importable from operator/ even without an install, and no test
leaks environment variables into the next (programs under test set some for their own process)."""

import os
import shutil
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


@pytest.fixture(scope="session")
def helm() -> str:
    """helm from $MOORAGE_HELM, PATH or where scripts/install-helm.sh puts it."""
    candidates = [
        os.environ.get("MOORAGE_HELM"),
        shutil.which("helm"),
        str(Path.home() / ".cache" / "moorage" / "bin" / "helm"),
    ]
    found = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if found is None:
        pytest.skip(
            "helm not found ($MOORAGE_HELM, PATH, ~/.cache/moorage/bin/helm): run scripts/install-helm.sh"
        )
    return found
