"""The Hugging Face hub: resolving sources, sizing weights against GPUs, pulling snapshots."""

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
from moorage.hub.resolve import check_trust, resolve
from moorage.hub.uri import parse_uri

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
