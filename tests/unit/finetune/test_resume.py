"""A run killed after its first checkpoint resumes from it when started again."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from finetune_support import FineTuneRunner, instruction_rows, write_jsonl

from moorage.api.layout import COMPLETE_MARKER
from moorage.api.programs import ExitCode

pytest.importorskip("torch")
pytest.importorskip("peft")
pytestmark = pytest.mark.finetune

STEPS = 150
CHECKPOINT_STEPS = 5


def _start(finetune: FineTuneRunner, spec: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MOORAGE_TERMINATION_LOG": str(finetune.log), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "moorage.jobs.finetune", *finetune.argv(spec)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_checkpoint(process: subprocess.Popen[bytes], checkpoints: Path, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(checkpoints.glob("step-*"))
        if found:
            return found[0]
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def test_killed_run_resumes_from_its_checkpoint(
    finetune: FineTuneRunner, caplog: pytest.LogCaptureFixture
) -> None:
    data = write_jsonl(finetune.tmp / "data.jsonl", instruction_rows(32))
    spec = finetune.spec(
        {"uri": str(data), "format": "instruction"},
        training={
            "maxSteps": STEPS,
            "batchSize": 4,
            "checkpointSteps": CHECKPOINT_STEPS,
            "learningRate": 0.01,
        },
        lora={"r": 4, "dropout": 0.1},
    )
    first = _start(finetune, spec)
    try:
        _wait_for_checkpoint(first, finetune.output / "checkpoints")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert not (finetune.output / COMPLETE_MARKER).exists(), "the run finished before it could be killed"
    reached = max(int(p.name.removeprefix("step-")) for p in (finetune.output / "checkpoints").glob("step-*"))

    # The restart runs in-process: one interpreter start less.
    with caplog.at_level(logging.INFO, logger="moorage"):
        assert finetune(spec).code == ExitCode.OK
    assert f"resuming from the checkpoint at step {reached}" in caplog.text
    metrics = json.loads((finetune.output / "metrics.json").read_text())
    assert metrics["resumedFromStep"] == reached > 0
    assert metrics["steps"] == STEPS
    # The loss curve carries on from the checkpoint's rather than starting again.
    assert len(metrics["lossCurve"]) == STEPS
    # Only the newest checkpoint is kept.
    assert [p.name for p in (finetune.output / "checkpoints").iterdir()] == [f"step-{STEPS:08d}"]
