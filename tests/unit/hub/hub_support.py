"""Helpers for the hub tests: running `moorage pull` in-process and reading what it left."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from moorage.api.programs import Report
from moorage.jobs import pull

FAST = ["--retries", "3", "--backoff", "0.01", "--stall-timeout", "2", "--progress-seconds", "60"]
"""Pull flags that keep failing tests fast."""


@dataclass
class PullResult:
    code: int
    report: Report
    output: str


@dataclass
class Puller:
    """Calls pull.main like the Job would, and returns its exit code, termination report and output."""

    dest: Path
    log: Path
    capsys: pytest.CaptureFixture[str]

    def __call__(self, source: str, *args: str, revision: str = "main") -> PullResult:
        self.log.unlink(missing_ok=True)
        code = pull.main([source, "--revision", revision, "--dest", str(self.dest), *FAST, *args])
        report = Report.from_json(self.log.read_text())
        assert report is not None
        captured = self.capsys.readouterr()
        return PullResult(code, report, captured.out + captured.err)


def marker(directory: Path) -> dict[str, object]:
    value: dict[str, object] = json.loads((directory / ".moorage-complete.json").read_text())
    return value


def files_under(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in directory.rglob("*")
        if p.is_file() and p.name != ".moorage-complete.json"
    }
