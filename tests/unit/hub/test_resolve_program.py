"""`moorage resolve`, the resolve Job's program, against the fake hub: what it reports is what the operator
plans a model with a token from (it never sees the token itself)."""

from pathlib import Path

import pytest

from moorage.api.programs import TERMINATION_LOG_ENV, ExitCode, Report
from moorage.api.resolved import ResolvedSource
from moorage.devcluster.fakehub import DEMO_TOKEN, TINY_DATASET, TINY_GATED, TINY_REMOTE_CODE, FakeHub
from moorage.jobs import resolve


def run(
    args: list[str],
    token: str | None,
    log: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, Report, str]:
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv(TERMINATION_LOG_ENV, str(log))
    code = resolve.main(args)
    report = Report.from_json(log.read_text())
    assert report is not None
    captured = capsys.readouterr()
    return code, report, captured.out + captured.err


def test_a_gated_model_and_a_dataset_resolve_with_the_token(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [f"hf://{TINY_GATED}", "--dataset", f"hf://datasets/{TINY_DATASET}"]
    code, report, output = run(args, DEMO_TOKEN, tmp_path / "log", monkeypatch, capsys)
    assert code == ExitCode.OK and report.ok and report.reason == "Resolved", report
    source = report.details["source"]
    assert isinstance(source, dict)
    resolved = ResolvedSource.from_summary(f"hf://{TINY_GATED}", TINY_GATED, "model", "main", source)
    assert len(resolved.sha) == 40 and resolved.file_count > 0 and resolved.total_bytes > 0
    assert resolved.parameters and resolved.parameters > 0
    assert isinstance(report.details["dataset"], dict)
    assert DEMO_TOKEN not in output and DEMO_TOKEN not in report.to_json()


def test_a_token_without_access_fails_for_good(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report, output = run([f"hf://{TINY_GATED}"], "hf_wrong", tmp_path / "log", monkeypatch, capsys)
    assert code == ExitCode.PERMANENT and report.reason == "AccessDenied", report
    assert "hf_wrong" not in output and "hf_wrong" not in report.message


def test_remote_code_is_refused_unless_trusted(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = f"hf://{TINY_REMOTE_CODE}"
    code, report, _ = run([source], DEMO_TOKEN, tmp_path / "log", monkeypatch, capsys)
    assert code == ExitCode.PERMANENT and report.reason == "RemoteCodeNotTrusted", report
    code, report, _ = run([source, "--trust-remote-code"], DEMO_TOKEN, tmp_path / "log", monkeypatch, capsys)
    assert code == ExitCode.OK and report.ok, report
