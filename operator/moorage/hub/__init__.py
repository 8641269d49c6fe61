"""The Hugging Face hub: resolving sources, sizing weights against GPUs, pulling snapshots.

resolve and check_trust load huggingface_hub, which takes half a second to import: they are imported on
first use so that `moorage pull` answers a cache hit without paying for it.
"""

import importlib
from typing import TYPE_CHECKING

from moorage.hub.errors import (
    AccessDeniedError,
    ChecksumMismatchError,
    DownloadFailedError,
    HubError,
    HubUnreachableError,
    InsufficientDiskError,
    InvalidSourceError,
    NoMatchingFilesError,
    PickleWeightsNotTrustedError,
    RemoteCodeNotTrustedError,
    RepoNotFoundError,
    RevisionNotFoundError,
)
from moorage.hub.uri import parse_uri

if TYPE_CHECKING:
    from moorage.hub.resolution import check_trust, resolve

LAZY = {"resolve": "moorage.hub.resolution", "check_trust": "moorage.hub.resolution"}


def __getattr__(name: str) -> object:
    if name in LAZY:
        value = getattr(importlib.import_module(LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AccessDeniedError",
    "ChecksumMismatchError",
    "DownloadFailedError",
    "HubError",
    "HubUnreachableError",
    "InsufficientDiskError",
    "InvalidSourceError",
    "NoMatchingFilesError",
    "PickleWeightsNotTrustedError",
    "RemoteCodeNotTrustedError",
    "RepoNotFoundError",
    "RevisionNotFoundError",
    "check_trust",
    "parse_uri",
    "resolve",
]
