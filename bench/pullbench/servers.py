"""The hub and its CDN for the pull benchmark: moorage's fake hub (the hub API, in Python) behind pullnet
(bench/pullnet, Go), which serves the files themselves and redirects to them as huggingface.co does."""

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from moorage.devcluster.fakehub import FakeHub, commit_sha, git_blob_id, is_lfs

BIN = Path.home() / ".cache" / "moorage" / "bin"
REPO = "bench/model"
MiB = 2**20


@dataclass(frozen=True)
class Content:
    sha: str
    sizes: dict[str, int]
    sha256: dict[str, str]
    """Of the LFS files, as the hub lists them."""

    @property
    def total(self) -> int:
        return sum(self.sizes.values())


def make_files(big_mib: int) -> dict[str, bytes]:
    """One big weights file, a few small ones, and the JSON files a model has. Random bytes (a block repeated:
    nothing on the way compresses), so that sha256 and the network see what real weights look like."""
    block = os.urandom(16 * MiB)
    big = (block * (big_mib * MiB // len(block) + 1))[: big_mib * MiB]
    files = {
        "model.safetensors": big,
        "config.json": b'{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}',
        "generation_config.json": b'{"do_sample": true}',
        "tokenizer.json": os.urandom(3 * MiB).hex().encode()[: 3 * MiB],
    }
    for i in range(3):
        files[f"adapter-{i}.safetensors"] = os.urandom(5 * MiB)
    return files


@dataclass(frozen=True)
class Servers:
    hubs: list[str]
    """URLs of pullnet's hub listeners, in the order asked."""
    cdn: str
    """host:port of the CDN listener."""


@contextmanager
def serve(root: Path, files: dict[str, bytes], wan_cdn_urls: list[str]) -> Iterator[tuple[Content, Servers]]:
    """The fake hub with `files` as REPO, and pullnet in front of it: one hub listener redirecting to its
    CDN listener on loopback, then one per URL in wan_cdn_urls (where clients reach the CDN through the
    WAN emulator)."""
    sha = commit_sha(files)
    for name, data in files.items():
        path = root / "cdn" / "model" / sha / REPO / "-" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    tree = root / "tree.json"
    tree.write_text(json.dumps([_tree_entry(name, data) for name, data in files.items()]))
    with FakeHub() as hub:
        hub.add_repo(REPO, files, revisions={"main": sha})
        hub_args = ["-hub", "127.0.0.1:0", "-static", f"/api/models/{REPO}/tree/{sha}={tree}"]
        for url in wan_cdn_urls:
            hub_args += ["-hub", f"127.0.0.1:0={url}"]
        with subprocess.Popen(
            [str(BIN / "pullnet"), "-root", str(root), "-upstream", hub.url, *hub_args],
            stdout=subprocess.PIPE,
            text=True,
        ) as pullnet:
            try:
                assert pullnet.stdout is not None
                lines = [pullnet.stdout.readline().split() for _ in range(1 + 1 + len(wan_cdn_urls))]
                cdn = next(address for kind, address in lines if kind == "cdn")
                hubs = [f"http://{address}" for kind, address in lines if kind == "hub"]
                sizes = {name: len(data) for name, data in files.items()}
                digests = {n: hashlib.sha256(d).hexdigest() for n, d in files.items() if is_lfs(n, d)}
                yield Content(sha, sizes, digests), Servers(hubs, cdn)
            finally:
                pullnet.kill()


def resolve_url(hub: str, sha: str, name: str) -> str:
    return f"{hub}/{REPO}/resolve/{sha}/{quote(name)}"


def _tree_entry(name: str, data: bytes) -> dict[str, object]:
    """An entry of the hub's tree listing, which snapshot_download reads and the fake hub does not serve."""
    entry: dict[str, object] = {"type": "file", "path": name, "size": len(data), "oid": git_blob_id(data)}
    if is_lfs(name, data):
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry
