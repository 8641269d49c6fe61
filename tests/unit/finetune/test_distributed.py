"""Several processes train one adapter (DDP over gloo on CPU), and their exit code survives torchrun."""

import json
import os

import pytest
from finetune_support import FineTuneRunner, instruction_rows, write_jsonl

from moorage.api.layout import COMPLETE_MARKER
from moorage.api.programs import ExitCode, Report
from moorage.jobs.finetune.launch import relaunch

pytest.importorskip("torch")
pytest.importorskip("peft")
pytestmark = pytest.mark.finetune


@pytest.fixture
def one_thread_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("one_thread_workers")
def test_two_processes_train_one_adapter(finetune: FineTuneRunner) -> None:
    data = write_jsonl(finetune.tmp / "data.jsonl", instruction_rows(16))
    spec = finetune.spec(
        {"uri": str(data), "format": "instruction"},
        training={"maxSteps": 6, "batchSize": 2, "gradientAccumulationSteps": 2, "checkpointSteps": 3},
    )
    assert relaunch(finetune.argv(spec), processes=2) == ExitCode.OK
    assert (finetune.output / COMPLETE_MARKER).is_file()
    assert (finetune.output / "adapter_model.safetensors").is_file()
    metrics = json.loads((finetune.output / "metrics.json").read_text())
    assert metrics["steps"] == 6
    checkpoint = finetune.output / "checkpoints" / "step-00000006"
    assert sorted(p.name for p in checkpoint.glob("rng-*.pt")) == ["rng-0.pt", "rng-1.pt"]
    report = Report.from_json(finetune.log.read_text())
    assert report is not None
    assert report.ok


@pytest.mark.usefixtures("one_thread_workers")
def test_a_worker_failure_keeps_its_exit_code(finetune: FineTuneRunner) -> None:
    # A bad spec fails before the workers load torch, which keeps this test quick.
    spec = finetune.spec({"uri": "data.jsonl"}, training={"batchSize": 0})
    assert relaunch(finetune.argv(spec), processes=2) == ExitCode.PERMANENT
    report = Report.from_json(finetune.log.read_text())
    assert report is not None
    assert report.reason == "SpecInvalid"
    assert "MOORAGE_FINETUNE_EXIT_CODE_FILE" not in os.environ
