"""Fixtures for the hub tests: a fake hub per test serving the demo repositories, and a pull runner."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_support import Puller

from moorage.api.programs import TERMINATION_LOG_ENV
from moorage.devcluster.fakehub import FakeHub, add_demo_repos


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub() as fake:
        add_demo_repos(fake)
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield fake


@pytest.fixture
def run_pull(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Puller:
    log = tmp_path / "termination-log"
    monkeypatch.setenv(TERMINATION_LOG_ENV, str(log))
    return Puller(tmp_path / "weights", log, capsys)
