"""Fetching the files of a snapshot: many connections at once, resumable by range, verified, and a file in
place only when whole.

Workers, one thread and one connection each, take work in the order of the files, smallest first:
  - a file nobody has opened: open its .part (with what an earlier run left, snapshot.read_state) and fetch
    its first missing range from the hub URL, following the hub's redirect to its CDN; the final URL is kept
    for the file's other ranges, so there is one hub request per file, as with a plain download;
  - a missing range of an open file (ranges.Ranges);
  - nothing left to claim: the second half of the biggest range in flight.
So small files go many at once, one connection each, and a big one gets every connection that is free.
Bytes are written at their offset of the .part with os.pwrite, a buffer (1 MiB) at a time.

A thread per LFS file hashes its .part in order as the written prefix grows, reading back from the page cache:
sha256 runs beside the transfer instead of after it. A checkpoint thread flushes each open .part and then
saves its state every few seconds: a killed pull resumes from there, and the fsync before the rename has
little left to write. A corrupt file is fetched once more in full (a flaky proxy), then reported.
"""

import hashlib
import http.client
import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import httpx2
from huggingface_hub import hf_raise_for_status

from moorage.api.resolved import HubFile
from moorage.hub import snapshot, wire
from moorage.hub.errors import ChecksumMismatchError, DownloadFailedError, HubError
from moorage.hub.progress import Progress
from moorage.hub.ranges import Range, Ranges
from moorage.hub.remote import Backoff, Target, translate

log = logging.getLogger(__name__)

MiB = 1024 * 1024
HASH_BLOCK = 8 * MiB
USER_AGENT = "moorage-pull"
CDN_REFUSALS = frozenset({401, 403, 404, 410})
"""From the CDN, not the hub: its signed URL likely expired during a long pull; the hub gives a new one."""


@dataclass(frozen=True)
class Policy:
    backoff: Backoff = field(default_factory=lambda: Backoff(attempts=5, base=2.0, cap=60.0))
    """Tries per range when the network fails (stalls, cut connections, 5xx)."""
    checksum_attempts: int = 2
    """A corrupt download may be a flaky proxy: one fresh try, then it is the hub's content that is wrong."""
    stall_seconds: float = 60.0
    """No byte for this long aborts the attempt."""
    connect_seconds: float = 30.0
    connections: int = 16
    """Requests in flight at once, over all files."""
    min_range: int = 8 * MiB
    """A big file is cut into four ranges per connection, none smaller than this (each is a request)...
    Connections take them in order, so the written prefix, which is what can be hashed, trails the newest
    bytes by about connections * range size: hashing keeps up with the transfer instead of following it."""
    max_range: int = 32 * MiB
    """...nor bigger than this: the hashing's lag, what a crash loses, the last range's tail stay small."""
    buffer: int = 1 * MiB
    """Read from a connection and written to the disk at once."""
    checkpoint_seconds: float = 2.0

    def range_size(self, size: int) -> int:
        return max(self.min_range, min(self.max_range, -(-size // (self.connections * 4))))

    @property
    def smallest_split(self) -> int:
        """An idle connection takes half of a range in flight only if that half is at least this big."""
        return max(self.min_range // 8, self.buffer)


class Cancelled(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Another file failed for good; this one stops so the pull can report."""


class _Retry(Exception):  # noqa: N818 - a control-flow signal, not an error
    """This attempt failed in a way another attempt may not."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class Stage(Enum):
    NEW = "new"
    OPENING = "opening"
    """A worker opened it and asks the hub where its bytes are; the others wait for the answer."""
    ACTIVE = "active"
    FINISHING = "finishing"
    """Every byte is written; a worker verifies it and puts it in place."""
    DONE = "done"


@dataclass(eq=False)
class Job:
    """One file of the snapshot and how far it got; guarded by the pull's lock."""

    file: HubFile
    path: Path
    url: str
    written: threading.Condition
    """Notified as bytes land, for the hasher."""
    stage: Stage = Stage.NEW
    location: str | None = None
    """Where the hub redirected to."""
    ranges: Ranges = field(default_factory=lambda: Ranges(0, [], 1))
    fd: int | None = None
    hasher: "Hasher | None" = None
    checksum_failures: int = 0
    io: threading.Lock = field(default_factory=threading.Lock)
    """Held while the .part is flushed, closed or moved: the checkpoint thread and the finishing worker."""


class Hasher(threading.Thread):
    """The sha256 of a .part, computed in order as far as it is written."""

    def __init__(self, job: Job, fd: int, stop: threading.Event) -> None:
        super().__init__(name=f"hash {job.file.path}", daemon=True)
        self._job, self._fd, self._halt = job, fd, stop
        self.hexdigest: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._hash()
        except BaseException as e:  # re-raised in the worker that finishes the file
            self.error = e

    def _hash(self) -> None:
        job, digest, pos = self._job, hashlib.sha256(), 0
        while pos < job.file.size:
            with job.written:
                while (limit := job.ranges.prefix()) <= pos and not self._halt.is_set():
                    job.written.wait(1.0)
            if self._halt.is_set():
                return
            while pos < limit and not self._halt.is_set():
                block = os.pread(self._fd, min(HASH_BLOCK, limit - pos), pos)
                if not block:
                    raise OSError(f"{job.path.name}.part is shorter than written")
                digest.update(block)
                pos += len(block)
        self.hexdigest = digest.hexdigest()


class Pull:
    """Fetches files into place; raises a HubError when one cannot be."""

    def __init__(
        self,
        files: list[tuple[HubFile, Path, str]],
        headers: dict[str, str],
        target: Target,
        policy: Policy,
        progress: Progress,
    ) -> None:
        """files: each file with where it goes and its hub URL; headers: for the hub (a token)."""
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._stop = threading.Event()
        # Small files first: one request each, they go at once at the start instead of trailing the big ones
        # on a single fresh connection each (measured: half a second more per pull across 40 ms of RTT).
        by_size = sorted(files, key=lambda entry: entry[0].size)
        self.jobs = [Job(f, path, url, threading.Condition(self._lock)) for f, path, url in by_size]
        self._headers = {**headers, "User-Agent": USER_AGENT}
        self._target, self._policy, self._progress = target, policy, progress

    def run(self) -> None:
        workers = max(1, self._policy.connections)
        checkpoints = threading.Thread(target=self._checkpoints, name="checkpoints", daemon=True)
        checkpoints.start()
        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="pull") as pool:
                futures = [pool.submit(self._worker) for _ in range(workers)]
                finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
                failures = [e for f in finished if (e := f.exception()) is not None]
                if failures:
                    self._halt()
                    wait(futures)
                    raise next((e for e in failures if not isinstance(e, Cancelled)), failures[0])
        finally:
            self._halt()
            checkpoints.join()
            for job in self.jobs:
                if job.hasher is not None:
                    job.hasher.join()
                self._save(job, close=True)

    def _halt(self) -> None:
        self._stop.set()
        with self._lock:
            self._work.notify_all()
            for job in self.jobs:
                job.written.notify_all()

    # Scheduling

    def _worker(self) -> None:
        buffer = memoryview(bytearray(self._policy.buffer))
        with wire.Session(
            connect_seconds=self._policy.connect_seconds, read_seconds=self._policy.stall_seconds
        ) as session:
            while (work := self._next()) is not None:
                job, claimed = work
                piece = claimed if claimed is not None else self._open(job)
                if piece is not None:
                    self._fetch(session, job, piece, buffer)
                if self._release(job, piece):
                    self._finish(job)

    def _next(self) -> tuple[Job, Range | None] | None:
        """Work for a worker: a file to open (no range yet) or a range; None when every file is done."""
        with self._lock:
            while True:
                if self._stop.is_set():
                    raise Cancelled
                if all(job.stage is Stage.DONE for job in self.jobs):
                    return None
                for job in self.jobs:
                    if job.stage is Stage.NEW:
                        job.stage = Stage.OPENING
                        return job, None
                    if job.stage is Stage.ACTIVE and (piece := job.ranges.claim()) is not None:
                        return job, piece
                active = [job for job in self.jobs if job.stage is Stage.ACTIVE]
                victim = max(active, key=lambda job: job.ranges.steal_size(), default=None)
                if victim is not None and (piece := victim.ranges.steal(self._policy.smallest_split)):
                    return victim, piece
                # Woken when a file opens, finishes or starts over; the timeout is only a safety net.
                self._work.wait(1.0)

    def _open(self, job: Job) -> Range | None:
        """Opens the .part at its full size (sparse: posix_fallocate would write zeros on NFS) with what an
        earlier run left in it, and claims its first missing range (None: nothing is missing)."""
        job.path.parent.mkdir(parents=True, exist_ok=True)
        part = snapshot.part_path(job.path)
        size = job.file.size
        done = snapshot.read_state(job.path, size) if part.exists() else []
        fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
        os.ftruncate(fd, size)
        with self._lock:
            job.fd, job.ranges = fd, Ranges(size, done, self._policy.range_size(size))
            if job.file.sha256:
                job.hasher = Hasher(job, fd, self._stop)
                job.hasher.start()
            return job.ranges.claim()

    def _release(self, job: Job, piece: Range | None) -> bool:
        """The range is written; True when it was the file's last one and the caller finishes the file."""
        with self._lock:
            if piece is not None:
                piece.owned = False
            if job.stage in (Stage.OPENING, Stage.ACTIVE) and job.ranges.complete:
                job.stage = Stage.FINISHING
                return True
            return False

    # One range

    def _fetch(self, session: wire.Session, job: Job, piece: Range, buffer: memoryview) -> None:
        delays = self._policy.backoff.delays()
        while True:
            try:
                self._attempt(session, job, piece, buffer)
                return
            except _Retry as retry:
                if piece.failures == len(delays):
                    why = f"{job.file.path}: {retry.why} ({piece.failures + 1} tries)"
                    raise DownloadFailedError(why) from None
                log.warning(
                    "pull: %s: %s; retrying in %.0fs", job.file.path, retry.why, delays[piece.failures]
                )
                if self._stop.wait(delays[piece.failures]):
                    raise Cancelled from None
                piece.failures += 1

    def _attempt(self, session: wire.Session, job: Job, piece: Range, buffer: memoryview) -> None:
        with self._lock:
            start, end, url = piece.pos, piece.end, job.location or job.url
        if start >= end:
            return
        headers = dict(self._headers)
        if (start, end) != (0, job.file.size):
            headers["Range"] = f"bytes={start}-{end - 1}"
        with ExitStack() as stack:
            with self._network():
                response = stack.enter_context(session.get(url, headers))
            self._accept(job, response, start)
            # A server that ignores Range sends the file from its start: what is before ours is dropped.
            self._receive(job, piece, response, buffer, skip=start if response.status == 200 else 0)

    def _accept(self, job: Job, response: wire.Response, start: int) -> None:
        if response.status >= 300:
            self._refuse(job, response)
        if response.status == 206 and not (response.header("Content-Range") or "").startswith(
            f"bytes {start}-"
        ):
            raise _Retry(f"asked for bytes from {start}, got {response.header('Content-Range')}")
        with self._lock:
            if job.location is None:
                job.location = response.url
            if job.stage is Stage.OPENING:
                job.stage = Stage.ACTIVE
                self._work.notify_all()

    def _receive(
        self, job: Job, piece: Range, response: wire.Response, buffer: memoryview, *, skip: int
    ) -> None:
        while skip > 0:
            with self._network():
                n = response.readinto(buffer[: min(skip, len(buffer))])
            if not n:
                raise _Retry("connection closed")
            skip -= n
        fd = job.fd
        assert fd is not None
        while True:
            with self._lock:
                wanted = min(len(buffer), piece.end - piece.pos)  # the end moves when another worker splits
            if wanted <= 0:
                return
            if self._stop.is_set():
                raise Cancelled
            with self._network():
                n = response.readinto(buffer[:wanted])
            with self._lock:
                n, offset = min(n, piece.end - piece.pos), piece.pos
                piece.reserved = offset + n
            if n <= 0:
                raise _Retry(f"connection closed at {offset} of {job.file.size} bytes")
            _write(fd, buffer[:n], offset)
            with self._lock:
                piece.pos += n
                job.written.notify()
            self._progress.add(n)

    @contextmanager
    def _network(self) -> Iterator[None]:
        """Network failures as retries; the disk's errors (ENOSPC...) are not caught."""
        try:
            yield
        except TimeoutError:
            raise _Retry(f"stalled: no bytes for {self._policy.stall_seconds:g}s") from None
        except (OSError, http.client.HTTPException) as e:
            raise _Retry(f"{type(e).__name__} from the hub") from None

    def _refuse(self, job: Job, response: wire.Response) -> None:
        with self._network():
            body = response.read_error()
        if response.url != job.url and response.status in CDN_REFUSALS:
            with self._lock:
                if job.location == response.url:
                    job.location = None
            raise _Retry(f"the file server answered HTTP {response.status}, asking the hub again")
        if response.status == 416:
            raise _Retry("the server refused the range: the file is shorter than the hub lists")
        request = httpx2.Request("GET", response.url)
        headers = list(response.raw.getheaders())
        try:
            hf_raise_for_status(
                httpx2.Response(response.status, headers=headers, content=body, request=request)
            )
        except Exception as e:
            error = translate(e, self._target)
            if error.retryable:
                raise _Retry(error.message) from None
            raise error from None
        raise HubError(f"{job.file.path}: unexpected HTTP {response.status}")

    # A whole file

    def _finish(self, job: Job) -> None:
        """Verifies the file and moves it into place, or starts it over."""
        hasher = job.hasher
        if hasher is not None:
            hasher.join()
            if hasher.error is not None:
                raise hasher.error
            if hasher.hexdigest is None:
                raise Cancelled
            if hasher.hexdigest != job.file.sha256:
                self._reject(job, hasher.hexdigest)
                return
        part = snapshot.part_path(job.path)
        with job.io:
            assert job.fd is not None
            os.fsync(job.fd)
            os.close(job.fd)
            job.fd = None
            os.replace(part, job.path)
            snapshot.state_path(job.path).unlink(missing_ok=True)
        self._progress.file_done()
        with self._lock:
            job.stage = Stage.DONE
            self._work.notify_all()

    def _reject(self, job: Job, digest: str) -> None:
        with job.io:
            assert job.fd is not None
            os.close(job.fd)
            job.fd = None
            snapshot.part_path(job.path).unlink(missing_ok=True)
            snapshot.state_path(job.path).unlink(missing_ok=True)
        self._progress.rewind(job.file.size)
        job.checksum_failures += 1
        if job.checksum_failures >= self._policy.checksum_attempts:
            raise ChecksumMismatchError(
                f"{job.file.path}: sha256 {digest} differs from the hub's {job.file.sha256}, "
                f"{job.checksum_failures} downloads in a row; the upstream file is corrupt"
            )
        log.warning("pull: %s: checksum mismatch, downloading again", job.file.path)
        with self._lock:
            job.stage, job.location, job.hasher = Stage.NEW, None, None
            self._work.notify_all()

    # Checkpoints

    def _checkpoints(self) -> None:
        while not self._stop.wait(self._policy.checkpoint_seconds):
            for job in self.jobs:
                try:
                    self._save(job)
                except OSError as e:  # the next checkpoint may do; the transfer itself goes on
                    log.warning("pull: %s: cannot save progress: %s", job.file.path, e.strerror)

    def _save(self, job: Job, *, close: bool = False) -> None:
        """Flushes the .part, then saves what it holds: the state never lists bytes still in memory only."""
        with job.io:
            if job.fd is None:
                return
            with self._lock:
                done = job.ranges.done()
            os.fdatasync(job.fd)
            snapshot.write_state(job.path, job.file.size, done)
            if close:
                os.close(job.fd)
                job.fd = None


def _write(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n
