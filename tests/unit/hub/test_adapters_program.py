"""`moorage adapters`, the adapters Job's program, against the fake hub: the served directory vLLM's
filesystem resolver reads holds exactly the listed adapters, each naming the base as vLLM serves it."""

import json
from pathlib import Path

import pytest

from moorage.api.programs import TERMINATION_LOG_ENV, ExitCode, Report
from moorage.devcluster import tinymodel
from moorage.devcluster.fakehub import (
    SERVABLE_SHAPE,
    TINY_LORA_OTHER_BASE,
    TINY_LORAS,
    TINY_SERVABLE,
    FakeHub,
)
from moorage.hub import resolve
from moorage.jobs import adapters
from moorage.plan import adapters as plan_adapters

BASE_PATH = "/weights/models/moorage/tiny-llama-64/" + "b" * 40


def run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *wanted: str, max_rank: int = 16, served: str = "served"
) -> tuple[int, Report]:
    log = tmp_path / "log"
    monkeypatch.setenv(TERMINATION_LOG_ENV, str(log))
    args = ["--dest", str(tmp_path / "weights"), "--served-dir", str(tmp_path / served)]
    args += ["--claims-root", str(tmp_path / "claims")]
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


def on_claim(tmp_path: Path, claim: str, path: str, files: dict[str, bytes]) -> str:
    """A LoRA directory on a claim as the adapters Job sees it (mounted at <claims root>/<claim>)."""
    directory = tmp_path / "claims" / claim / path
    directory.mkdir(parents=True)
    for name, blob in files.items():
        (directory / name).write_bytes(blob)
    return f"pvc://{claim}/{path}"


def test_an_adapter_on_a_claim_is_stored_by_content_and_served_beside_hub_ones(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = tinymodel.lora_files(SERVABLE_SHAPE, TINY_SERVABLE, seed=7)
    uri = on_claim(tmp_path, "loras", "support/v3", files)
    code, report = run(tmp_path, monkeypatch, pinned("alpha", TINY_LORAS[0], hub), f"support={uri}")
    assert code == ExitCode.OK and report.ok, report
    digest = report.details["digests"][1]  # type: ignore[index]
    stored = tmp_path / "weights" / "adapters" / f"sha256-{digest}"
    assert sorted(p.name for p in stored.iterdir()) == [
        ".moorage-complete.json",
        "adapter_config.json",
        "adapter_model.safetensors",
    ], "the two PEFT files only, whole"
    served = tmp_path / "served"
    assert sorted(p.name for p in served.iterdir()) == ["alpha", "support"]
    config = json.loads((served / "support" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == BASE_PATH
    assert (served / "support" / "adapter_model.safetensors").read_bytes() == files[
        "adapter_model.safetensors"
    ]
    assert (stored / "adapter_model.safetensors").stat().st_nlink == 2

    # Another model, the same bytes from another claim: one stored copy.
    same = on_claim(tmp_path, "elsewhere", "copy", files)
    code, report = run(tmp_path, monkeypatch, f"mine={same}", served="served-2")
    assert code == ExitCode.OK and report.details["digests"] == [digest], report
    assert (stored / "adapter_model.safetensors").stat().st_nlink == 3

    # Changed bytes on the claim are a new address; the old one stays for whoever serves it.
    (tmp_path / "claims" / "loras" / "support" / "v3" / "adapter_model.safetensors").write_bytes(
        tinymodel.lora_files(SERVABLE_SHAPE, TINY_SERVABLE, seed=8)["adapter_model.safetensors"]
    )
    code, report = run(tmp_path, monkeypatch, f"support={uri}")
    assert code == ExitCode.OK and report.details["digests"][0] != digest  # type: ignore[index]
    assert stored.is_dir()
    assert not [p for p in (tmp_path / "weights" / "adapters").iterdir() if p.name.startswith(".")], "staging"


@pytest.mark.parametrize(
    ("files", "path", "message"),
    [
        (
            {},
            "nothing/here",
            "spec.adapters[1].uri: no directory 'nothing/here' on PersistentVolumeClaim 'loras'",
        ),
        (
            {"adapter_config.json": b"{}"},
            "half",
            "spec.adapters[1].uri: no adapter_model.safetensors in 'half' on PersistentVolumeClaim 'loras'",
        ),
    ],
)
def test_a_missing_adapter_on_a_claim_stalls_naming_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes], path: str, message: str
) -> None:
    good = on_claim(tmp_path, "loras", "good", tinymodel.lora_files(SERVABLE_SHAPE, TINY_SERVABLE))
    if files:
        on_claim(tmp_path, "loras", path, files)
    code, report = run(tmp_path, monkeypatch, f"good={good}", f"bad=pvc://loras/{path}")
    assert code == ExitCode.PERMANENT and report.reason == "AdapterNotFound" == plan_adapters.NOT_FOUND
    assert report.message.startswith(message), report.message


def test_an_adapter_on_a_claim_gets_the_same_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = on_claim(tmp_path, "loras", "x", tinymodel.lora_files(tinymodel.TinyLlama(), TINY_LORA_OTHER_BASE))
    code, report = run(tmp_path, monkeypatch, f"other={uri}")
    assert code == ExitCode.PERMANENT and report.reason == "AdapterIncompatible", report
    assert "trained on moorage/tiny-llama-lora" in report.message


def test_the_digests_of_the_most_adapters_fit_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """32 adapters (spec.adapters' maximum) on claims, with names as long as allowed: the report, in a
    termination message of 4 KiB, still tells every digest."""
    files = tinymodel.lora_files(SERVABLE_SHAPE, TINY_SERVABLE)
    wanted = [f"{f'a{i:02d}' * 21}={on_claim(tmp_path, 'loras', f'v{i}', files)}" for i in range(32)]
    assert all(len(w.split("=")[0]) == 63 for w in wanted)
    code, report = run(tmp_path, monkeypatch, *wanted)
    assert code == ExitCode.OK and report.message == "32 adapters served", report
    digests = report.details["digests"]
    assert isinstance(digests, list) and len(set(digests)) == 1 and len(digests) == 32
