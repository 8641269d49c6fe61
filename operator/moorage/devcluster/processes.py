"""Child processes of the dev cluster: own session, tied to the launching thread, logged to files.

``PR_SET_PDEATHSIG`` makes each child die with the thread that started it, so
a test run killed hard leaves no control plane or kubelet behind; the real
node's host state is then cleaned up by the next start (see ``node.py``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1
try:
    _prctl: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _prctl = None


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: die when the launching thread dies."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (for a child to bind; see the retry in Cluster.start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class ComponentExitedError(RuntimeError):
    """A component process ended while the cluster still needed it."""


@dataclass
class Component:
    """One running child process and its log."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    argv: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None


class Processes:
    """The child processes of one cluster, stopped in reverse start order."""

    def __init__(self, logs_dir: Path, cwd: Path) -> None:
        self.logs_dir = logs_dir
        self._cwd = cwd
        self.components: list[Component] = []

    def spawn(self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> Component:
        """Start ``argv`` with stdout and stderr appended to ``logs/<name>.log``."""
        log_path = self.logs_dir / f"{name}.log"
        log_file = log_path.open("ab")
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=self._cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only calls prctl
        )
        component = Component(name, proc, log_path, log_file, tuple(argv), env)
        self.components.append(component)
        return component

    def find(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def check_alive(self, waiting_for: str) -> None:
        """Raise :class:`ComponentExitedError` with the log tail of the first component that has exited."""
        for component in self.components:
            code = component.proc.poll()
            if code is not None:
                raise ComponentExitedError(
                    f"{component.name} exited with code {code} while waiting for {waiting_for}; "
                    f"last lines of {component.log_path}:\n{tail(component.log_path)}"
                )

    def running(self) -> bool:
        return bool(self.components) and all(c.proc.poll() is None for c in self.components)

    def logs(self) -> dict[str, Path]:
        return {c.name: c.log_path for c in self.components}

    def stop(self, name: str | None = None) -> None:
        """Stop one component by name, or all of them (last started first)."""
        for component in reversed(list(self.components)):
            if name is None or component.name == name:
                terminate(component)
                self.components.remove(component)


def terminate(component: Component, grace: float = 10.0) -> None:
    """SIGTERM the component's process group, SIGKILL after ``grace`` seconds."""
    proc = component.proc
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    # Anything left in the group (the component's own children, if any).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    component.log_file.close()


def wait_until(
    ready: Callable[[], bool],
    *,
    deadline: float,
    what: str,
    alive: Callable[[str], None],
    log: Path | None = None,
    errors: tuple[type[BaseException], ...] = (OSError, ValueError),
) -> None:
    """Poll ``ready`` until true; ``alive(what)`` raises early when a component died.

    TimeoutError at ``deadline``, with the tail of ``log``.
    """
    delay = 0.05
    while True:
        alive(what)
        try:
            if ready():
                return
        except errors:
            pass
        if time.monotonic() > deadline:
            detail = f"; last lines of {log}:\n{tail(log)}" if log is not None else ""
            raise TimeoutError(f"timed out waiting for {what}{detail}")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
