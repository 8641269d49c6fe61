"""Shared by every test: the package is importable from operator/ even without an install."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "operator"))
