"""hf:// source URIs and the hub URLs derived from them."""

import os
import re
from urllib.parse import quote

from moorage.api.resolved import RepoType
from moorage.hub.errors import InvalidSourceError

DEFAULT_ENDPOINT = "https://huggingface.co"
SCHEME = "hf://"
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
REPO_ID = re.compile(rf"{NAME}(?:/{NAME})?")
FULL_SHA = re.compile(r"[0-9a-f]{40}")


def parse_uri(uri: str) -> tuple[str, RepoType]:
    """hf://org/name → (org/name, model); hf://datasets/org/name → (org/name, dataset)."""
    if not uri.startswith(SCHEME):
        raise InvalidSourceError(
            f"{uri!r} is not a hub source: expected hf://<org>/<name> or hf://datasets/<org>/<name>"
        )
    path = uri.removeprefix(SCHEME).strip("/")
    repo_type: RepoType = "model"
    for prefix, kind in (("datasets/", "dataset"), ("models/", "model")):
        if path.startswith(prefix) and path.count("/") >= 2:
            path, repo_type = path.removeprefix(prefix), kind  # type: ignore[assignment]
    if not REPO_ID.fullmatch(path) or ".." in path:
        raise InvalidSourceError(f"{uri!r} does not name a repository: expected hf://<org>/<name>")
    return path, repo_type


def endpoint_or_default(endpoint: str | None) -> str:
    """The explicit endpoint, else HF_ENDPOINT as the environment has it now, else huggingface.co."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def is_full_sha(revision: str) -> bool:
    return FULL_SHA.fullmatch(revision) is not None


def file_url(endpoint: str, repo_id: str, repo_type: RepoType, revision: str, path: str) -> str:
    """{endpoint}/{repo}/resolve/{revision}/{path}, under /datasets for datasets, as the hub serves files."""
    prefix = "/datasets" if repo_type == "dataset" else ""
    return f"{endpoint}{prefix}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"
