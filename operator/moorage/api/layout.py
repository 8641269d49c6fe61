"""Where things live on the weights volume: the one convention the operator's pods and programs share."""

import hashlib
import json
from pathlib import PurePosixPath

from moorage.api.resolved import RepoType

WEIGHTS_MOUNT = PurePosixPath("/weights")
"""Where every pod mounts the weights volume."""
CLAIMS_MOUNT = PurePosixPath("/claims")
"""Where the adapters Job mounts the user's claims of pvc:// adapters, read-only: CLAIMS_MOUNT/<claim>."""

MODELS_DIR = "models"
DATASETS_DIR = "datasets"
ADAPTERS_DIR = "adapters"
SERVED_ADAPTERS_DIR = "served-adapters"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
"""What a LoRA repository of spec.adapters must hold (PEFT's format); a pickled adapter_model.bin is not
loaded."""

COMPLETE_MARKER = ".moorage-complete.json"
"""Written last into a finished snapshot or adapter directory; its presence means the content is whole."""


def snapshot_dir(root: PurePosixPath, repo_id: str, repo_type: RepoType, sha: str) -> PurePosixPath:
    """root/models/<org>/<name>/<sha> for a model, root/datasets/<org>/<name>/<sha> for a dataset."""
    kind = MODELS_DIR if repo_type == "model" else DATASETS_DIR
    return root / kind / repo_id / sha


def adapter_dir(root: PurePosixPath, adapter_id: str) -> PurePosixPath:
    return root / ADAPTERS_DIR / adapter_id


def adapter_content_dir(root: PurePosixPath, digest: str) -> PurePosixPath:
    """root/adapters/sha256-<digest>: a pvc:// adapter copied onto the volume, addressed by its files' content
    (the same bytes from any claim, of any model, are one directory)."""
    return root / ADAPTERS_DIR / f"sha256-{digest}"


def served_adapters_dir(root: PurePosixPath, model_uid: str) -> PurePosixPath:
    """root/served-adapters/<model uid>: one directory per spec.adapters entry, named as served, which vLLM's
    filesystem LoRA resolver loads from on the first request for that name."""
    return root / SERVED_ADAPTERS_DIR / model_uid


def content_hash(*parts: object, length: int = 10) -> str:
    """A short stable hash of JSON-serialisable parts, for content-addressed names."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
