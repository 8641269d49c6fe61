"""The fake hub speaks the hub's protocol, and the tiny model is well-formed."""

import hashlib
import json
import struct

import httpx2
import pytest
import tokenizers

from moorage.devcluster import tinymodel
from moorage.devcluster.fakehub import DEMO_TOKEN, TINY_GATED, TINY_MODEL, FakeHub, default_hub


def test_tiny_model_safetensors_is_well_formed() -> None:
    blob = tinymodel.model_files()["model.safetensors"]
    (length,) = struct.unpack("<Q", blob[:8])
    assert length % 8 == 0
    header = tinymodel.read_safetensors_header(blob)
    end = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        assert isinstance(tensor, dict)
        start, stop = tensor["data_offsets"]
        assert start == end  # contiguous, in order
        count = 1
        for d in tensor["shape"]:
            count *= d
        assert stop - start == count * 2
        end = stop
    assert len(blob) == 8 + length + end
    assert sum(1 for n in header if n != "__metadata__") == len(tinymodel.TinyLlama().tensor_shapes())


def test_tiny_model_config_and_tokenizer() -> None:
    files = tinymodel.model_files()
    config = json.loads(files["config.json"])
    assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == 32
    tokenizer = tokenizers.Tokenizer.from_str(files["tokenizer.json"].decode())
    assert tokenizer.get_vocab_size() == 32
    assert tokenizer.encode("w5 w6 unknown").ids == [5, 6, 3]
    assert tinymodel.bf16(1.0) == b"\x80\x3f"


def test_resolve_headers_ranges_and_redirects() -> None:
    with default_hub() as hub, httpx2.Client(base_url=hub.url) as http:
        data = tinymodel.model_files()["model.safetensors"]
        head = http.head(f"/{TINY_MODEL}/resolve/main/model.safetensors")
        assert head.status_code == 302
        assert head.headers["X-Linked-Size"] == str(len(data))
        assert head.headers["X-Linked-Etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
        assert len(head.headers["X-Repo-Commit"]) == 40
        part = http.get(
            f"/{TINY_MODEL}/resolve/v1.0/model.safetensors",
            headers={"Range": "bytes=100-"},
            follow_redirects=True,
        )
        assert part.status_code == 206 and part.content == data[100:]
        assert part.headers["Content-Range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
        beyond = http.get(
            f"/{TINY_MODEL}/resolve/main/model.safetensors",
            headers={"Range": f"bytes={len(data)}-"},
            follow_redirects=True,
        )
        assert beyond.status_code == 416
        config = http.get(f"/{TINY_MODEL}/resolve/main/config.json")
        assert config.status_code == 200 and "X-Linked-Size" not in config.headers
        missing = http.get(f"/{TINY_MODEL}/resolve/main/nope.json")
        assert (missing.status_code, missing.headers["X-Error-Code"]) == (404, "EntryNotFound")
        assert hub.bytes_sent("model.safetensors") == len(data) - 100


@pytest.mark.parametrize(("token", "status"), [(None, 401), ("hf_wrong", 403), (DEMO_TOKEN, 200)])
def test_gated_files_need_the_token(token: str | None, status: int) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with default_hub() as hub, httpx2.Client(base_url=hub.url) as http:
        assert http.get(f"/api/models/{TINY_GATED}").json()["gated"] == "manual"  # info is public
        response = http.get(f"/{TINY_GATED}/resolve/main/config.json", headers=headers)
        assert response.status_code == status
        if status != 200:
            assert response.headers["X-Error-Code"] == "GatedRepo"


def test_faults_hit_only_as_often_as_asked() -> None:
    with FakeHub() as hub, httpx2.Client(base_url=hub.url) as http:
        sha = hub.add_repo("a/b", {"x.bin": b"abcdef"})
        hub.corrupt("x.bin", times=1)
        hub.fail(503, path="x.bin", times=1, api=False)
        url = f"/a/b/resolve/{sha}/x.bin"
        # One fault per request, in the order they were injected.
        assert http.get(url, follow_redirects=True).content == b"\x9ebcdef"
        assert http.get(url, follow_redirects=True).status_code == 503
        assert http.get(url, follow_redirects=True).content == b"abcdef"
        assert http.get("/api/models/a/b").json()["sha"] == sha
