"""The hold: requests for a model with no ready replica wait (bounded, each with a deadline) while one
waker per model asks the cluster to scale it up and looks for a ready replica.

Kept apart from HTTP and from the Kubernetes API (both behind `Cluster`), so the queue, the deadline and
the 503 are tested against a real upstream on localhost with a cluster the test plays.
"""

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from moorage.api.activation import HELD_METRIC, Hold

log = logging.getLogger("moorage.activator")

POLL_SECONDS = 0.5
"""How often a waker looks for a ready replica: the cold start is tens of seconds, this adds at most this."""
WAKE_EVERY = 20
"""Polls between two looks at the replica count while requests are held (10 s)."""
FRESH_SECONDS = 2.0
"""How long ready replicas found are trusted without looking again."""
RETRY_AFTER_FULL = 5
"""Retry-After (seconds) when the queue is full: a replica is on its way; a few seconds free some places."""
RETRY_AFTER_TIMEOUT = 30


@dataclass(frozen=True, order=True)
class ModelKey:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class Cluster(Protocol):
    """What the activator asks of Kubernetes (see kube.py for the real one)."""

    async def hold_settings(self, model: ModelKey) -> Hold | None:
        """The model's coldStart settings; None when it is no model that scales to zero."""

    async def wake(self, model: ModelKey) -> bool:
        """Scale the model from zero to one replica (the scale subresource, as KEDA does); nothing if it
        has replicas already. Says whether it scaled."""

    async def ready_endpoints(self, model: ModelKey) -> list[str]:
        """host:port of the model's ready replicas (its pods' EndpointSlices)."""


class RejectedError(Exception):
    """The request is answered 503: the queue is full, or no replica was ready in time."""

    def __init__(self, kind: str, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.kind, self.message, self.retry_after = kind, message, retry_after


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("model_namespace", "model")
        self.held = Gauge(
            HELD_METRIC, "Requests held while the model has no ready replica", labels, registry=registry
        )
        self.requests = Counter(
            "moorage_activator_requests",
            "Requests the activator took, by outcome: forwarded, queue_full, timed_out, upstream_error",
            (*labels, "outcome"),
            registry=registry,
        )
        self.hold_seconds = Histogram(
            "moorage_activator_hold_seconds",
            "How long a request was held before a replica was ready (the cold start it saw)",
            labels,
            buckets=(0.1, 1, 5, 10, 20, 30, 60, 90, 120, 180, 300, 600, 1200),
            registry=registry,
        )
        self.wakes = Counter(
            "moorage_activator_wakes",
            "Times a model at zero was scaled to one replica",
            labels,
            registry=registry,
        )


@dataclass
class Gate:
    """One model's held requests and what is known of its replicas."""

    key: ModelKey
    cluster: Cluster
    metrics: Metrics
    hold: Hold = field(default_factory=Hold)
    held: int = 0
    _endpoints: list[str] = field(default_factory=list)
    _checked: float = float("-inf")
    _turn: "itertools.count[int]" = field(default_factory=itertools.count)
    _waker: asyncio.Task[None] | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def _labels(self) -> tuple[str, str]:
        return (self.key.namespace, self.key.name)

    def forget(self, endpoint: str) -> None:
        """A replica refused a connection: look again before the next request goes there."""
        if endpoint in self._endpoints:
            self._endpoints.remove(endpoint)
        self._checked = float("-inf")

    async def endpoint(self) -> str:
        """A ready replica's host:port, at once if one is known, else once one is ready (the request is
        held meanwhile). Raises RejectedError when the queue is full or the hold timeout passes."""
        if self._endpoints and time.monotonic() - self._checked < FRESH_SECONDS:
            return self._pick()
        if self.held >= self.hold.max_queued:
            self.metrics.requests.labels(*self._labels(), "queue_full").inc()
            raise RejectedError(
                "queue_full",
                f"model {self.key} is starting and already holds {self.held} requests "
                f"(coldStart.maxQueued {self.hold.max_queued}); retry shortly",
                RETRY_AFTER_FULL,
            )
        self.held += 1
        self.metrics.held.labels(*self._labels()).set(self.held)
        started = time.monotonic()
        try:
            ready = self._start_waker()
            await asyncio.wait_for(ready.wait(), self.hold.timeout_seconds)
        except TimeoutError:
            self.metrics.requests.labels(*self._labels(), "timed_out").inc()
            raise RejectedError(
                "model_not_ready",
                f"model {self.key} has no ready replica after {self.hold.timeout_seconds}s "
                "(coldStart.holdTimeoutSeconds); it may still be starting: kubectl describe osm "
                f"{self.key.name} -n {self.key.namespace}",
                RETRY_AFTER_TIMEOUT,
            ) from None
        finally:
            self.held -= 1
            self.metrics.held.labels(*self._labels()).set(self.held)
        self.metrics.hold_seconds.labels(*self._labels()).observe(time.monotonic() - started)
        return self._pick()

    def _pick(self) -> str:
        return self._endpoints[next(self._turn) % len(self._endpoints)]

    def _start_waker(self) -> asyncio.Event:
        """The event the running waker sets when it finds a ready replica; one waker per model at a time."""
        if self._waker is None or self._waker.done():
            self._ready = asyncio.Event()
            self._waker = asyncio.create_task(self._wake(self._ready), name=f"wake {self.key}")
        return self._ready

    async def _wake(self, ready: asyncio.Event) -> None:
        for round_ in itertools.count():
            if self.held == 0:
                return
            try:
                endpoints = await self.cluster.ready_endpoints(self.key)
                if endpoints:
                    self._endpoints, self._checked = endpoints, time.monotonic()
                    ready.set()
                    return
                # At once, then now and again: a scaler that saw no load yet may have put it back to zero.
                if round_ % WAKE_EVERY == 0 and await self.cluster.wake(self.key):
                    log.info("%s: scaled 0 -> 1 replica for %d held request(s)", self.key, self.held)
                    self.metrics.wakes.labels(*self._labels()).inc()
            except Exception:  # the API server hiccups: the held requests keep their deadline, look again
                log.exception("%s: waking the model failed; trying again", self.key)
            await asyncio.sleep(POLL_SECONDS)

    async def close(self) -> None:
        if self._waker is not None:
            self._waker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._waker
