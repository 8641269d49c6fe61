"""Fetching one file of a snapshot: resumable, stall-aware, verified, and in place only when whole.

Bytes go to <file>.part; a later attempt (or a later run, after the pod was killed) continues it with an HTTP
Range request. The sha256 the hub lists for LFS files is checked before the .part is renamed into place,
so a file under its own name is always complete and correct.
"""

import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
from huggingface_hub import hf_raise_for_status

from moorage.api.resolved import HubFile
from moorage.hub.errors import ChecksumMismatchError, DownloadFailedError, HubError
from moorage.hub.progress import Progress
from moorage.hub.remote import Backoff, Target, translate
from moorage.hub.snapshot import part_path

log = logging.getLogger(__name__)

HASH_BLOCK = 8 * 1024 * 1024


@dataclass(frozen=True)
class Policy:
    backoff: Backoff = field(default_factory=lambda: Backoff(attempts=5, base=2.0, cap=60.0))
    """Tries per file when the network fails (stalls, cut connections, 5xx)."""
    checksum_attempts: int = 2
    """A corrupt download may be a flaky proxy: one fresh try, then it is the hub's content that is wrong."""
    stall_seconds: float = 60.0
    """No byte for this long aborts the attempt."""
    connect_seconds: float = 30.0


class Cancelled(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Another file failed for good; this one stops so the pull can report."""


class _Retry(Exception):  # noqa: N818 - a control-flow signal, not an error
    """This attempt failed in a way another attempt may not."""

    def __init__(self, why: str, *, backoff: bool = True) -> None:
        super().__init__(why)
        self.why, self.backoff = why, backoff


def client(policy: Policy) -> httpx2.Client:
    """One client for the whole pull (connection reuse); redirects to the CDN drop the Authorization header
    because they leave the hub's origin."""
    timeout = httpx2.Timeout(
        connect=policy.connect_seconds, read=policy.stall_seconds, write=policy.stall_seconds, pool=None
    )
    return httpx2.Client(timeout=timeout, follow_redirects=True, headers={"User-Agent": "moorage-pull"})


@dataclass
class Transfer:
    """One file: where it comes from and where it goes."""

    http: httpx2.Client
    url: str
    headers: dict[str, str]
    file: HubFile
    path: Path
    target: Target
    policy: Policy
    progress: Progress
    stop: threading.Event
    checksum_failures: int = 0

    def run(self) -> None:
        """Fetches until the file is in place; raises a HubError when it cannot be."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        delays = self.policy.backoff.delays()
        failures = 0
        while True:
            if self.stop.is_set():
                raise Cancelled
            try:
                self._attempt()
                self.progress.file_done()
                return
            except _Retry as retry:
                if not retry.backoff:
                    continue
                if failures == len(delays):
                    why = f"{self.file.path}: {retry.why} ({failures + 1} tries)"
                    raise DownloadFailedError(why) from None
                log.warning("pull: %s: %s; retrying in %.0fs", self.file.path, retry.why, delays[failures])
                self.stop.wait(delays[failures])
                failures += 1

    def _attempt(self) -> None:
        part = part_path(self.path)
        offset = part.stat().st_size if part.exists() else 0
        if offset > self.file.size:
            self._discard(part, self.file.size)
            offset = 0
        digest = _hash_of(part) if offset and self.file.sha256 else hashlib.sha256()
        if offset < self.file.size or not part.exists():
            offset = self._download(part, offset, digest)
        if offset < self.file.size:
            raise _Retry(f"connection closed at {offset} of {self.file.size} bytes")
        self._verify(part, digest)
        os.replace(part, self.path)

    def _download(self, part: Path, offset: int, digest: "hashlib._Hash") -> int:
        headers = dict(self.headers)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            with self.http.stream("GET", self.url, headers=headers) as response:
                if response.status_code == 416:
                    self._discard(part, offset)
                    raise _Retry("the hub refused to resume, starting over", backoff=False)
                if response.status_code >= 400:
                    response.read()
                    self._raise_for(response)
                if offset and response.status_code != 206:
                    # The server ignored the Range header: what comes is the whole file.
                    self._discard(part, offset)
                    offset, digest = 0, hashlib.sha256()
                return self._stream(response, part, offset, digest)
        except httpx2.ReadTimeout:
            raise _Retry(f"stalled: no bytes for {self.policy.stall_seconds:g}s") from None
        except httpx2.TransportError as e:
            raise _Retry(f"{type(e).__name__} from the hub") from None

    def _stream(self, response: httpx2.Response, part: Path, offset: int, digest: "hashlib._Hash") -> int:
        with part.open("ab" if offset else "wb") as out:
            try:
                # No chunk_size: httpx would hold bytes back to fill a chunk, and lose them when the
                # connection drops; as received, everything that arrived is on disk for the next attempt.
                for chunk in response.iter_bytes():
                    if self.stop.is_set():
                        raise Cancelled
                    if offset + len(chunk) > self.file.size:
                        self._discard(part, offset)
                        raise _Retry("the hub sent more bytes than the file has")
                    out.write(chunk)
                    digest.update(chunk)
                    offset += len(chunk)
                    self.progress.add(len(chunk))
            finally:
                out.flush()
                os.fsync(out.fileno())
        return offset

    def _raise_for(self, response: httpx2.Response) -> None:
        try:
            hf_raise_for_status(response)
        except Exception as e:
            error = translate(e, self.target)
            if error.retryable:
                raise _Retry(error.message) from None
            raise error from None
        raise HubError(f"{self.file.path}: unexpected HTTP {response.status_code}")

    def _verify(self, part: Path, digest: "hashlib._Hash") -> None:
        if self.file.sha256 is None or digest.hexdigest() == self.file.sha256:
            return
        self._discard(part, self.file.size)
        self.checksum_failures += 1
        if self.checksum_failures >= self.policy.checksum_attempts:
            raise ChecksumMismatchError(
                f"{self.file.path}: sha256 {digest.hexdigest()} differs from the hub's {self.file.sha256}, "
                f"{self.checksum_failures} downloads in a row; the upstream file is corrupt"
            )
        raise _Retry("checksum mismatch, downloading again", backoff=False)

    def _discard(self, part: Path, counted: int) -> None:
        part.unlink(missing_ok=True)
        self.progress.rewind(counted)


def _hash_of(path: Path) -> "hashlib._Hash":
    """The sha256 state after a .part's bytes, to go on hashing where a resumed download continues."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest
