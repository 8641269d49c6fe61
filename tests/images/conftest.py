"""Tests of the images that images/build.sh builds (tests/images/test_images.py)."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "images: runs the images built by images/build.sh (MOORAGE_IMAGES)")
