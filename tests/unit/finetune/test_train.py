"""Really trains a LoRA adapter on a tiny random Llama, on CPU."""

import json
from pathlib import Path

import pytest
from finetune_support import FineTuneRunner, chat_rows, restore_offline_env_after, write_jsonl

from moorage.api.layout import COMPLETE_MARKER
from moorage.api.programs import ExitCode, Report

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.finetune

TRAINING = {"maxSteps": 60, "batchSize": 8, "learningRate": 0.01, "checkpointSteps": 25, "maxSeqLength": 32}
LORA = {"r": 8, "alpha": 16, "dropout": 0.0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> FineTuneRunner:
    """One chat-format run shared by the tests that only look at its results."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        runner = FineTuneRunner(tmp_path_factory.mktemp("trained"), tiny_base)
        monkeypatch.setenv("MOORAGE_TERMINATION_LOG", str(runner.log))
        restore_offline_env_after(monkeypatch)
        data = write_jsonl(runner.tmp / "data" / "train.jsonl", chat_rows(64))
        outcome = runner(runner.spec({"uri": str(data), "format": "chat"}, training=TRAINING, lora=LORA))
        assert outcome.code == ExitCode.OK, outcome.report
        return runner


def test_writes_adapter_metrics_and_marker(trained: FineTuneRunner) -> None:
    out = trained.output
    for name in ("adapter_config.json", "adapter_model.safetensors", "metrics.json", COMPLETE_MARKER):
        assert (out / name).is_file(), name
    # The marker is written last: nothing the run produces is newer.
    marker_time = (out / COMPLETE_MARKER).stat().st_mtime_ns
    assert all(p.stat().st_mtime_ns <= marker_time for p in out.iterdir() if p.is_file())
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 8
    assert config["peft_type"] == "LORA"


def test_loss_drops(trained: FineTuneRunner) -> None:
    metrics = json.loads((trained.output / "metrics.json").read_text())
    assert metrics["steps"] == 60
    assert len(metrics["lossCurve"]) == 60
    assert metrics["finalLoss"] < 0.7 * metrics["firstLoss"], metrics["lossCurve"]
    assert metrics["tokensPerSecond"] > 0
    assert metrics["resumedFromStep"] == 0


def test_termination_report(trained: FineTuneRunner) -> None:
    report = Report.from_json(trained.log.read_text())
    assert report is not None
    assert report.ok
    assert report.reason == "Trained"
    assert set(report.details) == {"steps", "finalLoss", "seconds", "tokensPerSecond", "adapter"}
    assert report.details["steps"] == 60
    assert report.details["adapter"] == str(trained.output)


def test_adapter_loads_with_peft_and_changes_the_output(trained: FineTuneRunner) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(trained.base)
    ids = tokenizer(
        ["<|im_start|> user count from 4 : <|im_end|> <|im_start|> assistant"], return_tensors="pt"
    )
    base = transformers.AutoModelForCausalLM.from_pretrained(trained.base).eval()
    with torch.no_grad():
        base_logits = base(**ids).logits
        tuned = peft.PeftModel.from_pretrained(base, str(trained.output)).eval()
        tuned_logits = tuned(**ids).logits
    assert not torch.allclose(base_logits, tuned_logits, atol=1e-3)
    # What it learnt: after "count from 4 :", the answer starts with 5.
    assert tokenizer.decode(tuned_logits[0, -1].argmax()) == "5"


def test_a_complete_output_is_not_trained_again(
    trained: FineTuneRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = trained.output / "adapter_model.safetensors"
    before = adapter.stat().st_mtime_ns
    monkeypatch.setenv("MOORAGE_TERMINATION_LOG", str(trained.log))
    # A spec that could not even be read proves nothing past the marker is looked at.
    outcome = trained(trained.tmp / "no-such-spec.yaml")
    assert outcome.code == ExitCode.OK
    assert outcome.report.reason == "Trained"
    assert outcome.report.details["steps"] == 60
    assert adapter.stat().st_mtime_ns == before
