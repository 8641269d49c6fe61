"""Resolution against the fake hub: revisions, file selection, metadata and every error kind."""

import socket

import pytest

from moorage.api.resolved import HubFile
from moorage.devcluster import tinymodel
from moorage.devcluster.fakehub import (
    DEMO_TOKEN,
    TINY_BIN,
    TINY_DATASET,
    TINY_GATED,
    TINY_MODEL,
    TINY_REMOTE_CODE,
    FakeHub,
)
from moorage.hub import (
    AccessDeniedError,
    HubError,
    HubUnreachableError,
    InvalidSourceError,
    NoMatchingFilesError,
    PickleWeightsNotTrustedError,
    RemoteCodeNotTrustedError,
    RepoNotFoundError,
    RevisionNotFoundError,
    check_trust,
    parse_uri,
    resolve,
)
from moorage.hub.remote import Backoff
from moorage.hub.select import select

FAST = Backoff(attempts=3, base=0.01)
TINY_FILES = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("hf://Qwen/Qwen2.5-7B-Instruct", ("Qwen/Qwen2.5-7B-Instruct", "model")),
        ("hf://datasets/org/data", ("org/data", "dataset")),
        ("hf://models/org/m", ("org/m", "model")),
        ("hf://gpt2", ("gpt2", "model")),
    ],
)
def test_parse_uri(uri: str, expected: tuple[str, str]) -> None:
    assert parse_uri(uri) == expected


@pytest.mark.parametrize("uri", ["s3://bucket/x", "hf://", "hf://a/b/c", "hf://../x", "hf://org/na me"])
def test_parse_uri_refuses(uri: str) -> None:
    with pytest.raises(InvalidSourceError):
        parse_uri(uri)


def test_branch_tag_and_sha_pin_the_same_commit(hub: FakeHub) -> None:
    by_branch = resolve(f"hf://{TINY_MODEL}", "main", None, None)
    by_tag = resolve(f"hf://{TINY_MODEL}", "v1.0", None, None)
    by_sha = resolve(f"hf://{TINY_MODEL}", by_branch.sha, None, None)
    assert by_branch.sha == by_tag.sha == by_sha.sha
    assert len(by_branch.sha) == 40
    assert by_tag.revision == "v1.0"
    assert [f.path for f in by_branch.files] == TINY_FILES  # README.md is not pulled by default
    weights = next(f for f in by_branch.files if f.path == "model.safetensors")
    assert weights.sha256 is not None and weights.size == len(tinymodel.model_files()["model.safetensors"])
    assert next(f for f in by_branch.files if f.path == "config.json").sha256 is None
    assert by_branch.parameters == tinymodel.TinyLlama().parameters == 856
    assert by_branch.dtype == "BF16"
    assert not by_branch.needs_remote_code


def test_a_branch_follows_its_latest_commit(hub: FakeHub) -> None:
    old = resolve(f"hf://{TINY_MODEL}", "main", None, None).sha
    files = tinymodel.model_files(tinymodel.TinyLlama(seed=1))
    new = hub.add_repo(TINY_MODEL, files, revisions={"main": "b" * 40})
    assert resolve(f"hf://{TINY_MODEL}", "main", None, None).sha == new != old
    assert resolve(f"hf://{TINY_MODEL}", "v1.0", None, None).sha == old


def test_include_patterns_filter(hub: FakeHub) -> None:
    resolved = resolve(f"hf://{TINY_MODEL}", "main", ["*.json", "README.md"], None)
    assert [f.path for f in resolved.files] == [
        "README.md",
        "config.json",
        "generation_config.json",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    with pytest.raises(NoMatchingFilesError, match=r"\*\.gguf"):
        resolve(f"hf://{TINY_MODEL}", "main", ["*.gguf"], None)


def test_safetensors_win_over_bin(hub: FakeHub) -> None:
    files = tinymodel.model_files() | {"pytorch_model.bin": b"pickle", "training_args.bin": b"pickle"}
    hub.add_repo("org/both", files)
    resolved = resolve("hf://org/both", "main", None, None)
    assert [f.path for f in resolved.files] == TINY_FILES
    assert resolved.notes == ()


def test_bin_only_is_taken_and_noted_and_needs_trust(hub: FakeHub) -> None:
    resolved = resolve(f"hf://{TINY_BIN}", "main", None, None)
    assert "pytorch_model.bin" in [f.path for f in resolved.files]
    assert "model.safetensors" not in [f.path for f in resolved.files]
    assert resolved.notes and "pytorch_model.bin" in resolved.notes[0]
    # No safetensors summary on the hub: the count comes from config.json's shape.
    assert resolved.parameters == 856
    assert resolved.dtype == "BF16"
    with pytest.raises(PickleWeightsNotTrustedError, match="trustRemoteCode"):
        check_trust(resolved, trust_remote_code=False)
    check_trust(resolved, trust_remote_code=True)


def test_remote_code(hub: FakeHub) -> None:
    resolved = resolve(f"hf://{TINY_REMOTE_CODE}", "main", None, None)
    assert resolved.needs_remote_code
    with pytest.raises(RemoteCodeNotTrustedError) as error:
        check_trust(resolved, trust_remote_code=False)
    assert error.value.reason == "RemoteCodeNotTrusted" and not error.value.retryable
    check_trust(resolved, trust_remote_code=True)
    check_trust(resolve(f"hf://{TINY_MODEL}", "main", None, None), trust_remote_code=False)


def test_a_model_without_weights_is_refused(hub: FakeHub) -> None:
    hub.add_repo("org/gguf", {"config.json": b"{}", "model.gguf": b"GGUF"})
    with pytest.raises(NoMatchingFilesError, match=r"spec\.source\.include"):
        resolve("hf://org/gguf", "main", None, None)
    assert [f.path for f in resolve("hf://org/gguf", "main", ["*.gguf"], None).files] == ["model.gguf"]


def test_dataset_is_taken_whole(hub: FakeHub) -> None:
    resolved = resolve(f"hf://datasets/{TINY_DATASET}", "main", None, None)
    assert resolved.repo_type == "dataset"
    assert [f.path for f in resolved.files] == ["README.md", "train.jsonl"]
    assert resolved.parameters is None


def test_default_selection_skips_subfolders_and_consolidated_copies() -> None:
    files = [
        HubFile(p, 1)
        for p in [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "consolidated.safetensors",
            "original/consolidated.00.pth",
            "original/params.json",
            "tokenizer.model",
            "merges.txt",
            "vocab.json",
            "model.safetensors.index.json",
            "README.md",
            ".gitattributes",
        ]
    ]
    chosen = [f.path for f in select(files, None, "model").files]
    assert chosen == [
        "merges.txt",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.model",
        "vocab.json",
    ]
    only_consolidated = [HubFile("consolidated.safetensors", 1), HubFile("params.json", 1)]
    assert [f.path for f in select(only_consolidated, None, "model").files] == [
        "consolidated.safetensors",
        "params.json",
    ]


def test_repo_not_found(hub: FakeHub) -> None:
    with pytest.raises(RepoNotFoundError) as error:
        resolve("hf://org/missing", "main", None, None)
    assert error.value.reason == "RepoNotFound" and not error.value.retryable
    assert "tokenSecretRef" in error.value.message


def test_revision_not_found(hub: FakeHub) -> None:
    with pytest.raises(RevisionNotFoundError, match="'no-such-branch'") as error:
        resolve(f"hf://{TINY_MODEL}", "no-such-branch", None, None)
    assert error.value.reason == "RevisionNotFound"


def test_gated_without_token(hub: FakeHub) -> None:
    with pytest.raises(AccessDeniedError, match=r"spec\.source\.tokenSecretRef") as error:
        resolve(f"hf://{TINY_GATED}", "main", None, None)
    assert error.value.reason == "AccessDenied" and not error.value.retryable


def test_gated_with_a_token_without_access_never_shows_the_token(hub: FakeHub) -> None:
    secret = "hf_thisIsASecretTokenValue42"
    with pytest.raises(AccessDeniedError, match="not been granted") as error:
        resolve(f"hf://{TINY_GATED}", "main", None, secret)
    assert secret not in str(error.value) and secret not in repr(error.value)
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_gated_with_the_right_token(hub: FakeHub) -> None:
    resolved = resolve(f"hf://{TINY_GATED}", "main", None, DEMO_TOKEN)
    assert resolved.parameters == 856


def test_private_repo_needs_its_token(hub: FakeHub) -> None:
    hub.add_repo("org/private", tinymodel.model_files(), token="hf_private")
    with pytest.raises(RepoNotFoundError):
        resolve("hf://org/private", "main", None, None)
    with pytest.raises(RepoNotFoundError):
        resolve("hf://org/private", "main", None, "hf_other")
    assert resolve("hf://org/private", "main", None, "hf_private").files


def test_overloaded_hub_is_retried(hub: FakeHub) -> None:
    hub.fail(503, times=2)
    assert resolve(f"hf://{TINY_MODEL}", "main", None, None, backoff=FAST).sha
    assert [r.status for r in hub.requests if r.path.startswith("/api/")] == [503, 503, 200]


def test_hub_down_is_retryable_after_the_retries(hub: FakeHub) -> None:
    hub.fail(503, times=None)
    with pytest.raises(HubUnreachableError) as error:
        resolve(f"hf://{TINY_MODEL}", "main", None, None, backoff=FAST)
    assert error.value.retryable and error.value.reason == "HubUnreachable"
    assert len([r for r in hub.requests if r.path.startswith("/api/")]) == FAST.attempts


def test_unreachable_endpoint() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(HubUnreachableError):
        resolve(
            f"hf://{TINY_MODEL}", "main", None, "hf_tok", endpoint=f"http://127.0.0.1:{port}", backoff=FAST
        )


def test_errors_are_distinct() -> None:
    kinds = [
        RepoNotFoundError,
        RevisionNotFoundError,
        AccessDeniedError,
        RemoteCodeNotTrustedError,
        PickleWeightsNotTrustedError,
        HubUnreachableError,
        NoMatchingFilesError,
        InvalidSourceError,
    ]
    assert len({k.reason for k in kinds}) == len(kinds)
    assert all(issubclass(k, HubError) for k in kinds)
    assert [k for k in kinds if k.retryable] == [HubUnreachableError]
