"""Download progress as one log line every few seconds: what kubectl logs shows while a pull runs."""

import threading
import time
from collections.abc import Callable


class Progress:
    """Thread-safe byte counter that reports at most once per interval (and never from two threads)."""

    def __init__(
        self,
        total: int,
        done: int,
        files: int,
        *,
        interval: float,
        say: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.done, self.files = total, done, files
        self.files_done = 0
        self.transferred = 0
        """Bytes fetched by this run (done also counts what earlier runs left on disk)."""
        self._interval, self._say, self._clock = interval, say, clock
        self._start = self._last = clock()
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
            self.transferred += n
            now = self._clock()
            if now - self._last < self._interval:
                return
            self._last = now
            line = self.line(now)
        self._say(line)

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1

    def rewind(self, n: int) -> None:
        """A discarded partial download: its bytes no longer count as done."""
        with self._lock:
            self.done -= n

    @property
    def seconds(self) -> float:
        return self._clock() - self._start

    def line(self, now: float | None = None) -> str:
        elapsed = max((now if now is not None else self._clock()) - self._start, 1e-9)
        percent = 100.0 * self.done / self.total if self.total else 100.0
        return (
            f"pull: {_size(self.done)} / {_size(self.total)} ({percent:.1f}%), "
            f"{_size(self.transferred / elapsed)}/s, {self.files_done}/{self.files} files"
        )


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")
