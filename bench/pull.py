"""Throughput of `moorage pull` against the fake hub, next to a plain HTTP copy of the same bytes.

    .venv/bin/python bench/pull.py [--mib 256] [--files 3]

Both sides read the same files from the same local server, so the ratio shows what pull's own work costs
(hashing, fsync, progress, resolution); the cache-hit time is a second pull of the same commit.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from moorage.devcluster import tinymodel
from moorage.devcluster.fakehub import FakeHub
from moorage.jobs import pull

REPO = "bench/model"


def make_files(total_mib: int, count: int) -> dict[str, bytes]:
    size = total_mib * 2**20 // count
    block = os.urandom(2**20)
    files = {"config.json": b"{}"}
    for i in range(count):
        data = (block * (size // len(block) + 1))[: size - 100]
        name = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
        files[name] = tinymodel.safetensors_bytes({"w": ("U8", (len(data),), data)})
    return files


def plain_copy(hub: FakeHub, sha: str, files: dict[str, bytes], dest: Path) -> float:
    started = time.monotonic()
    for name in files:
        with (
            urllib.request.urlopen(f"{hub.url}/{REPO}/resolve/{sha}/{name}") as response,
            (dest / name).open("wb") as out,
        ):
            shutil.copyfileobj(response, out, 2**20)
    return time.monotonic() - started


def timed_pull(dest: Path, revision: str) -> float:
    started = time.monotonic()
    code = pull.main(
        [f"hf://{REPO}", "--revision", revision, "--dest", str(dest), "--progress-seconds", "3600"]
    )
    if code != 0:
        raise SystemExit(f"pull failed with exit code {code}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--files", type=int, default=3)
    args = parser.parse_args()
    files = make_files(args.mib, args.files)
    total = sum(map(len, files.values()))
    with FakeHub() as hub, tempfile.TemporaryDirectory() as tmp:
        os.environ["HF_ENDPOINT"] = hub.url
        os.environ[pull.TERMINATION_LOG_ENV] = str(Path(tmp) / "termination-log")
        sha = hub.add_repo(REPO, files)
        plain_dir = Path(tmp) / "plain"
        plain_dir.mkdir()
        plain = plain_copy(hub, sha, files, plain_dir)
        shutil.rmtree(plain_dir)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - pull's own lines would drown the numbers
        try:
            pulled = timed_pull(Path(tmp) / "weights", "main")
            cached = timed_pull(Path(tmp) / "weights", sha)
        finally:
            sys.stdout.close()
            sys.stdout = sys.__stdout__
    mib = total / 2**20
    print(f"{args.files} files, {mib:.0f} MiB over HTTP from the fake hub on 127.0.0.1")
    print(f"plain urllib copy : {plain:6.2f} s  {mib / plain:7.1f} MiB/s")
    print(f"moorage pull      : {pulled:6.2f} s  {mib / pulled:7.1f} MiB/s  (sha256 + fsync + resolution)")
    print(f"ratio pull/plain  : {pulled / plain:6.2f}x the time")
    print(f"cache hit (sha)   : {cached * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
