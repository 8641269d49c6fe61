"""One worker per model: triggers coalesce, failures back off, work in flight is polled."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("moorage.queue")

Key = tuple[str, str]
Work = Callable[[str, str], Awaitable[float | None]]


@dataclass
class WorkQueue:
    """Runs `work(namespace, name)` for a model whenever something about it changed.

    Several triggers while a reconcile runs make one more reconcile, not several; a model is never
    reconciled twice at once. `work` returns how many seconds until it should look again on its own,
    for what no watch reports (a Secret to appear, the hub to answer, a pull's progress), or None.
    """

    work: Work
    max_backoff: float = 300.0
    _pending: dict[Key, asyncio.Event] = field(default_factory=dict)
    _workers: dict[Key, asyncio.Task[None]] = field(default_factory=dict)

    def trigger(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self._pending.setdefault(key, asyncio.Event()).set()
        if key not in self._workers or self._workers[key].done():
            self._workers[key] = asyncio.create_task(self._run(key), name=f"reconcile {namespace}/{name}")

    def trigger_all(self) -> None:
        """Every model seen since the start (each one's first event came through `trigger`): for a change
        that concerns them all, such as a CRD installed. A model deleted since costs one empty look."""
        for key in list(self._pending):
            self.trigger(*key)

    async def _run(self, key: Key) -> None:
        failures = 0
        pending = self._pending[key]
        while True:
            pending.clear()
            delay: float | None
            try:
                again = await self.work(*key)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # one model's failure must not stop the others
                failures += 1
                delay = min(2.0**failures, self.max_backoff)
                log.warning(
                    "%s/%s: reconcile failed (%s: %s); retrying in %.0fs",
                    *key,
                    type(error).__name__,
                    error,
                    delay,
                    # One line for people; the traceback for whoever debugs with --verbose.
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
            else:
                failures = 0
                delay = again
            if pending.is_set():
                continue
            if delay is None:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pending.wait(), timeout=delay)

    async def close(self) -> None:
        for task in self._workers.values():
            task.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
