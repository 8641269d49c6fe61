"""The operator's Prometheus metrics: reconciles, the queue, models by condition, pulls, fine-tune loss."""

import asyncio
import urllib.request

import pytest
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import Status
from prometheus_client.parser import text_string_to_metric_families

from moorage.api.programs import Report
from moorage.api.status import Condition, FineTuneStatus, OpenSourceModelStatus
from moorage.plan.children import Plan
from moorage.plan.observed import DeploymentState, JobState, Observed, Problem
from moorage.plan.serving import TEMPLATE_HASH
from moorage.reconcile.metrics import Metrics, error_reason
from moorage.reconcile.queue import WorkQueue
from moorage.reconcile.reconciler import ApplyError

NOW = "2026-11-27T10:00:00Z"


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def condition(type_: str, status: str, reason: str) -> Condition:
    return Condition(type=type_, status=status, reason=reason, last_transition_time=NOW)


def status(ready: bool, *, ready_replicas: int = 1, loss: float | None = None) -> OpenSourceModelStatus:
    return OpenSourceModelStatus(
        conditions=(
            condition("Ready", "True", "Serving") if ready else condition("Ready", "False", "Pulling"),
            condition("Stalled", "False", "Progressing"),
        ),
        serving_revision="a" * 40 if ready else None,
        ready_replicas=ready_replicas,
        fine_tune=FineTuneStatus(final_loss=loss) if loss is not None else None,
    )


def deployment(desired: int) -> DeploymentState:
    return DeploymentState(1, 1, desired, desired, desired, desired, desired, {})


def planned(template_hash: str) -> Plan:
    manifest = {
        "kind": "Deployment",
        "metadata": {"name": "m", "annotations": {TEMPLATE_HASH: template_hash}},
    }
    return Plan(children=[manifest])


def test_reconciles_are_counted_timed_and_errors_labelled_by_reason() -> None:
    metrics = Metrics()
    outcomes: list[Exception | None] = [
        None,
        ApplyError("Service", "m", ApiError(status=Status(code=422, message="no"))),
        ApiError(status=Status(code=409, message="conflict")),
        RuntimeError("bug"),
    ]

    async def work(namespace: str, name: str) -> float | None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return 30.0

    measured = metrics.instrument(work)
    assert asyncio.run(measured("ns", "m")) == 30.0
    for _ in range(3):
        with pytest.raises(Exception):  # noqa: B017 - each kind in turn
            asyncio.run(measured("ns", "m"))
    assert value(metrics, "moorage_reconciles_total", result="success") == 1
    assert value(metrics, "moorage_reconciles_total", result="error") == 3
    for reason in ("ApplyFailed", "ApiError409", "RuntimeError"):
        assert value(metrics, "moorage_reconcile_errors_total", reason=reason) == 1
    assert value(metrics, "moorage_reconcile_duration_seconds_count") == 4


def test_error_reasons_are_bounded() -> None:
    assert error_reason(ValueError("x")) == "ValueError"
    assert error_reason(type("E", (Exception,), {"problem": Problem("HubUnreachable", "down")})()) == (
        "HubUnreachable"
    )


def test_models_by_condition_info_replicas_and_loss_and_a_deleted_model_goes() -> None:
    metrics = Metrics()
    metrics.model_seen(
        ("ns", "a"), status(True, ready_replicas=2), Observed(deployment=deployment(3)), planned("h1")
    )
    metrics.model_seen(("ns", "b"), status(True, loss=0.42))
    metrics.model_seen(("other", "c"), status(False, ready_replicas=0))
    assert value(metrics, "moorage_models", condition="Ready", status="True", reason="Serving") == 2
    assert value(metrics, "moorage_models", condition="Ready", status="False", reason="Pulling") == 1
    assert value(metrics, "moorage_models", condition="Stalled", status="False", reason="Progressing") == 3
    info = {"namespace": "ns", "model": "a", "revision": "a" * 40, "template_hash": "h1"}
    assert value(metrics, "moorage_model_info", **info) == 1
    assert value(metrics, "moorage_model_replicas", namespace="ns", model="a") == 3
    assert value(metrics, "moorage_model_ready_replicas", namespace="ns", model="a") == 2
    assert value(metrics, "moorage_model_replicas", namespace="ns", model="b") is None, "no Deployment yet"
    assert value(metrics, "moorage_finetune_final_loss", namespace="ns", model="b") == 0.42

    # A rollout: the model's info series changes labels (the dashboard's revision marker).
    metrics.model_seen(("ns", "a"), status(True), Observed(deployment=deployment(3)), planned("h2"))
    assert value(metrics, "moorage_model_info", **info) is None
    assert value(metrics, "moorage_model_info", **{**info, "template_hash": "h2"}) == 1

    metrics.model_gone(("ns", "a"))
    assert value(metrics, "moorage_model_info", **{**info, "template_hash": "h2"}) is None
    assert value(metrics, "moorage_models", condition="Ready", status="True", reason="Serving") == 1


def test_a_pull_is_counted_once_with_its_bytes_and_rate() -> None:
    metrics = Metrics()
    report = Report(True, "Pulled", "ok", {"sha": "a" * 40, "seconds": 4.0, "transferred": 400 * 2**20})
    pulled = Observed(pull=JobState(succeeded=True, report=report))
    for _ in range(3):  # every later reconcile sees the same finished Job
        metrics.model_seen(("ns", "m"), status(True), pulled)
    metrics.model_seen(("ns", "m2"), status(True), pulled)  # another model on the volume: the same pull
    assert value(metrics, "moorage_pulls_total", result="success") == 1
    assert value(metrics, "moorage_pull_bytes_total") == 400 * 2**20
    assert value(metrics, "moorage_pull_rate_bytes_per_second_count") == 1
    assert value(metrics, "moorage_pull_rate_bytes_per_second_sum") == 100 * 2**20
    running = Observed(pull=JobState(active=True))
    metrics.model_seen(("ns", "n"), status(False), running)
    failed = Report(False, "RepoNotFound", "no", {"seconds": 0.5})
    metrics.model_seen(("ns", "n"), status(False), Observed(pull=JobState(failed=True, report=failed)))
    assert value(metrics, "moorage_pulls_total", result="failure") == 1
    assert value(metrics, "moorage_pull_bytes_total") == 400 * 2**20


def test_queue_depth_and_work_in_progress() -> None:
    metrics = Metrics()
    seen: list[tuple[float | None, float | None]] = []

    async def scenario() -> None:
        gate = asyncio.Event()

        async def work(namespace: str, name: str) -> float | None:
            await gate.wait()
            return None

        queue = WorkQueue(metrics.instrument(work))
        metrics.queue = queue
        queue.trigger("ns", "a")
        queue.trigger("ns", "b")
        await asyncio.sleep(0.01)
        queue.trigger("ns", "a")  # while a runs: due again
        seen.append(
            (value(metrics, "moorage_workqueue_depth"), value(metrics, "moorage_workqueue_in_progress"))
        )
        gate.set()
        await asyncio.sleep(0.05)
        seen.append(
            (value(metrics, "moorage_workqueue_depth"), value(metrics, "moorage_workqueue_in_progress"))
        )
        await queue.close()

    asyncio.run(scenario())
    assert seen == [(1, 2), (0, 0)]
    assert value(metrics, "moorage_reconciles_total", result="success") == 3


def test_the_endpoint_serves_the_text_format_from_its_own_thread() -> None:
    metrics = Metrics()
    metrics.model_seen(("ns", "m"), status(True))
    served = metrics.serve(0, "127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        served.stop()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "moorage_reconciles",
        "moorage_reconcile_duration_seconds",
        "moorage_workqueue_depth",
        "moorage_models",
        "moorage_model_info",
        "moorage_pull_bytes",
        "process_resident_memory_bytes",
    } <= names
