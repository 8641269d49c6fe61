"""Data and a runner for the fine-tune tests (importable by test modules, unlike conftest)."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from moorage.api.programs import Report
from moorage.jobs.finetune import main
from moorage.jobs.finetune.cli import OFFLINE_ENV

NUMBERS = [str(i) for i in range(24)]
WORDS = [*NUMBERS, "count", "from", ":", "user", "assistant", "system"]
SPECIAL = ["<unk>", "<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)


def restore_offline_env_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """`moorage finetune` forces the hub libraries offline for its process; tests that run it in-process
    must not leave the rest of the suite (the pull tests, say) offline too."""
    for name in OFFLINE_ENV:
        # setenv first: it remembers the original state, where delenv forgets a variable that was unset.
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)


def counting_rows(n: int) -> list[tuple[str, str]]:
    """Prompt/completion pairs with a pattern a two-layer model learns in a few dozen steps."""
    return [(f"count from {i % 20} :", " ".join(str(i % 20 + k) for k in (1, 2, 3))) for i in range(n)]


def instruction_rows(n: int) -> list[dict[str, Any]]:
    return [{"prompt": p, "completion": c} for p, c in counting_rows(n)]


def chat_rows(n: int) -> list[dict[str, Any]]:
    return [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c}]}
        for p, c in counting_rows(n)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@dataclass
class Outcome:
    code: int
    report: Report


@dataclass
class FineTuneRunner:
    """Runs `moorage finetune` in-process against one spec, output and termination log."""

    tmp: Path
    base: Path

    @property
    def output(self) -> Path:
        return self.tmp / "out"

    @property
    def log(self) -> Path:
        return self.tmp / "termination-log"

    def spec(self, dataset: dict[str, Any], **sections: dict[str, Any]) -> Path:
        spec = self.tmp / "spec.yaml"
        spec.write_text(yaml.safe_dump({"dataset": dataset, **sections}))
        return spec

    def argv(self, spec: Path) -> list[str]:
        return [
            "--base",
            str(self.base),
            "--spec",
            str(spec),
            "--output",
            str(self.output),
            "--data-root",
            str(self.tmp),
        ]

    def __call__(self, spec: Path) -> Outcome:
        code = main(self.argv(spec))
        report = Report.from_json(self.log.read_text())
        assert report is not None
        return Outcome(code, report)
