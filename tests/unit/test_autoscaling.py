"""spec.serving.autoscaling: the KEDA ScaledObject, who owns the Deployment's replicas, the condition."""

import asyncio
from typing import Any

import pytest

from moorage.api.model import ObjectMeta, OpenSourceModel
from moorage.api.resolved import HubFile, ResolvedSource
from moorage.api.spec import OpenSourceModelSpec
from moorage.api.status import ConditionType
from moorage.plan import autoscaling
from moorage.plan.children import plan
from moorage.plan.config import PlanConfig
from moorage.plan.drift import drifted
from moorage.plan.observed import AutoscalerState, JobState, Observed
from moorage.plan.status import status
from moorage.reconcile.reconciler import HANDOVER_MANAGER, SCALER_POLL, Reconciler, _next_look
from moorage.reconcile.resolver import Resolver

Obj = dict[str, Any]
NOW = "2026-11-27T10:00:00Z"
RESOLVED = ResolvedSource("hf://org/m", "org/m", "model", "main", "a" * 40, (HubFile("config.json", 10),))
CONFIG = PlanConfig(prometheus_address="http://prom.monitoring:9090")


def model(scaling: Obj | None = None, **serving: Any) -> OpenSourceModel:
    if scaling is not None:
        serving["autoscaling"] = scaling
    spec = OpenSourceModelSpec.from_manifest({"source": {"uri": "hf://org/m"}, "serving": serving})
    return OpenSourceModel(metadata=ObjectMeta(name="m", namespace="ml", uid="u-1", generation=1), spec=spec)


def observed(keda: bool | None, ready: bool | None = None, message: str = "") -> Observed:
    scaler = None if keda is None else AutoscalerState(keda, ready if keda else None, message)
    done = JobState(succeeded=True)
    return Observed(resolved=RESOLVED, pull=done, autoscaler=scaler)


def kinds(children: list[Obj]) -> dict[str, Obj]:
    return {c["kind"]: c for c in children}


def test_scaled_object_on_waiting_requests_by_default() -> None:
    children = kinds(plan(model({"maxReplicas": 4}), observed(True), CONFIG).children)
    scaled = children["ScaledObject"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "m"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 4)
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == {
        "scaleUp": {"stabilizationWindowSeconds": 0},
        "scaleDown": {"stabilizationWindowSeconds": 300},
    }
    [trigger] = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"] == {
        "serverAddress": "http://prom.monitoring:9090",
        "query": 'sum(vllm:num_requests_waiting{namespace="ml",model_name="m"})',
        "threshold": "2",
    }
    # The scaler owns the replicas: the operator's Deployment leaves them out.
    assert "replicas" not in children["Deployment"]["spec"]
    assert children["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def test_kv_cache_target_windows_and_the_served_name() -> None:
    scaling = {
        "minReplicas": 2,
        "maxReplicas": 8,
        "target": {"kvCacheUsage": 0.75},
        "scaleUpWindowSeconds": 30,
        "scaleDownWindowSeconds": 600,
    }
    the_model = model(scaling, vllm={"servedModelName": "chat"})
    spec = autoscaling.scaled_object(the_model, CONFIG)["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 8)
    assert spec["triggers"][0]["metadata"]["query"] == (
        'sum(vllm:kv_cache_usage_perc{namespace="ml",model_name="chat"})'
    )
    assert spec["triggers"][0]["metadata"]["threshold"] == "0.75"
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 30
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 600


def test_without_keda_the_operator_keeps_min_replicas_and_says_why() -> None:
    the_model = model({"minReplicas": 2, "maxReplicas": 4}, replicas=7)
    the_plan = plan(the_model, observed(False), CONFIG)
    children = kinds(the_plan.children)
    assert "ScaledObject" not in children
    assert children["Deployment"]["spec"]["replicas"] == 4, "serving.replicas within min and max"
    new = status(the_model, observed(False), the_plan, CONFIG, NOW)
    scaling = new.condition(ConditionType.AUTOSCALING)
    assert scaling is not None and (scaling.status, scaling.reason) == ("False", "KedaNotInstalled")
    assert "install KEDA" in scaling.message and "4 replica(s)" in scaling.message
    below = model({"minReplicas": 2, "maxReplicas": 4}, replicas=1)
    assert kinds(plan(below, observed(False), CONFIG).children)["Deployment"]["spec"]["replicas"] == 2
    ready = new.condition(ConditionType.READY)
    assert ready is not None and ready.reason != "KedaNotInstalled", "not a failure of serving"
    assert _next_look(new) == SCALER_POLL, "KEDA installed later is noticed"


@pytest.mark.parametrize(
    ("ready", "message", "expected"),
    [
        (None, "", ("False", "ScalerPending")),
        (False, "error inspecting prometheus metrics", ("False", "ScalerNotReady")),
        (True, "", ("True", "Scaling")),
    ],
)
def test_condition_follows_the_scaled_object(
    ready: bool | None, message: str, expected: tuple[str, str]
) -> None:
    the_model = model({"maxReplicas": 3})
    seen = observed(True, ready, message)
    new = status(the_model, seen, plan(the_model, seen, CONFIG), CONFIG, NOW)
    scaling = new.condition(ConditionType.AUTOSCALING)
    assert scaling is not None and (scaling.status, scaling.reason) == expected
    assert message in scaling.message


def test_no_condition_and_spec_replicas_without_autoscaling() -> None:
    the_model = model(replicas=3)
    the_plan = plan(the_model, observed(None), CONFIG)
    assert kinds(the_plan.children)["Deployment"]["spec"]["replicas"] == 3
    assert (
        status(the_model, observed(None), the_plan, CONFIG, NOW).condition(ConditionType.AUTOSCALING) is None
    )


def test_scaled_object_state_from_keda() -> None:
    assert AutoscalerState.from_scaled_object(None) == AutoscalerState(True)
    obj = {"status": {"conditions": [{"type": "Ready", "status": "False", "message": "no prometheus"}]}}
    assert AutoscalerState.from_scaled_object(obj) == AutoscalerState(True, False, "no prometheus")


def test_the_scalers_replicas_are_not_drift() -> None:
    deployment = kinds(plan(model({"maxReplicas": 4}), observed(True), CONFIG).children)["Deployment"]
    live = {**deployment, "spec": {**deployment["spec"], "replicas": 4}}
    assert drifted(live, deployment) == []


# ---- the reconciler hands the replicas over to the scaler


class FakeKube:
    """A model with autoscaling whose Deployment the operator applied with replicas (before autoscaling)."""

    def __init__(self, keda: bool, deployment: Obj | None) -> None:
        self.keda, self.deployment = keda, deployment
        self.model = {
            "apiVersion": "moorage.dev/v1alpha1",
            "kind": "OpenSourceModel",
            "metadata": {"name": "m", "namespace": "ml", "uid": "u-1", "generation": 2},
            "spec": {"source": {"uri": "hf://org/m"}, "serving": {"autoscaling": {"maxReplicas": 4}}},
        }
        self.applied: list[tuple[str, Obj]] = []

    async def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}  # every Job succeeded
        return {"OpenSourceModel": self.model, "Deployment": self.deployment, "Job": done}.get(kind)

    async def select(self, kind: str, namespace: str, labels: object, owner: object = None) -> list[Obj]:
        return []

    async def served(self, kind: str, namespace: str) -> bool:
        return self.keda and kind == "ScaledObject"

    async def apply(self, manifest: Obj, field_manager: str = "moorage") -> None:
        self.applied.append((field_manager, manifest))

    async def apply_fields(self, kind: str, namespace: str, name: str, fields: Obj, manager: str) -> None:
        self.applied.append((manager, fields))

    async def patch(self, *args: object) -> None:
        pass

    async def delete(self, *args: object) -> None:
        pass

    async def patch_status(self, namespace: str, name: str, status: Obj) -> None:
        pass

    async def event(self, *args: object) -> None:
        pass


def live_deployment(manager: str) -> Obj:
    """The Deployment with 3 replicas as the operator last applied it: with its replicas ("moorage"), or
    leaving them to the scaler (any other `manager`)."""
    spec = OpenSourceModelSpec.from_manifest({"source": {"uri": "hf://org/m"}, "serving": {"replicas": 3}})
    the_model = OpenSourceModel(metadata=ObjectMeta(name="m", namespace="ml", uid="u-1"), spec=spec)
    deployment = kinds(plan(the_model, observed(None), CONFIG).children)["Deployment"]
    if manager != "moorage":
        deployment["metadata"]["annotations"]["moorage.dev/replicas-owner"] = "autoscaler"
    return deployment


def run(kube: FakeKube) -> None:
    reconciler = Reconciler(kube, CONFIG, Resolver(resolve=lambda *_: RESOLVED))  # type: ignore[arg-type]
    asyncio.run(reconciler("ml", "m"))


def test_replicas_are_handed_over_before_the_apply_that_drops_them() -> None:
    kube = FakeKube(keda=True, deployment=live_deployment("moorage"))
    run(kube)
    managers = [(m, c["kind"]) for m, c in kube.applied if c["kind"] in ("Deployment", "ScaledObject")]
    assert managers == [
        (HANDOVER_MANAGER, "Deployment"),
        ("moorage", "Deployment"),
        ("moorage", "ScaledObject"),
    ]
    handover = kube.applied[[m for m, _ in kube.applied].index(HANDOVER_MANAGER)][1]
    assert handover["spec"] == {"replicas": 3}, "the count running now, so capacity never drops"
    ours = next(c for m, c in kube.applied if m == "moorage" and c["kind"] == "Deployment")
    assert "replicas" not in ours["spec"]


def test_no_handover_once_the_scaler_owns_the_replicas() -> None:
    kube = FakeKube(keda=True, deployment=live_deployment("kube-controller-manager-hpa"))
    run(kube)
    assert HANDOVER_MANAGER not in [m for m, _ in kube.applied]


def test_without_keda_the_operator_keeps_owning_replicas() -> None:
    kube = FakeKube(keda=False, deployment=live_deployment("moorage"))
    run(kube)
    assert HANDOVER_MANAGER not in [m for m, _ in kube.applied]
    ours = next(c for m, c in kube.applied if c["kind"] == "Deployment")
    assert ours["spec"]["replicas"] == 1, "serving.replicas (default 1), within 1 and 4"
    assert "ScaledObject" not in [c["kind"] for _, c in kube.applied]


def test_a_new_autoscaled_deployment_starts_at_what_the_scaler_would_keep() -> None:
    kube = FakeKube(keda=True, deployment=None)
    kube.model["spec"]["serving"]["autoscaling"] = {"minReplicas": 3, "maxReplicas": 4}
    run(kube)
    order = [(m, c["kind"], c["spec"].get("replicas")) for m, c in kube.applied if c["kind"] == "Deployment"]
    assert order == [("moorage", "Deployment", None), (HANDOVER_MANAGER, "Deployment", 3)]
