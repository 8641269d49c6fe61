"""`moorage demo` stops, saying why, when its operator dies."""

import subprocess
from types import SimpleNamespace

import pytest

from moorage.demo import OperatorDiedError, _check_alive


def test_a_dead_operator_ends_the_demo_with_its_log() -> None:
    dead = subprocess.Popen(["sh", "-c", "exit 3"])
    dead.wait()
    operator = SimpleNamespace(process=dead, log=lambda: "Traceback: boom")
    with pytest.raises(OperatorDiedError, match=r"exited with status 3; its log:\nTraceback: boom"):
        _check_alive(operator)  # type: ignore[arg-type]


def test_a_live_operator_lets_it_go_on() -> None:
    alive = subprocess.Popen(["sleep", "5"])
    try:
        _check_alive(SimpleNamespace(process=alive, log=str))  # type: ignore[arg-type]
    finally:
        alive.kill()
        alive.wait()
