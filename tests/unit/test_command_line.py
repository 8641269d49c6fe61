"""The command line as users and Jobs call it: exit codes and one-line errors."""

import subprocess
import sys
from pathlib import Path

import yaml

from moorage.api.programs import ExitCode
from moorage.cli import main

ROOT = Path(__file__).parents[2]


def moorage(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moorage.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )


def test_programs_get_their_arguments_whole(tmp_path: Path) -> None:
    """The Jobs run `moorage finetune --base ...`: the top-level parser must not eat the program's flags."""
    result = moorage(
        "finetune",
        "--base",
        str(tmp_path),
        "--spec",
        str(tmp_path / "missing.yaml"),
        "--output",
        str(tmp_path / "out"),
    )
    assert result.returncode == ExitCode.PERMANENT, result.stderr
    assert "unrecognized arguments" not in result.stderr


def test_render_prints_every_child(capsys: object) -> None:
    assert main(["render", "-f", str(ROOT / "examples" / "qwen-small.yaml")]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    kinds = [d["kind"] for d in yaml.safe_load_all(out) if d]
    assert kinds == ["Service", "PersistentVolumeClaim", "Job", "Deployment"]
    assert out.startswith("# revision: unresolved")


def test_bad_manifest_is_one_line_naming_the_field() -> None:
    bad = """apiVersion: moorage.dev/v1alpha1
kind: OpenSourceModel
metadata: {name: bad}
spec: {source: {uri: hf://a/b}, serving: {gpus: 2, vllm: {tensorParallelSize: 4}}}
"""
    result = moorage("render", "-f", "-", stdin=bad)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "spec.serving.vllm: vllm.tensorParallelSize cannot exceed gpus" in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_kind_and_missing_file() -> None:
    result = moorage("render", "-f", "-", stdin="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    assert result.returncode == 2 and "expected apiVersion moorage.dev/v1alpha1" in result.stderr
    result = moorage("render", "-f", "/nonexistent.yaml")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "nonexistent" in result.stderr


def test_crd_command_matches_the_checked_in_file() -> None:
    result = moorage("crd")
    assert result.returncode == 0
    assert result.stdout == (ROOT / "crds" / "opensourcemodels.moorage.dev.yaml").read_text()


def test_render_resolve_pins_the_commit(tmp_path: Path) -> None:
    from moorage.devcluster.fakehub import TINY_MODEL, default_hub  # noqa: PLC0415 - starts a server

    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"""apiVersion: moorage.dev/v1alpha1
kind: OpenSourceModel
metadata: {{name: tiny}}
spec: {{source: {{uri: hf://{TINY_MODEL}, revision: v1.0}}}}
""")
    with default_hub() as hub:
        sha = hub.repos["model", TINY_MODEL].refs["v1.0"]
        result = moorage("render", "--resolve", "--hf-endpoint", hub.url, "-f", str(manifest))
        missing = moorage(
            "render",
            "--resolve",
            "--hf-endpoint",
            hub.url,
            "-f",
            "-",
            stdin=manifest.read_text().replace(TINY_MODEL, "nobody/nothing"),
        )
    assert result.returncode == 0, result.stderr
    job = next(d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][:4] == [
        "pull",
        f"hf://{TINY_MODEL}",
        "--revision",
        sha,
    ]
    assert missing.returncode == 2 and "RepoNotFound" in missing.stderr and "Traceback" not in missing.stderr


def test_run_without_a_cluster_is_one_line(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "moorage.cli", "run"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("moorage: no cluster to talk to") and "Traceback" not in result.stderr
