"""The clients compared, each as the command a user would run, and a check that it fetched every byte."""

import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pullbench.servers import REPO, Content, resolve_url

Command = Callable[[str, Content, Path], list[str]]
"""(hub URL, content, destination) → argv."""

HF_SNAPSHOT = (
    "import sys; from huggingface_hub import snapshot_download; "
    "snapshot_download(sys.argv[1], revision=sys.argv[2], local_dir=sys.argv[3])"
)


def moorage(hub: str, content: Content, dest: Path) -> list[str]:
    return [sys.executable, "-m", "moorage.jobs.pull", f"hf://{REPO}", "--revision", content.sha,
            "--dest", str(dest), "--progress-seconds", "3600", "--endpoint", hub]  # fmt: skip


def curl(hub: str, content: Content, dest: Path) -> list[str]:
    """One stream, one file after the other (on one connection), as `curl -L` of each file URL."""
    argv = ["curl", "-sSfL"]
    for name in content.sizes:
        argv += [resolve_url(hub, content.sha, name), "-o", str(dest / name)]
    return argv


def aria2c(hub: str, content: Content, dest: Path, *, verify: bool = False) -> list[str]:
    """16 connections per file (-x16 -s16), split down to 1 MiB pieces, 5 files at once (its default);
    with verify, it checks the sha256 of the LFS files too (after the download, as moorage does during)."""
    listing = dest / "aria2.txt"
    dest.mkdir(parents=True, exist_ok=True)
    lines = []
    for name in content.sizes:
        lines += [resolve_url(hub, content.sha, name), f" out={name}"]
        if verify and name in content.sha256:
            lines.append(f" checksum=sha-256={content.sha256[name]}")
    listing.write_text("\n".join(lines) + "\n")
    return ["aria2c", "-q", "-x16", "-s16", "-k1M", "--file-allocation=none", "--allow-overwrite=true",
            "--auto-file-renaming=false", "-d", str(dest), "-i", str(listing)]  # fmt: skip


def aria2c_verified(hub: str, content: Content, dest: Path) -> list[str]:
    return aria2c(hub, content, dest, verify=True)


def snapshot_download(hub: str, content: Content, dest: Path) -> list[str]:
    return [sys.executable, "-c", HF_SNAPSHOT, REPO, content.sha, str(dest)]


TOOLS: dict[str, Command] = {
    "moorage pull": moorage,
    "curl (1 stream)": curl,
    "aria2c -x16": aria2c,
    "aria2c -x16 +sha256": aria2c_verified,
    "hf snapshot_download": snapshot_download,
}


@dataclass(frozen=True)
class Run:
    seconds: float | None
    """None: it failed or timed out."""
    cpu: float = 0.0
    """User and system CPU seconds of the tool's processes."""
    note: str = ""
    projected: bool = False
    """Stopped after its budget: seconds is the whole content at the rate it had reached."""


def run(
    tool: str,
    hub: str,
    content: Content,
    dest: Path,
    *,
    wrap: Callable[[list[str]], list[str]],
    timeout: float,
    budget: float | None = None,
) -> Run:
    """One timed run of a tool into an empty dest; checks that every file arrived whole. With a budget, a
    run still going after that many seconds is stopped and its rate so far projected to the whole content
    (a single stream across the WAN would take most of the benchmark's time otherwise)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    argv = wrap(TOOLS[tool](hub, content, dest))
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env |= {
        "HF_ENDPOINT": hub,
        "HF_HOME": str(dest / ".hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "MOORAGE_TERMINATION_LOG": str(dest / ".termination-log"),
    }
    cpu = _children_cpu()
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=budget or timeout, check=False
        )
    except subprocess.TimeoutExpired:
        if budget is None:
            return Run(None, note=f"over {timeout:.0f}s")
        elapsed, cpu = time.monotonic() - started, _children_cpu() - cpu
        got = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file() and p.suffix != ".txt")
        if not got:
            return Run(None, note=f"nothing in {budget:.0f}s")
        return Run(
            elapsed * content.total / got,
            cpu * content.total / got,
            f"{got / 1e6:.0f} MB in {elapsed:.1f}s",
            True,
        )
    seconds, cpu = time.monotonic() - started, _children_cpu() - cpu
    if done.returncode != 0:
        return Run(None, note=f"exit {done.returncode}: {(done.stderr or done.stdout).strip()[-200:]}")
    missing = _incomplete(dest, content)
    return Run(None, note=f"incomplete: {missing}") if missing else Run(seconds, cpu)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _incomplete(dest: Path, content: Content) -> list[str]:
    """Files not found at their size anywhere under dest (each tool lays them out its own way)."""
    found = {(p.name, p.stat().st_size) for p in dest.rglob("*") if p.is_file()}
    return [name for name, size in content.sizes.items() if (Path(name).name, size) not in found]
