"""Turns a dataset URI into a path on this pod: the operator has already put the data there."""

import json
import re
from pathlib import Path, PurePosixPath

from moorage.api.layout import COMPLETE_MARKER, DATASETS_DIR, snapshot_dir
from moorage.jobs.finetune.errors import DATASET_NOT_FOUND, FineTuneError

HF_DATASET_PREFIX = "hf://datasets/"
PVC_PREFIX = "pvc://"
PVC_DIR = "pvc"
"""Claims are mounted at <data-root>/pvc/<claim>."""

_SHA = re.compile(r"^[0-9a-f]{40}$")


def resolve_dataset(uri: str, revision: str, data_root: Path) -> Path:
    """The local file or directory holding the dataset that `uri` names."""
    if uri.startswith(HF_DATASET_PREFIX):
        return _hf_snapshot(uri.removeprefix(HF_DATASET_PREFIX), revision, data_root)
    if uri.startswith(PVC_PREFIX):
        return _on_claim(uri, data_root)
    path = Path(uri)
    if not path.exists():
        raise FineTuneError(DATASET_NOT_FOUND, f"dataset {uri}: no such file or directory")
    return path


def _hf_snapshot(repo_id: str, revision: str, data_root: Path) -> Path:
    if _SHA.match(revision):
        path = Path(snapshot_dir(PurePosixPath(data_root), repo_id, "dataset", revision))
        if (path / COMPLETE_MARKER).is_file():
            return path
        raise FineTuneError(
            DATASET_NOT_FOUND, f"dataset hf://datasets/{repo_id}@{revision}: no complete snapshot at {path}"
        )
    repo_dir = data_root / DATASETS_DIR / repo_id
    complete = [d for d in repo_dir.glob("*") if (d / COMPLETE_MARKER).is_file()] if repo_dir.is_dir() else []
    if not complete:
        raise FineTuneError(
            DATASET_NOT_FOUND,
            f"dataset hf://datasets/{repo_id}@{revision}: no complete snapshot under {repo_dir}",
        )
    # Several complete snapshots mean older revisions were pulled before: prefer one whose marker says
    # it is this revision, else the newest.
    return max(
        complete, key=lambda d: (_marker_revision(d) == revision, (d / COMPLETE_MARKER).stat().st_mtime)
    )


def _marker_revision(snapshot: Path) -> str | None:
    try:
        content = json.loads((snapshot / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    revision = content.get("revision") if isinstance(content, dict) else None
    return revision if isinstance(revision, str) else None


def _on_claim(uri: str, data_root: Path) -> Path:
    claim, _, inner = uri.removeprefix(PVC_PREFIX).partition("/")
    claim_root = (data_root / PVC_DIR / claim).resolve()
    path = (claim_root / inner).resolve()
    if not claim or not inner or not path.is_relative_to(claim_root):
        raise FineTuneError(
            DATASET_NOT_FOUND, f"dataset {uri}: expected pvc://<claim>/<path inside the claim>"
        )
    if not path.exists():
        raise FineTuneError(
            DATASET_NOT_FOUND, f"dataset {uri}: {path} does not exist (is the claim mounted?)"
        )
    return path
