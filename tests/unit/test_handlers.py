"""The kopf layer's model events: what wakes a reconcile, and what the metrics forget."""

import asyncio
from typing import Any

import pytest

from moorage.api.status import OpenSourceModelStatus
from moorage.reconcile import handlers
from moorage.reconcile.cache import Cache, Store
from moorage.reconcile.metrics import Metrics


class Queue:
    def __init__(self) -> None:
        self.triggered: list[tuple[str, str]] = []

    def trigger(self, namespace: str, name: str) -> None:
        self.triggered.append((namespace, name))


def model(version: int) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": "m", "resourceVersion": str(version)}}


def test_the_echo_of_our_status_write_wakes_no_one_and_the_model_stays_in_the_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache, metrics, queue = Cache({"OpenSourceModel": Store()}), Metrics(), Queue()
    monkeypatch.setattr(handlers.Operator, "cache", cache)
    monkeypatch.setattr(handlers.Operator, "metrics", metrics)
    monkeypatch.setattr(handlers.Operator, "queue", queue)
    metrics.model_seen(("ns", "m"), OpenSourceModelStatus())

    def event(type_: str, version: int) -> None:
        body = model(version)
        cache.store("OpenSourceModel").put(body)  # as kopf's index handler does before any event handler
        asyncio.run(handlers._model_event(type=type_, body=body, namespace="ns", name="m"))

    cache.store("OpenSourceModel").put(model(5), ours=True)  # the answer to our status write
    event("MODIFIED", 5)
    assert queue.triggered == []
    assert [key for key, _ in metrics.models()] == [("ns", "m")]
    event("MODIFIED", 6)  # someone else's change
    assert queue.triggered == [("ns", "m")]
    event("DELETED", 7)
    assert metrics.models() == []
    assert queue.triggered == [("ns", "m")]
