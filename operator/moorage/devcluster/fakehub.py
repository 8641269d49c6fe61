"""A local stand-in for the Hugging Face hub: the endpoints huggingface_hub and `moorage pull` use.

Start it, point HF_ENDPOINT at `.url`, and the code under test cannot tell it from huggingface.co:
model/dataset info with file metadata, resolve URLs with the hub's headers, redirects of LFS files to a
"CDN", Range requests, gated and private repositories, and the hub's error codes. Faults (stalls, cut
connections, corrupt content, 5xx) are injected per file, and every request is logged so tests can count
the bytes that moved.
"""

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from moorage.devcluster import tinymodel
from moorage.devcluster.hubserver import (
    LFS_MIN_SIZE,
    LFS_SUFFIXES,
    FakeHub,
    Fault,
    HubError,
    Repo,
    RepoKind,
    RequestRecord,
    commit_sha,
    git_blob_id,
    is_lfs,
)

__all__ = [
    "DEMO_TOKEN",
    "LFS_MIN_SIZE",
    "LFS_SUFFIXES",
    "TINY_BIN",
    "TINY_DATASET",
    "TINY_GATED",
    "TINY_LORAS",
    "TINY_LORA_OTHER_BASE",
    "TINY_MODEL",
    "TINY_REMOTE_CODE",
    "TINY_SERVABLE",
    "DemoRepo",
    "FakeHub",
    "Fault",
    "HubError",
    "Repo",
    "RepoKind",
    "RequestRecord",
    "add_demo_repos",
    "commit_sha",
    "default_hub",
    "demo_repos",
    "git_blob_id",
    "is_lfs",
]

TINY_MODEL = "moorage/tiny-llama"
TINY_REMOTE_CODE = "moorage/tiny-remote-code"
TINY_BIN = "moorage/tiny-llama-bin"
TINY_GATED = "moorage/tiny-gated"
TINY_DATASET = "moorage/tiny-chat"
TINY_SERVABLE = "moorage/tiny-llama-64"
TINY_LORAS = ("moorage/tiny-llama-64-lora-a", "moorage/tiny-llama-64-lora-b")
"""LoRA adapters of TINY_SERVABLE."""
TINY_LORA_OTHER_BASE = "moorage/tiny-llama-lora"
"""A LoRA adapter of TINY_MODEL: not one TINY_SERVABLE can serve."""
"""A tiny llama that vLLM's CPU kernels serve: head_dim 64 (they refuse 16)."""
SERVABLE_SHAPE = tinymodel.TinyLlama(
    vocab_size=256, hidden_size=128, intermediate_size=256, num_attention_heads=2, num_key_value_heads=2
)
DEMO_TOKEN = "hf_demo_token_0123456789"  # noqa: S105 - a fake token the fake hub accepts for TINY_GATED


@dataclass(frozen=True)
class DemoRepo:
    repo_id: str
    files: dict[str, bytes]
    repo_type: RepoKind = "model"
    gated: bool = False
    token: str | None = None
    tags: tuple[str, ...] = ()


def demo_repos() -> Iterator[DemoRepo]:
    """The repositories `default_hub()` serves: a tiny llama (tag v1.0), the same with pickled weights, one
    that needs trust_remote_code, a gated one (DEMO_TOKEN has access), a chat dataset and a tiny llama
    that vLLM on CPU serves."""
    yield DemoRepo(TINY_MODEL, tinymodel.model_files(), tags=("v1.0",))
    yield DemoRepo(TINY_BIN, tinymodel.model_files(weights_format="bin"))
    yield DemoRepo(TINY_REMOTE_CODE, tinymodel.model_files(auto_map=True))
    yield DemoRepo(TINY_GATED, tinymodel.model_files(), gated=True, token=DEMO_TOKEN)
    yield DemoRepo(TINY_DATASET, tinymodel.chat_dataset_files(), repo_type="dataset")
    yield DemoRepo(TINY_SERVABLE, tinymodel.model_files(SERVABLE_SHAPE))
    for seed, repo in enumerate(TINY_LORAS, start=1):
        yield DemoRepo(repo, tinymodel.lora_files(SERVABLE_SHAPE, TINY_SERVABLE, seed=seed))
    yield DemoRepo(TINY_LORA_OTHER_BASE, tinymodel.lora_files(tinymodel.TinyLlama(), TINY_MODEL, rank=4))


def add_demo_repos(hub: FakeHub) -> dict[str, str]:
    """Adds demo_repos() to hub; returns repo id → commit sha."""
    shas = {}
    for demo in demo_repos():
        sha = commit_sha(demo.files)
        hub.add_repo(
            demo.repo_id,
            demo.files,
            repo_type=demo.repo_type,
            gated=demo.gated,
            token=demo.token,
            revisions={"main": sha, **dict.fromkeys(demo.tags, sha)},
        )
        shas[demo.repo_id] = sha
    return shas


def default_hub(host: str = "127.0.0.1") -> FakeHub:
    """A started FakeHub serving demo_repos() on ``host``; stop it (or use it as a context manager)."""
    hub = FakeHub(host=host).start()
    add_demo_repos(hub)
    return hub


def main() -> None:
    """`python -m moorage.devcluster.fakehub`: serve the demo repositories until interrupted."""
    with default_hub() as hub:
        print(f"HF_ENDPOINT={hub.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
