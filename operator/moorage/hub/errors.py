"""What can go wrong between moorage and the hub, as the operator reports it.

Each error carries a CamelCase `reason` for a Kubernetes condition, a message written for the user, and
whether trying again later may help. Messages are built here from known facts, never by echoing a library's
exception text, so a token cannot slip into status, events or logs.
"""

from typing import ClassVar

TOKEN_HINT = "set spec.source.tokenSecretRef to a Secret holding a hub token that has access"  # noqa: S105


class HubError(Exception):
    reason: ClassVar[str] = "HubError"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidSourceError(HubError):
    reason = "InvalidSource"


class RepoNotFoundError(HubError):
    reason = "RepoNotFound"


class RevisionNotFoundError(HubError):
    reason = "RevisionNotFound"


class AccessDeniedError(HubError):
    """Gated or private, and no token or a token without access."""

    reason = "AccessDenied"


class AdapterIncompatibleError(HubError):
    """An adapter of spec.adapters that this base cannot serve (another base, too high a rank, not a LoRA)."""

    reason = "AdapterIncompatible"


class AdapterNotFoundError(HubError):
    """A pvc:// adapter whose directory (or one of its files) is not on its claim."""

    reason = "AdapterNotFound"


class NoMatchingFilesError(HubError):
    """The include patterns select nothing, or a model repository has no weights at all."""

    reason = "NoMatchingFiles"


class RemoteCodeNotTrustedError(HubError):
    reason = "RemoteCodeNotTrusted"


class PickleWeightsNotTrustedError(HubError):
    """Only .bin/.pt weights: loading a pickle can run arbitrary code, like remote code does."""

    reason = "PickleWeightsNotTrusted"


class HubUnreachableError(HubError):
    reason = "HubUnreachable"
    retryable = True


class ChecksumMismatchError(HubError):
    reason = "ChecksumMismatch"


class InsufficientDiskError(HubError):
    reason = "InsufficientDisk"


class DownloadFailedError(HubError):
    """A file could not be fetched after every retry (stalls, cut connections, 5xx)."""

    reason = "DownloadFailed"
    retryable = True


def redact(text: str, *secrets: str | None) -> str:
    """text with every secret replaced, for the few places that must show text from elsewhere."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
