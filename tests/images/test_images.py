"""The images that images/build.sh built, run here without Docker: buildah, chroot isolation, uid 65532.

The build script's stdout is the source of truth: `images/build.sh > images.txt`, then
`MOORAGE_IMAGES=images.txt pytest tests/images`. Without it (or without buildah and root) these tests skip.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from moorage.devcluster.tinymodel import TinyLlama, chat_dataset_files, model_files

NON_ROOT = "65532:65532"
# What buildah's chroot isolation itself leaves in a container's upper layer (mount points, /run).
RUNTIME_PATHS = {"run", "etc/hosts", "etc/resolv.conf", "etc/hostname", "proc", "sys", "dev"}


@dataclass(frozen=True)
class Built:
    name: str
    ref: str
    archive: Path


@dataclass(frozen=True)
class Run:
    output: str
    changed: frozenset[str]
    """Paths the command wrote to the image's own filesystem (its overlay upper layer), mount points aside."""


def _built() -> dict[str, Built]:
    listing = os.environ.get("MOORAGE_IMAGES")
    if not listing:
        pytest.skip("set MOORAGE_IMAGES to a file holding images/build.sh's output (images/build.sh > file)")
    if shutil.which("buildah") is None or os.geteuid() != 0:
        pytest.skip("needs buildah and root (images/build.sh installs buildah)")
    built = {}
    for line in Path(listing).read_text().splitlines():
        if line.strip():
            name, ref, archive = line.split()
            built[name] = Built(name, ref, Path(archive))
    return built


@pytest.fixture(scope="session")
def images() -> dict[str, Built]:
    return _built()


def image(images: dict[str, Built], name: str) -> Built:
    if name not in images:
        pytest.skip(f"{name} not in $MOORAGE_IMAGES (images/build.sh {name})")
    return images[name]


def buildah(*args: str, timeout: float = 60) -> str:
    done = subprocess.run(["buildah", *args], check=False, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def config(ref: str) -> dict[str, object]:
    inspected = json.loads(buildah("inspect", "--type", "image", ref))
    return dict(inspected["OCIv1"]["config"])


class Container:
    """A working container of an image; run() executes a command in it as uid 65532."""

    def __init__(self, ref: str) -> None:
        self.name = f"moorage-test-{uuid.uuid4().hex[:8]}"
        buildah("from", "--pull=never", "--name", self.name, ref)
        self.upper = Path(buildah("mount", self.name).strip()).parent / "diff"

    def command(self, argv: Sequence[str], volumes: Sequence[str] = (), env: Sequence[str] = ()) -> list[str]:
        args = ["buildah", "run", "--isolation", "chroot", "--user", NON_ROOT]
        for volume in volumes:
            args += ["-v", volume]
        for variable in env:
            args += ["--env", variable]
        return [*args, self.name, "--", *argv]

    def run(
        self, *argv: str, volumes: Sequence[str] = (), env: Sequence[str] = (), timeout: float = 120
    ) -> Run:
        command = self.command(argv, volumes, env)
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout)
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{output[-4000:]}"
        return Run(output, self.changed(volumes))

    def changed(self, volumes: Sequence[str] = ()) -> frozenset[str]:
        mounts = {v.split(":")[1].strip("/") for v in volumes}
        allowed = RUNTIME_PATHS | mounts | {str(Path(m).parent) for m in mounts}
        found = set()
        for path in self.upper.rglob("*"):
            rel = str(path.relative_to(self.upper))
            if rel not in allowed and not any(rel.startswith(f"{a}/") for a in RUNTIME_PATHS | mounts):
                found.add(rel)
        return frozenset(found)

    def remove(self) -> None:
        subprocess.run(["buildah", "rm", self.name], capture_output=True, check=False)


@pytest.fixture
def container() -> Iterator[type[Container]]:
    made: list[Container] = []

    class Tracked(Container):
        def __init__(self, ref: str) -> None:
            super().__init__(ref)
            made.append(self)

    yield Tracked
    for c in made:
        c.remove()


pytestmark = pytest.mark.images

EXPECTED = {
    # name: (entrypoint, HOME)
    "operator": (["moorage"], "/tmp"),
    "finetune": (["moorage"], "/tmp"),
    "vllm-cpu": (["vllm", "serve"], "/home/vllm"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_image_runs_as_the_pods_uid_and_archive_carries_its_name(images: dict[str, Built], name: str) -> None:
    built = image(images, name)
    cfg = config(built.ref)
    entrypoint, home = EXPECTED[name]
    assert cfg.get("User") == NON_ROOT
    assert cfg.get("Entrypoint") == entrypoint
    assert f"HOME={home}" in cfg.get("Env", [])  # type: ignore[operator]
    # The tag is the content hash the archive is named after; `ctr images import` takes the name from
    # the index's org.opencontainers.image.ref.name.
    assert built.archive.name == f"{name}-{built.ref.rsplit(':', 1)[1]}.tar"
    with tarfile.open(built.archive) as archive:
        member = archive.extractfile("index.json")
        assert member is not None
        index = json.load(member)
    refs = [m.get("annotations", {}).get("org.opencontainers.image.ref.name") for m in index["manifests"]]
    assert refs == [built.ref]


def test_operator_programs_start_as_uid_65532(
    images: dict[str, Built], container: type[Container], scratch: Callable[[str], Path]
) -> None:
    c = container(image(images, "operator").ref)
    run = c.run(
        "sh",
        "-c",
        "moorage --help && moorage pull --help && python -c 'import getpass; print(getpass.getuser())'"
        " && python -c 'import moorage.reconcile.handlers, moorage.jobs.pull, kopf'",
        volumes=[f"{scratch('tmp')}:/tmp"],
    )
    assert "usage: moorage pull" in run.output
    assert run.output.split()[-1] == "moorage"  # kopf's getpass.getuser() finds uid 65532
    assert not run.changed, f"wrote outside /tmp: {sorted(run.changed)}"


def test_finetune_imports_the_training_stack(
    images: dict[str, Built], container: type[Container], scratch: Callable[[str], Path]
) -> None:
    c = container(image(images, "finetune").ref)
    run = c.run(
        "sh",
        "-c",
        "python -c 'import importlib.metadata as m, torch, transformers, peft, datasets;"
        ' print("torch", m.version("torch"), torch.ones(2) @ torch.ones(2))\' && moorage finetune --help',
        volumes=[f"{scratch('tmp')}:/tmp"],
    )
    assert "torch " in run.output and "tensor(2.)" in run.output
    assert "usage: moorage finetune" in run.output
    assert not run.changed, f"wrote outside /tmp: {sorted(run.changed)}"


def test_vllm_cpu_cli(
    images: dict[str, Built], container: type[Container], scratch: Callable[[str], Path]
) -> None:
    c = container(image(images, "vllm-cpu").ref)
    run = c.run(
        "sh",
        "-c",
        "python -c 'import importlib.metadata as m; from vllm.platforms import current_platform as p;"
        ' print("vllm", m.version("vllm"), "on", p.device_type)\' && vllm serve --help',
        volumes=[f"{scratch('tmp')}:/tmp", f"{scratch('home')}:/home/vllm"],
        timeout=180,
    )
    # `vllm` is what vLLM looks itself up by; "+cpu" in its version is how it knows its platform.
    assert re.search(r"^vllm \S+\+cpu on cpu$", run.output, re.MULTILINE), run.output[-2000:]
    assert "usage: vllm serve" in run.output
    assert not run.changed, f"wrote outside /tmp and HOME: {sorted(run.changed)}"


@pytest.fixture
def scratch(tmp_path: Path) -> Callable[[str], Path]:
    """Fresh host directories that any uid may write: stand-ins for the pod's emptyDirs."""

    def make(name: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        path.chmod(0o1777)
        return path

    return make


SERVE = pytest.mark.skipif(
    os.environ.get("MOORAGE_IMAGES_SERVE") != "1", reason="serving takes a minute: set MOORAGE_IMAGES_SERVE=1"
)


@SERVE
def test_vllm_cpu_serves_a_tiny_model(
    images: dict[str, Built], container: type[Container], scratch: Callable[[str], Path]
) -> None:
    model = _tiny_model(scratch("model"))
    # As the operator serves on CPU: torch.compile'd (no --enforce-eager), threads not pinned.
    with _serving(image(images, "vllm-cpu"), container, scratch, model, eager=False) as base:
        assert _model_ids(base) == ["tiny"]
        assert _complete(base, "tiny")


@SERVE
def test_an_adapter_trained_by_the_finetune_image_serves_on_vllm_cpu(
    images: dict[str, Built], container: type[Container], scratch: Callable[[str], Path]
) -> None:
    """The product's path on CPU: `moorage finetune` in its image, then `vllm serve --enable-lora`."""
    finetune, vllm = image(images, "finetune"), image(images, "vllm-cpu")
    model, work, out = _tiny_model(scratch("model")), scratch("work"), scratch("out")
    (work / "train.jsonl").write_bytes(chat_dataset_files(rows=16)["train.jsonl"])
    spec = {
        "dataset": {"uri": "/work/train.jsonl", "format": "chat"},
        "training": {"maxSteps": 4, "batchSize": 4, "maxSeqLength": 32},
        "lora": {"r": 8, "alpha": 16},
    }
    (work / "spec.json").write_text(json.dumps(spec))
    trainer = container(finetune.ref)
    volumes = [f"{model}:/models/tiny:ro", f"{work}:/work:ro", f"{out}:/out", f"{scratch('tmp')}:/tmp"]
    argv = [
        "moorage",
        "finetune",
        "--base",
        "/models/tiny",
        "--spec",
        "/work/spec.json",
        "--output",
        "/out/a",
    ]
    run = trainer.run(*argv, volumes=volumes, timeout=300)
    assert (out / "a" / "adapter_config.json").is_file(), run.output[-3000:]
    assert not run.changed, f"wrote outside /tmp and its volumes: {sorted(run.changed)}"

    lora = ["--enable-lora", "--lora-modules", "tiny-lora=/out/a", "--max-lora-rank", "8"]
    with _serving(vllm, container, scratch, model, [f"{out}:/out:ro"], lora) as base:
        assert _model_ids(base) == ["tiny", "tiny-lora"]
        assert _chat(base, "tiny-lora")
        assert _chat(base, "tiny")


def _tiny_model(path: Path) -> Path:
    # vLLM's CPU attention wants head_dim 64 (it refuses 16).
    for name, data in model_files(TinyLlama(hidden_size=128, intermediate_size=256)).items():
        (path / name).write_bytes(data)
    return path


@contextlib.contextmanager
def _serving(
    built: Built,
    container: type[Container],
    scratch: Callable[[str], Path],
    model: Path,
    volumes: Sequence[str] = (),
    flags: Sequence[str] = (),
    *,
    eager: bool = True,
) -> Iterator[str]:
    """`vllm serve` of the tiny model as the serving pod runs it; yields the API's base URL once it answers.
    Afterwards: nothing was written outside the pod's emptyDirs (/tmp, /home/vllm)."""
    c = container(built.ref)
    port = _free_port()
    tmp, home = scratch("vllm-tmp"), scratch("vllm-home")
    volumes = [f"{model}:/models/tiny:ro", f"{tmp}:/tmp", f"{home}:/home/vllm", *volumes]
    argv = [
        "vllm", "serve", "/models/tiny", "--served-model-name", "tiny", "--port", str(port),
        "--max-model-len", "128", *(["--enforce-eager"] if eager else []), *flags,
    ]  # fmt: skip
    # On CPU, --gpu-memory-utilization is a fraction of the host's memory (not the pod's): size the KV
    # cache instead, as a CPU serving pod must.
    env = ["VLLM_CPU_KVCACHE_SPACE=1", "VLLM_CPU_OMP_THREADS_BIND=nobind", "OMP_NUM_THREADS=1"]
    log = scratch("vllm-log") / "vllm.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            c.command(argv, volumes, env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        base = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, f"vllm exited {server.returncode}:\n{log.read_text()[-4000:]}"
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"vllm not up in 240 s:\n{log.read_text()[-4000:]}"
                time.sleep(2)
        yield base
    finally:
        _stop(server)
    assert not c.changed(volumes), f"wrote outside /tmp and HOME: {sorted(c.changed(volumes))}"


def _post(url: str, body: dict[str, object]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return dict(json.load(response))


def _model_ids(base: str) -> list[str]:
    with urllib.request.urlopen(f"{base}/models", timeout=10) as response:
        return sorted(m["id"] for m in json.load(response)["data"])


def _complete(base: str, model: str) -> str:
    answer = _post(f"{base}/completions", {"model": model, "prompt": "w4 w5", "max_tokens": 4})
    return str(answer["choices"][0]["text"])


def _chat(base: str, model: str) -> str:
    messages = [{"role": "user", "content": "w4 w5"}]
    answer = _post(f"{base}/chat/completions", {"model": model, "messages": messages, "max_tokens": 4})
    return str(answer["choices"][0]["message"]["content"])


def _stop(server: subprocess.Popen[bytes]) -> None:
    """End the server and every process it started: they share its new session's process group."""
    group = server.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            server.poll()
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)
    server.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
