"""Where each dataset URI form is found on the pod (no training stack needed)."""

import os
from pathlib import Path

import pytest

from moorage.api.layout import COMPLETE_MARKER
from moorage.jobs.finetune.errors import FineTuneError
from moorage.jobs.finetune.sources import resolve_dataset

SHA_A = "a" * 40
SHA_B = "b" * 40


def _snapshot(root: Path, sha: str, marker: str | None = "{}", age: int = 0) -> Path:
    path = root / "datasets" / "acme" / "chats" / sha
    path.mkdir(parents=True)
    if marker is not None:
        (path / COMPLETE_MARKER).write_text(marker)
        stamp = 1_700_000_000 - age
        os.utime(path / COMPLETE_MARKER, (stamp, stamp))
    return path


def test_a_local_path_is_used_as_it_is(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    assert resolve_dataset(str(data), "main", tmp_path / "root") == data


def test_a_pvc_uri_is_looked_up_where_the_claim_is_mounted(tmp_path: Path) -> None:
    data = tmp_path / "pvc" / "team-data" / "sets" / "train.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text("{}\n")
    assert resolve_dataset("pvc://team-data/sets/train.jsonl", "main", tmp_path) == data


def test_a_pvc_uri_cannot_leave_its_claim(tmp_path: Path) -> None:
    (tmp_path / "pvc" / "other").mkdir(parents=True)
    (tmp_path / "pvc" / "mine").mkdir(parents=True)
    with pytest.raises(FineTuneError, match="inside the claim"):
        resolve_dataset("pvc://mine/../other", "main", tmp_path)


def test_an_unmounted_claim_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FineTuneError, match="is the claim mounted") as error:
        resolve_dataset("pvc://team-data/train.jsonl", "main", tmp_path)
    assert error.value.reason == "DatasetNotFound"


def test_a_sha_revision_names_its_snapshot(tmp_path: Path) -> None:
    _snapshot(tmp_path, SHA_A)
    wanted = _snapshot(tmp_path, SHA_B)
    assert resolve_dataset("hf://datasets/acme/chats", SHA_B, tmp_path) == wanted


def test_a_branch_picks_a_complete_snapshot(tmp_path: Path) -> None:
    _snapshot(tmp_path, SHA_A, marker=None)  # a pull that never finished
    complete = _snapshot(tmp_path, SHA_B)
    assert resolve_dataset("hf://datasets/acme/chats", "main", tmp_path) == complete


def test_a_branch_prefers_the_snapshot_marked_with_it_then_the_newest(tmp_path: Path) -> None:
    tagged = _snapshot(tmp_path, SHA_A, marker='{"revision": "v1"}', age=100)
    newest = _snapshot(tmp_path, SHA_B, marker="{}", age=0)
    assert resolve_dataset("hf://datasets/acme/chats", "v1", tmp_path) == tagged
    assert resolve_dataset("hf://datasets/acme/chats", "main", tmp_path) == newest


def test_no_complete_snapshot_is_an_error(tmp_path: Path) -> None:
    _snapshot(tmp_path, SHA_A, marker=None)
    with pytest.raises(FineTuneError, match="no complete snapshot") as error:
        resolve_dataset("hf://datasets/acme/chats", "main", tmp_path)
    assert error.value.reason == "DatasetNotFound"
    with pytest.raises(FineTuneError, match="no complete snapshot"):
        resolve_dataset("hf://datasets/acme/chats", SHA_A, tmp_path)
