"""Calls to the hub: transient failures retried with backoff, every failure turned into a HubError."""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx2
from huggingface_hub import errors as hf

from moorage.hub.errors import (
    TOKEN_HINT,
    AccessDeniedError,
    HubError,
    HubUnreachableError,
    RepoNotFoundError,
    RevisionNotFoundError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Backoff:
    """attempts tries in all, sleeping base, 2*base, 4*base... (capped) in between."""

    attempts: int = 4
    base: float = 1.0
    cap: float = 30.0

    def delays(self) -> list[float]:
        return [min(self.cap, self.base * 2**i) for i in range(self.attempts - 1)]


DEFAULT_BACKOFF = Backoff()


@dataclass(frozen=True)
class Target:
    """What a call is about, for the messages."""

    uri: str
    revision: str
    has_token: bool


def call(fn: Callable[[], T], target: Target, backoff: Backoff = DEFAULT_BACKOFF) -> T:
    """fn(), retried while the hub is unreachable or overloaded, with its failures as HubErrors."""
    delays = backoff.delays()
    for attempt in range(backoff.attempts):
        try:
            return fn()
        except Exception as e:
            error = translate(e, target)
            if not error.retryable or attempt == len(delays):
                raise error from None
            log.warning(
                "hub: %s; retrying in %.1fs (attempt %d of %d)",
                error.message,
                delays[attempt],
                attempt + 1,
                backoff.attempts,
            )
            time.sleep(delays[attempt])
    raise AssertionError("unreachable")


def translate(error: Exception, target: Target) -> HubError:
    """The HubError for an exception of huggingface_hub or httpx2. Unknown exceptions propagate as they are.

    huggingface_hub's messages hold URLs and request ids, not the token, but they are still not copied: the
    messages here are built from the target alone.
    """
    if isinstance(error, HubError):
        return error
    source = f"{target.uri}"
    if isinstance(error, hf.GatedRepoError):
        return AccessDeniedError(
            f"{source} is gated and "
            + (
                "the token has not been granted access: accept its terms on the hub with the token's account"
                if target.has_token
                else f"no token was given: {TOKEN_HINT}"
            )
        )
    if isinstance(error, hf.RevisionNotFoundError):
        return RevisionNotFoundError(f"{source} has no branch, tag or commit {target.revision!r}")
    if isinstance(error, hf.RepositoryNotFoundError):
        hint = "check the name" + ("" if target.has_token else f"; if it is private, {TOKEN_HINT}")
        return RepoNotFoundError(f"{source} does not exist or is private: {hint}")
    if isinstance(error, hf.RemoteEntryNotFoundError):
        return RepoNotFoundError(f"a file of {source} at {target.revision!r} has disappeared from the hub")
    if isinstance(error, hf.HfHubHTTPError):
        status = error.response.status_code if error.response is not None else 0
        if status in (401, 403):
            return AccessDeniedError(f"the hub refused access to {source} (HTTP {status}): {TOKEN_HINT}")
        if status in TRANSIENT_STATUS:
            return HubUnreachableError(f"the hub answered HTTP {status} for {source}")
        return HubError(f"the hub answered HTTP {status} for {source}")
    if isinstance(error, hf.OfflineModeIsEnabled):
        return HubUnreachableError(f"cannot reach the hub for {source}: HF_HUB_OFFLINE is set")
    if isinstance(error, httpx2.TransportError):
        return HubUnreachableError(f"cannot reach the hub for {source}: {type(error).__name__}")
    raise error
