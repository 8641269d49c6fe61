"""The command line as users and Jobs call it: exit codes and one-line errors."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest
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
    assert result.returncode == 2 and "no moorage.dev/v1alpha1 OpenSourceModel in it" in result.stderr
    result = moorage("render", "-f", "-", stdin="")
    assert result.returncode == 2 and "no moorage.dev/v1alpha1 OpenSourceModel" in result.stderr
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


def test_run_with_a_metrics_port_taken_is_one_line(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "moorage.cli",
                "run",
                "--metrics-port",
                str(port),
                "--metrics-address",
                "127.0.0.1",
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
            env={
                "HOME": str(tmp_path),
                "PATH": "/usr/bin:/bin",
                "KUBECONFIG": str(kubeconfig),
                "PYTHONPATH": str(ROOT / "operator"),
            },
            timeout=60,
        )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"moorage: --metrics-port: cannot serve metrics on 127.0.0.1:{port}")
    assert "Traceback" not in result.stderr


def test_prometheus_address_must_be_a_url() -> None:
    result = moorage(
        "render", "-f", "examples/qwen-autoscaled.yaml", "--prometheus-address", "prometheus:9090"
    )
    assert result.returncode == 2 and "is not an http:// or https:// URL" in result.stderr
    result = moorage(
        "render", "-f", "examples/qwen-autoscaled.yaml", "--prometheus-address", "http://p.m:9090"
    )
    assert result.returncode == 0 and "serverAddress: http://p.m:9090" in result.stdout


MODEL_YAML = "apiVersion: moorage.dev/v1alpha1\nkind: OpenSourceModel\nmetadata: {name: m}\nspec:\n"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "  source: {uri: hf://a/b, trust_remote_code: true}",
            "spec.source.trust_remote_code: unknown field",
        ),
        (
            '  source: {uri: hf://a/b, trustRemoteCode: "yes"}',
            "spec.source.trustRemoteCode: must be true or false",
        ),
        ('  source: {uri: hf://a/b, revision: "main "}', "spec.source.revision:"),
        (
            "  source: {uri: hf://a/b}\n  fineTune: {dataset: {uri: /data/train.jsonl}}",
            "spec.fineTune.dataset.uri: must be hf://datasets/<org>/<name> or pvc://<claim>/<path>",
        ),
        (
            "  source: {uri: hf://a/b, tokenSecretRef: hf-token}",
            "spec.source.tokenSecretRef: must be an object",
        ),
        (
            "  source: {uri: hf://a/b}\n  serving: {replicas: '2'}",
            "spec.serving.replicas: must be an integer",
        ),
        (
            "  source: {uri: hf://a/b}\n  serving: {autoscaling: {minReplicas: 5, maxReplicas: 2}}",
            "spec.serving.autoscaling.minReplicas: minReplicas must not exceed maxReplicas",
        ),
    ],
)
def test_render_refuses_what_the_crd_refuses(spec: str, message: str) -> None:
    result = moorage("render", "-f", "-", stdin=MODEL_YAML + spec + "\n")
    assert result.returncode == 2, result.stdout
    assert (
        message in result.stderr and "Traceback" not in result.stderr and "instance of" not in result.stderr
    )


def test_render_takes_a_directory_and_other_kinds_beside_models(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\n"
        + MODEL_YAML
        + "  source: {uri: hf://a/b}\n"
    )
    (tmp_path / "b.yml").write_text(MODEL_YAML.replace("name: m", "name: n") + "  source: {uri: hf://a/c}\n")
    (tmp_path / "notes.txt").write_text("not a manifest")
    result = moorage("render", "-f", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("kind: Deployment") == 2


def test_yaml_errors_fit_on_one_line() -> None:
    result = moorage("render", "-f", "-", stdin="spec: [\n")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_version() -> None:
    result = moorage("--version")
    assert result.returncode == 0 and result.stdout.startswith("moorage ")
