"""Where things live on the weights volume: the one convention the operator's pods and programs share."""

import hashlib
import json
from pathlib import PurePosixPath

from moorage.api.resolved import RepoType

WEIGHTS_MOUNT = PurePosixPath("/weights")
"""Where every pod mounts the weights volume."""

MODELS_DIR = "models"
DATASETS_DIR = "datasets"
ADAPTERS_DIR = "adapters"

COMPLETE_MARKER = ".moorage-complete.json"
"""Written last into a finished snapshot or adapter directory; its presence means the content is whole."""


def snapshot_dir(root: PurePosixPath, repo_id: str, repo_type: RepoType, sha: str) -> PurePosixPath:
    """root/models/<org>/<name>/<sha> for a model, root/datasets/<org>/<name>/<sha> for a dataset."""
    kind = MODELS_DIR if repo_type == "model" else DATASETS_DIR
    return root / kind / repo_id / sha


def adapter_dir(root: PurePosixPath, adapter_id: str) -> PurePosixPath:
    return root / ADAPTERS_DIR / adapter_id


def content_hash(*parts: object, length: int = 10) -> str:
    """A short stable hash of JSON-serialisable parts, for content-addressed names."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
