"""The contract between the programs that run in pods (moorage pull, moorage finetune) and the operator.

A program reports through its exit code (retry or not) and a one-line JSON report written to the pod's
termination message, which the operator reads back from the Job's pod to fill status.
"""

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from pathlib import Path

TERMINATION_LOG = Path("/dev/termination-log")
"""Kubernetes' default terminationMessagePath."""

TERMINATION_LOG_ENV = "MOORAGE_TERMINATION_LOG"
"""Where a program writes its report instead (tests, runs outside a pod)."""

TERMINATION_LOG_LIMIT = 4096
"""The kubelet keeps at most this many bytes of a termination message."""


class ExitCode(IntEnum):
    OK = 0
    PERMANENT = 3
    """The input is wrong (no such repo, bad dataset, corrupt upstream file...): retrying will not help."""
    RETRYABLE = 75
    """Transient (network, hub overloaded, disk not yet mounted): the Job's backoff should try again."""


@dataclass(frozen=True)
class Report:
    """What a program says about its run, in the termination message."""

    ok: bool
    reason: str
    """CamelCase, usable as a condition reason: Pulled, RepoNotFound, DatasetInvalid, Trained, ..."""
    message: str
    details: dict[str, object] = field(default_factory=dict)
    """Program-specific numbers: files, bytes, steps, final loss, duration..."""

    def to_json(self) -> str:
        text = json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)
        if len(text.encode()) <= TERMINATION_LOG_LIMIT:
            return text
        short = Report(self.ok, self.reason, self.message[:1000], {})
        return json.dumps(asdict(short), separators=(",", ":"), sort_keys=True)

    @staticmethod
    def from_json(text: str | None) -> "Report | None":
        """Parses a termination message; None when it is missing or not ours."""
        if not text:
            return None
        try:
            raw = json.loads(text)
            return Report(
                ok=bool(raw["ok"]),
                reason=str(raw["reason"]),
                message=str(raw["message"]),
                details=dict(raw.get("details") or {}),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def write(self, path: Path | None = None) -> None:
        """To path, else $MOORAGE_TERMINATION_LOG, else the pod's termination log. Best effort: outside a pod
        the termination log is usually not writable."""
        path = path or Path(os.environ.get(TERMINATION_LOG_ENV) or TERMINATION_LOG)
        with contextlib.suppress(OSError):
            path.write_text(self.to_json())
