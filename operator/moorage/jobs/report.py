"""What our Job programs share: progress lines on stdout, and the exit code and report of a failure."""

import errno
import logging
import os
import time
from collections.abc import Callable

from moorage.api.programs import ExitCode, Report
from moorage.hub.errors import HubError, InsufficientDiskError, redact

TOKEN_ENV = "HF_TOKEN"  # noqa: S105 - the variable's name, not a token


def hub_token() -> str | None:
    """The hub token the Job got from the user's Secret (never printed)."""
    return os.environ.get(TOKEN_ENV) or None


def finish(program: str, report: Report, code: ExitCode) -> int:
    """Says how the program ended, on stdout and in the termination message; returns its exit code."""
    say(f"{program}: {'done' if report.ok else 'failed'}: {report.reason}: {report.message}")
    report.write()
    return int(code)


def say(line: str) -> None:
    print(line, flush=True)


class _SayHandler(logging.Handler):
    """Retries and stalls logged by moorage.hub go to stdout with the rest, for `kubectl logs`."""

    def emit(self, record: logging.LogRecord) -> None:
        say(self.format(record))


def log_to_stdout() -> None:
    logger = logging.getLogger("moorage")
    if not any(isinstance(h, _SayHandler) for h in logger.handlers):
        logger.addHandler(_SayHandler())
        logger.setLevel(logging.INFO)


def failure(error: Exception, token: str | None, started: float, reason: str) -> tuple[ExitCode, Report]:
    """The exit code and report for an error that ended the program; reason: for errors of no known kind."""
    details: dict[str, object] = {"seconds": since(started)}
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        # Despite the check before the start: something else filled the volume.
        error = InsufficientDiskError(f"the weights volume is full: {error.strerror}")
    if isinstance(error, HubError):
        code = ExitCode.RETRYABLE if error.retryable else ExitCode.PERMANENT
        return code, Report(False, error.reason, redact(error.message, token), details)
    if isinstance(error, OSError):
        # The volume not mounted yet, a flaky network filesystem...: worth another try.
        message = f"{error.strerror or error}: {error.filename or ''}"
        return ExitCode.RETRYABLE, Report(False, "StorageError", redact(message, token), details)
    return ExitCode.RETRYABLE, Report(
        False, reason, redact(f"{type(error).__name__}: {error}", token), details
    )


def since(started: float) -> float:
    return round(time.monotonic() - started, 3)


def run(program: str, work: Callable[[str | None, float], Report], reason: str) -> int:
    """Runs a program's work (given the hub token and its start time) and reports how it ended; reason: for
    an error of no known kind."""
    log_to_stdout()
    token = hub_token()
    started = time.monotonic()
    try:
        report, code = work(token, started), ExitCode.OK
    except Exception as e:
        code, report = failure(e, token, started, reason)
    return finish(program, report, code)
