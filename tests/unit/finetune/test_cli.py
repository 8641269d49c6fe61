"""What `moorage finetune` says before it needs the training stack: arguments, spec, finished output."""

import json
import sys
from pathlib import Path

import pytest

from moorage.api.layout import COMPLETE_MARKER
from moorage.api.programs import ExitCode, Report
from moorage.jobs.finetune import main
from moorage.jobs.finetune.errors import FineTuneError
from moorage.jobs.finetune.spec import load_spec


@pytest.fixture
def termination_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "termination-log"
    monkeypatch.setenv("MOORAGE_TERMINATION_LOG", str(path))
    return path


def _report(path: Path) -> Report:
    report = Report.from_json(path.read_text())
    assert report is not None
    return report


def _argv(tmp_path: Path, spec: Path) -> list[str]:
    return ["--base", str(tmp_path / "base"), "--spec", str(spec), "--output", str(tmp_path / "out")]


def test_the_spec_is_the_crd_block_in_yaml_or_json(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"dataset": {"uri": "pvc://data/x.jsonl"}, "training": {"maxSteps": 5}}))
    parsed = load_spec(spec)
    assert parsed.training.max_steps == 5
    assert parsed.dataset.format == "chat"


def test_a_bad_field_is_named_in_one_line(tmp_path: Path, termination_log: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("dataset: {uri: data.jsonl}\ntraining: {batchSize: 0}\n")
    assert main(_argv(tmp_path, spec)) == ExitCode.PERMANENT
    report = _report(termination_log)
    assert report.reason == "SpecInvalid"
    assert report.message.startswith(
        "fineTune.training.batchSize: Input should be greater than or equal to 1"
    )
    assert "\n" not in report.message


def test_an_unknown_field_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("dataset: {uri: data.jsonl}\ntraining: {epoch: 3}\n")
    with pytest.raises(FineTuneError, match=r"^fineTune\.training\.epoch: Extra inputs are not permitted"):
        load_spec(spec)


def test_an_unreadable_spec_is_reported(tmp_path: Path, termination_log: Path) -> None:
    assert main(_argv(tmp_path, tmp_path / "missing.yaml")) == ExitCode.PERMANENT
    assert _report(termination_log).reason == "SpecInvalid"


def test_bad_arguments_are_a_permanent_failure(termination_log: Path) -> None:
    assert main(["--base", "/x"]) == ExitCode.PERMANENT
    report = _report(termination_log)
    assert report.reason == "UsageInvalid"
    assert "--spec" in report.message


def test_a_finished_output_is_reported_without_training(tmp_path: Path, termination_log: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text(
        json.dumps({"steps": 7, "finalLoss": 0.5, "seconds": 2.0, "tokensPerSecond": 10.0})
    )
    (out / COMPLETE_MARKER).write_text("{}")
    assert main(_argv(tmp_path, tmp_path / "never-read.yaml")) == ExitCode.OK
    report = _report(termination_log)
    assert (report.ok, report.reason) == (True, "Trained")
    assert report.details == {
        "steps": 7,
        "finalLoss": 0.5,
        "seconds": 2.0,
        "tokensPerSecond": 10.0,
        "adapter": str(out),
    }


def test_an_image_without_the_training_stack_is_a_permanent_failure(
    tmp_path: Path, termination_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # what `import torch` sees where it is not installed
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    spec = tmp_path / "spec.yaml"
    spec.write_text("dataset: {uri: data.jsonl}\n")
    assert main(_argv(tmp_path, spec)) == ExitCode.PERMANENT
    report = _report(termination_log)
    assert report.reason == "TrainingStackMissing"
    assert report.message.startswith("torch is not installed")
