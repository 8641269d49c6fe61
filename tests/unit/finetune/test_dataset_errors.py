"""Bad data fails fast with exit PERMANENT and a reason and message that say what to fix."""

from pathlib import Path

import pytest
from finetune_support import FineTuneRunner, Outcome, instruction_rows, write_jsonl

from moorage.api.layout import COMPLETE_MARKER
from moorage.api.programs import ExitCode
from moorage.jobs.finetune.sources import resolve_dataset

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.finetune


def _run(finetune: FineTuneRunner, data: Path, **training: object) -> Outcome:
    return finetune(finetune.spec({"uri": str(data), "format": "instruction"}, training=training))


def test_a_row_without_the_field_is_named(finetune: FineTuneRunner) -> None:
    rows = instruction_rows(4)
    del rows[2]["completion"]
    outcome = _run(finetune, write_jsonl(finetune.tmp / "data.jsonl", rows))
    assert outcome.code == ExitCode.PERMANENT
    assert outcome.report.reason == "DatasetInvalid"
    assert outcome.report.message.startswith("row 3: missing field 'completion'")


def test_configured_field_names_are_used(finetune: FineTuneRunner) -> None:
    rows = [{"question": r["prompt"], "answer": r["completion"]} for r in instruction_rows(4)]
    data = write_jsonl(finetune.tmp / "data.jsonl", rows)
    spec = finetune.spec({"uri": str(data), "format": "instruction", "promptField": "question"})
    outcome = finetune(spec)
    assert outcome.report.reason == "DatasetInvalid"
    assert "row 1: missing field 'completion' (the row has: answer, question)" in outcome.report.message


def test_an_empty_dataset_is_refused(finetune: FineTuneRunner) -> None:
    data = finetune.tmp / "data.jsonl"
    data.write_text("")
    outcome = _run(finetune, data)
    assert (outcome.code, outcome.report.reason) == (ExitCode.PERMANENT, "DatasetEmpty")


def test_an_overlong_row_is_refused_when_asked(finetune: FineTuneRunner) -> None:
    rows = instruction_rows(3)
    rows[1]["completion"] = " ".join(["1"] * 40)
    outcome = _run(
        finetune, write_jsonl(finetune.tmp / "data.jsonl", rows), maxSeqLength=16, overlong="refuse"
    )
    assert (outcome.code, outcome.report.reason) == (ExitCode.PERMANENT, "SequenceTooLong")
    assert outcome.report.message.startswith("row 2 is 46 tokens long, more than maxSeqLength 16")


def test_a_missing_dataset_is_reported(finetune: FineTuneRunner) -> None:
    outcome = _run(finetune, finetune.tmp / "nowhere.jsonl")
    assert (outcome.code, outcome.report.reason) == (ExitCode.PERMANENT, "DatasetNotFound")


def test_missing_base_weights_are_reported(finetune: FineTuneRunner) -> None:
    finetune.base = finetune.tmp / "no-base"
    outcome = _run(finetune, write_jsonl(finetune.tmp / "data.jsonl", instruction_rows(2)))
    assert (outcome.code, outcome.report.reason) == (ExitCode.PERMANENT, "BaseWeightsMissing")


def test_a_pulled_hub_snapshot_reads_its_split(finetune: FineTuneRunner) -> None:
    """hf://datasets/... reads the snapshot the pull program left under the data root, marker and all."""
    load_rows = pytest.importorskip("moorage.jobs.finetune.data").load_rows
    snapshot = finetune.tmp / "datasets" / "acme" / "counting" / ("a" * 40)
    write_jsonl(snapshot / "data" / "train.jsonl", instruction_rows(3))
    write_jsonl(snapshot / "data" / "test.jsonl", instruction_rows(1))
    (snapshot / "README.md").write_text("# counting\n")
    (snapshot / COMPLETE_MARKER).write_text('{"revision": "main"}')
    path = resolve_dataset("hf://datasets/acme/counting", "main", finetune.tmp)
    assert path == snapshot
    assert len(list(load_rows(path, "train", finetune.tmp / "cache"))) == 3
    assert len(list(load_rows(path, "test", finetune.tmp / "cache"))) == 1
    with pytest.raises(Exception, match="no split 'validation'"):
        list(load_rows(path, "validation", finetune.tmp / "cache"))
