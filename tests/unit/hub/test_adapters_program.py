"""`moorage adapters`, the adapters Job's program, against the fake hub: the served directory vLLM's
filesystem resolver reads holds exactly the listed adapters, each naming the base as vLLM serves it."""

import json
from pathlib import Path

import pytest

from moorage.api.programs import TERMINATION_LOG_ENV, ExitCode, Report
from moorage.devcluster.fakehub import TINY_LORA_OTHER_BASE, TINY_LORAS, TINY_SERVABLE, FakeHub
from moorage.hub import resolve
from moorage.jobs import adapters

BASE_PATH = "/weights/models/moorage/tiny-llama-64/" + "b" * 40


def run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *wanted: str, max_rank: int = 16
) -> tuple[int, Report]:
    log = tmp_path / "log"
    monkeypatch.setenv(TERMINATION_LOG_ENV, str(log))
    args = ["--dest", str(tmp_path / "weights"), "--served-dir", str(tmp_path / "served")]
    args += ["--base-path", BASE_PATH, "--base-repo", TINY_SERVABLE, "--max-rank", str(max_rank)]
    code = adapters.main([*args, *wanted])
    report = Report.from_json(log.read_text())
    assert report is not None
    return code, report


def pinned(name: str, repo: str, hub: FakeHub) -> str:
    sha = resolve(f"hf://{repo}", "main", None, None, endpoint=hub.url).sha
    return f"{name}={f'hf://{repo}'}@{sha}"


def test_the_served_directory_holds_exactly_the_listed_adapters(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = pinned("alpha", TINY_LORAS[0], hub), pinned("beta", TINY_LORAS[1], hub)
    code, report = run(tmp_path, monkeypatch, first, second)
    assert code == ExitCode.OK and report.ok, report
    served = tmp_path / "served"
    assert sorted(p.name for p in served.iterdir()) == ["alpha", "beta"]
    config = json.loads((served / "alpha" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == BASE_PATH and config["r"] == 8
    weights = served / "alpha" / "adapter_model.safetensors"
    assert weights.stat().st_nlink == 2, "a hard link to the verified snapshot, not a copy"

    code, report = run(tmp_path, monkeypatch, second)
    assert code == ExitCode.OK, report
    assert [p.name for p in served.iterdir()] == ["beta"]


def test_an_adapter_of_another_base_stalls_naming_it(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, report = run(tmp_path, monkeypatch, pinned("other", TINY_LORA_OTHER_BASE, hub))
    assert code == ExitCode.PERMANENT and report.reason == "AdapterIncompatible"
    assert report.message.startswith("spec.adapters 'other': trained on moorage/tiny-llama,"), report.message


def test_a_rank_above_the_maximum_stalls_naming_it(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, report = run(tmp_path, monkeypatch, pinned("alpha", TINY_LORAS[0], hub), max_rank=4)
    assert (
        code == ExitCode.PERMANENT and "rank 8 is above spec.serving.vllm.maxLoraRank (4)" in report.message
    )
