"""The operator's Prometheus metrics: its reconciles, its work queue, and what it knows of the models.

Served by prometheus_client's HTTP server in a daemon thread (`moorage run --metrics-port`), so a scrape
never runs on kopf's event loop. The event loop only updates values (a lock, no I/O); what a scrape reads
of the models is a copy of a dict whose values are replaced whole, never changed in place.

Cardinality stays bounded: counts by condition carry no model label, error reasons are exception kinds
the code knows, and the per-model series (one of each per model) go when the model goes.
"""

import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from lightkube.core.exceptions import ApiError
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from moorage.api.status import OpenSourceModelStatus
from moorage.plan.children import Plan
from moorage.plan.observed import JobState, Observed
from moorage.plan.serving import TEMPLATE_HASH

Key = tuple[str, str]
Identity = tuple[object, ...]
PULLS_REMEMBERED = 10_000
Work = Callable[[str, str], Awaitable[float | None]]

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PULL_RATE_BUCKETS = tuple(float(2**n) * 2**20 for n in range(0, 13))
"""1 MiB/s to 4 GiB/s, doubling."""


class QueueView(Protocol):
    """What the metrics read of the work queue."""

    def depth(self) -> int: ...

    def in_progress(self) -> int: ...


@dataclass(frozen=True)
class ModelFacts:
    """What the last reconcile of one model found, for the gauges."""

    conditions: tuple[tuple[str, str, str], ...] = ()
    """(type, status, reason) of each condition."""
    revision: str = ""
    """The commit the serving pods run ("" before the first Deployment)."""
    template_hash: str = ""
    """The hash of the serving pods' template: a new one is a rollout (the dashboard's revision markers)."""
    desired_replicas: int | None = None
    ready_replicas: int = 0
    final_loss: float | None = None


def error_reason(error: BaseException) -> str:
    """A bounded label for a failed reconcile: its condition reason, its API status, or its kind."""
    problem = getattr(error, "problem", None)
    if problem is not None and isinstance(getattr(problem, "reason", None), str):
        return str(problem.reason)
    if isinstance(error, ApiError):
        return f"ApiError{error.status.code or ''}"
    return type(error).__name__


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))
    queue: QueueView | None = None
    _models: dict[Key, ModelFacts] = field(default_factory=dict)
    _pulls_counted: dict[Identity, None] = field(default_factory=dict)
    """Finished pulls already counted, oldest first: a volume's one pull is seen by every model on it."""

    def __post_init__(self) -> None:
        registry = self.registry
        self.reconciles = Counter(
            "moorage_reconciles",
            "Reconciles of a model, by result (success or error).",
            ["result"],
            registry=registry,
        )
        self.reconcile_errors = Counter(
            "moorage_reconcile_errors",
            "Reconciles that failed (and are retried with backoff), by reason: the condition reason "
            "(ApplyFailed), the API status (ApiError409) or the exception's kind.",
            ["reason"],
            registry=registry,
        )
        self.reconcile_duration = Histogram(
            "moorage_reconcile_duration_seconds",
            "How long one reconcile of one model took, API calls included.",
            buckets=RECONCILE_BUCKETS,
            registry=registry,
        )
        self.pull_bytes = Counter(
            "moorage_pull_bytes",
            "Bytes the weights pull Jobs transferred (from their reports; a resumed or cached pull counts "
            "only what it fetched).",
            registry=registry,
        )
        self.pulls = Counter(
            "moorage_pulls", "Weights pull Jobs that finished, by result.", ["result"], registry=registry
        )
        self.pull_rate = Histogram(
            "moorage_pull_rate_bytes_per_second",
            "Throughput of each finished pull: bytes transferred over the Job's run time.",
            buckets=PULL_RATE_BUCKETS,
            registry=registry,
        )
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        registry.register(_ModelCollector(self))

    # ---- reconciles

    def instrument(self, work: Work) -> Work:
        """`work` timed and counted: what the work queue runs."""

        async def measured(namespace: str, name: str) -> float | None:
            started = time.perf_counter()
            try:
                again = await work(namespace, name)
            except Exception as error:
                self.reconciles.labels("error").inc()
                self.reconcile_errors.labels(error_reason(error)).inc()
                raise
            finally:
                self.reconcile_duration.observe(time.perf_counter() - started)
            self.reconciles.labels("success").inc()
            return again

        return measured

    # ---- models

    def model_seen(
        self,
        key: Key,
        status: OpenSourceModelStatus,
        observed: Observed | None = None,
        plan: Plan | None = None,
    ) -> None:
        """What one reconcile of a model found: its status, and what it read and planned."""
        deployment = observed.deployment if observed else None
        planned = next((c for c in plan.children if c["kind"] == "Deployment"), None) if plan else None
        tuned = status.fine_tune
        facts = ModelFacts(
            conditions=tuple((c.type, c.status, c.reason) for c in status.conditions),
            revision=status.serving_revision or "",
            template_hash=planned["metadata"]["annotations"].get(TEMPLATE_HASH, "") if planned else "",
            desired_replicas=deployment.desired_replicas if deployment else None,
            ready_replicas=status.ready_replicas or 0,
            final_loss=tuned.final_loss if tuned else None,
        )
        self._count_pull(key[0], observed.pull if observed else None)
        self._models[key] = facts

    def model_gone(self, key: Key) -> None:
        self._models.pop(key, None)

    def _count_pull(self, namespace: str, pull: JobState | None) -> None:
        """Counts a finished pull once, when its report is first seen by any model."""
        report = pull.report if pull is not None and (pull.succeeded or pull.failed) else None
        if report is None:
            return
        details = report.details
        identity = (namespace, report.ok, report.reason, details.get("sha"), details.get("seconds"))
        if identity in self._pulls_counted:
            return
        self._pulls_counted[identity] = None
        if len(self._pulls_counted) > PULLS_REMEMBERED:
            del self._pulls_counted[next(iter(self._pulls_counted))]
        self.pulls.labels("success" if report.ok else "failure").inc()
        transferred, seconds = details.get("transferred"), details.get("seconds")
        if isinstance(transferred, int | float) and transferred >= 0:
            self.pull_bytes.inc(transferred)
            if isinstance(seconds, int | float) and seconds > 0 and transferred > 0:
                self.pull_rate.observe(transferred / seconds)

    def models(self) -> list[tuple[Key, ModelFacts]]:
        """A copy, safe to read from the scrape thread while the event loop replaces entries."""
        return list(self._models.items())

    # ---- serving

    def serve(self, port: int, address: str = "0.0.0.0") -> "Serving":  # noqa: S104 - in a pod
        """Serves /metrics in a daemon thread (port 0: any free port)."""
        server, thread = start_http_server(port, addr=address, registry=self.registry)
        return Serving(int(server.server_port), server, thread)


@dataclass(frozen=True)
class Serving:
    port: int
    server: WSGIServer
    thread: threading.Thread

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class _ModelCollector(Collector):
    """Gauges computed at scrape time from the last reconcile of every model, and the queue's depth."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        models = self.metrics.models()
        by_condition = GaugeMetricFamily(
            "moorage_models",
            "Models by condition type, status and reason (no model label: bounded cardinality).",
            labels=["condition", "status", "reason"],
        )
        counts: dict[tuple[str, str, str], int] = {}
        for _, facts in models:
            for condition in facts.conditions:
                counts[condition] = counts.get(condition, 0) + 1
        for labels, count in sorted(counts.items()):
            by_condition.add_metric(list(labels), count)
        yield by_condition

        info = GaugeMetricFamily(
            "moorage_model_info",
            "1 for each model, labelled with the commit its pods serve and their template hash: a new "
            "label set marks a rollout (the dashboard's revision annotations).",
            labels=["namespace", "model", "revision", "template_hash"],
        )
        desired = GaugeMetricFamily(
            "moorage_model_replicas",
            "Replicas the model's Deployment asks for (the spec's, or the autoscaler's).",
            labels=["namespace", "model"],
        )
        ready = GaugeMetricFamily(
            "moorage_model_ready_replicas", "Serving replicas that are ready.", labels=["namespace", "model"]
        )
        loss = GaugeMetricFamily(
            "moorage_finetune_final_loss",
            "Training loss at the last step of the model's current adapter (the fine-tune Job's report).",
            labels=["namespace", "model"],
        )
        for (namespace, name), facts in models:
            info.add_metric([namespace, name, facts.revision, facts.template_hash], 1)
            ready.add_metric([namespace, name], facts.ready_replicas)
            if facts.desired_replicas is not None:
                desired.add_metric([namespace, name], facts.desired_replicas)
            if facts.final_loss is not None:
                loss.add_metric([namespace, name], facts.final_loss)
        yield from (info, desired, ready, loss)

        queue = self.metrics.queue
        depth = GaugeMetricFamily(
            "moorage_workqueue_depth", "Models whose reconcile is due and waiting for their worker."
        )
        active = GaugeMetricFamily("moorage_workqueue_in_progress", "Reconciles running now.")
        depth.add_metric([], queue.depth() if queue else 0)
        active.add_metric([], queue.in_progress() if queue else 0)
        yield from (depth, active)
