"""What a finished run leaves in OUTPUT: the adapter, metrics.json and, last, the completion marker."""

import json
import time
from pathlib import Path
from typing import Any

from moorage.api.layout import COMPLETE_MARKER
from moorage.jobs.finetune.progress import Progress

METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"


def is_complete(output: Path) -> bool:
    return (output / COMPLETE_MARKER).is_file()


def metrics(progress: Progress, resumed_from: int, examples: int) -> dict[str, Any]:
    return {
        "steps": progress.step,
        "resumedFromStep": resumed_from,
        "examples": examples,
        "lossCurve": [round(loss, 6) for loss in progress.losses],
        "firstLoss": progress.losses[0] if progress.losses else None,
        "finalLoss": progress.losses[-1] if progress.losses else None,
        "seconds": round(progress.seconds, 3),
        "tokens": progress.tokens,
        "tokensPerSecond": round(progress.tokens / progress.seconds, 1) if progress.seconds else 0.0,
    }


def write(output: Path, model: Any, run_metrics: dict[str, Any]) -> None:
    """The adapter in the layout vLLM loads (adapter_config.json, adapter_model.safetensors), then the
    metrics, then the marker that says both are whole."""
    model.save_pretrained(str(output), safe_serialization=True)
    (output / METRICS).write_text(json.dumps(run_metrics, indent=2) + "\n")
    marker = {
        "kind": "adapter",
        "steps": run_metrics["steps"],
        "finalLoss": run_metrics["finalLoss"],
        "completedAt": time.time(),
    }
    (output / COMPLETE_MARKER).write_text(json.dumps(marker) + "\n")


def report_details(output: Path, run_metrics: dict[str, Any] | None = None) -> dict[str, object]:
    """The numbers the termination report carries; read back from metrics.json for a finished output."""
    if run_metrics is None:
        try:
            run_metrics = json.loads((output / METRICS).read_text())
        except (OSError, ValueError):
            run_metrics = {}
    return {
        "steps": run_metrics.get("steps"),
        "finalLoss": run_metrics.get("finalLoss"),
        "seconds": run_metrics.get("seconds"),
        "tokensPerSecond": run_metrics.get("tokensPerSecond"),
        "adapter": str(output.absolute()),
    }
