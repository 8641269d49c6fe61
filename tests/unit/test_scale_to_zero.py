"""minReplicas 0: the activator's EndpointSlice while no replica is ready, the ScaledObject's triggers that
keep a woken model up, the coldStart settings on the Deployment; a model that does not scale to zero is
planned exactly as before."""

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest

from moorage.api.activation import COLD_START, Hold
from moorage.api.model import ObjectMeta, OpenSourceModel
from moorage.api.resolved import HubFile, ResolvedSource
from moorage.api.spec import OpenSourceModelSpec
from moorage.api.status import ConditionType
from moorage.plan.activator import slice_name
from moorage.plan.children import plan
from moorage.plan.config import EXAMPLE_ACTIVATOR, PlanConfig
from moorage.plan.observed import AutoscalerState, DeploymentState, JobState, Observed
from moorage.plan.status import status
from moorage.reconcile.reconciler import Reconciler
from moorage.reconcile.resolver import Resolver

Obj = dict[str, Any]
RESOLVED = ResolvedSource("hf://org/m", "org/m", "model", "main", "a" * 40, (HubFile("config.json", 10),))
CONFIG = PlanConfig(prometheus_address="http://prom.monitoring:9090", activator=EXAMPLE_ACTIVATOR)
ACTIVATOR_PODS = ("10.244.0.7", "10.244.1.9")


def model(scaling: Obj | None) -> OpenSourceModel:
    serving: Obj = {} if scaling is None else {"autoscaling": scaling}
    spec = OpenSourceModelSpec.from_manifest({"source": {"uri": "hf://org/m"}, "serving": serving})
    return OpenSourceModel(metadata=ObjectMeta(name="m", namespace="ml", uid="u-1", generation=1), spec=spec)


def deployment_state(ready: int) -> DeploymentState:
    return DeploymentState(1, 1, ready, ready, ready, ready, ready, {})


def observed(ready: int | None, activator: tuple[str, ...] = ACTIVATOR_PODS) -> Observed:
    return Observed(
        resolved=RESOLVED,
        pull=JobState(succeeded=True),
        autoscaler=AutoscalerState(installed=True, ready=True),
        deployment=None if ready is None else deployment_state(ready),
        activator=activator,
    )


def children(the_model: OpenSourceModel, seen: Observed, config: PlanConfig = CONFIG) -> dict[str, Obj]:
    return {c["kind"]: c for c in plan(the_model, seen, config).children}


TO_ZERO = {"minReplicas": 0, "maxReplicas": 3}


@pytest.mark.parametrize("ready", [None, 0])
def test_with_no_ready_replica_the_service_also_routes_to_the_activator(ready: int | None) -> None:
    endpoint_slice = children(model(TO_ZERO), observed(ready))["EndpointSlice"]
    metadata = endpoint_slice["metadata"]
    assert metadata["name"] == "m-activator" == slice_name(model(TO_ZERO))
    assert metadata["labels"]["kubernetes.io/service-name"] == "m", "a slice of the model's own Service"
    assert metadata["labels"]["endpointslice.kubernetes.io/managed-by"] == "operator.moorage.dev"
    assert metadata["ownerReferences"][0]["uid"] == "u-1", "goes with the model"
    assert endpoint_slice["addressType"] == "IPv4"
    assert [e["addresses"] for e in endpoint_slice["endpoints"]] == [[ip] for ip in ACTIVATOR_PODS]
    assert endpoint_slice["ports"] == [
        {"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}
    ]


def test_a_ready_replica_takes_the_activator_out_of_the_path() -> None:
    assert "EndpointSlice" not in children(model(TO_ZERO), observed(1))


def test_without_an_activator_nothing_routes_to_it() -> None:
    assert "EndpointSlice" not in children(model(TO_ZERO), observed(0, activator=()))


@pytest.mark.parametrize("scaling", [None, {"maxReplicas": 3}, {"minReplicas": 1, "maxReplicas": 3}])
def test_a_model_that_does_not_scale_to_zero_is_planned_as_before(scaling: Obj | None) -> None:
    with_activator = plan(model(scaling), observed(0), CONFIG).children
    none = PlanConfig(prometheus_address=CONFIG.prometheus_address, activator=None)
    without = plan(model(scaling), observed(0, activator=()), none).children
    assert with_activator == without
    assert "EndpointSlice" not in {c["kind"] for c in with_activator}
    deployment = next(c for c in with_activator if c["kind"] == "Deployment")
    assert COLD_START not in deployment["metadata"]["annotations"]
    if scaling is not None:
        scaled = next(c for c in with_activator if c["kind"] == "ScaledObject")
        assert [t["name"] for t in scaled["spec"]["triggers"]] == ["num-requests-waiting"]
        assert "cooldownPeriod" not in scaled["spec"]


def test_the_scaled_object_keeps_a_woken_model_up() -> None:
    scaling = {**TO_ZERO, "scaleDownWindowSeconds": 120}
    spec = children(model(scaling), observed(0))["ScaledObject"]["spec"]
    assert spec["minReplicaCount"] == 0 and spec["cooldownPeriod"] == 120, "idle 2 minutes, then zero"
    load, in_use, held = spec["triggers"]
    assert load["name"] == "num-requests-waiting" and load["metadata"]["threshold"] == "2"
    assert in_use["type"] == "prometheus" and in_use["metadata"]["activationThreshold"] == "0"
    query = in_use["metadata"]["query"]
    for metric in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:request_success_total"):
        assert f'{metric}{{namespace="ml",model_name="m"}}' in query
    assert query.count("or vector(0)") == 3, "a model with no pod is idle, not an error"
    assert held["type"] == "metrics-api"
    assert held["metadata"] == {
        "url": "http://moorage-activator.moorage-system.svc.cluster.local:9090/held/ml/m",
        "format": "json",
        "valueLocation": "held",
        "targetValue": "1000000",
        "activationTargetValue": "0",
    }
    none = PlanConfig(prometheus_address=CONFIG.prometheus_address, activator=None)
    triggers = children(model(scaling), observed(0), none)["ScaledObject"]["spec"]["triggers"]
    assert [t["name"] for t in triggers] == ["num-requests-waiting", "in-use"]


def test_a_model_that_scales_to_zero_is_probed_at_start_more_often() -> None:
    def startup(scaling: Obj) -> Obj:
        deployment = children(model(scaling), observed(0))["Deployment"]
        probe: Obj = deployment["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
        return probe

    cold, warm = startup(TO_ZERO), startup({"maxReplicas": 3})
    assert (cold["periodSeconds"], warm["periodSeconds"]) == (2, 10), "a held request waits on this start"
    assert (
        cold["periodSeconds"] * cold["failureThreshold"] == warm["periodSeconds"] * warm["failureThreshold"]
    )


def test_cold_start_settings_ride_on_the_deployment() -> None:
    default = children(model(TO_ZERO), observed(0))["Deployment"]["metadata"]["annotations"][COLD_START]
    assert Hold.from_annotations({COLD_START: default}) == Hold(600, 100)
    custom = {**TO_ZERO, "coldStart": {"holdTimeoutSeconds": 90, "maxQueued": 7}}
    annotation = children(model(custom), observed(0))["Deployment"]["metadata"]["annotations"][COLD_START]
    assert json.loads(annotation) == {"holdTimeoutSeconds": 90, "maxQueued": 7}
    assert Hold.from_annotations({COLD_START: annotation}) == Hold(90, 7)
    assert Hold.from_annotations({}) is None


class FakeKube:
    """The API as the reconcile of a model that scales to zero meets it."""

    def __init__(self, ready: int, live_slice: bool) -> None:
        the_model = model(TO_ZERO)
        self.model = {
            "apiVersion": "moorage.dev/v1alpha1",
            "kind": "OpenSourceModel",
            "metadata": {"name": "m", "namespace": "ml", "uid": "u-1", "generation": 1},
            "spec": {"source": {"uri": "hf://org/m"}, "serving": {"autoscaling": TO_ZERO}},
        }
        deployment = children(the_model, observed(ready))["Deployment"]
        deployment["status"] = {"readyReplicas": ready, "replicas": ready, "observedGeneration": 1}
        self.deployment = deployment
        self.slice = children(the_model, observed(0))["EndpointSlice"] if live_slice else None
        self.applied: list[Obj] = []
        self.deleted: list[tuple[str, str, str]] = []

    async def get(self, kind: str, namespace: str, name: str, *, watched: bool = True) -> Obj | None:
        done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
        found = {"OpenSourceModel": self.model, "Deployment": self.deployment, "Job": done}
        if kind == "EndpointSlice":
            return self.slice if name == "m-activator" else None
        return found.get(kind)

    async def select(self, kind: str, namespace: str, labels: Obj, owner: object = None) -> list[Obj]:
        if kind == "EndpointSlice" and namespace == "moorage-system":
            endpoints = [{"addresses": [ip], "conditions": {"ready": True}} for ip in ACTIVATOR_PODS]
            return [{"metadata": {"name": "moorage-activator-x"}, "endpoints": endpoints}]
        return []

    async def served(self, kind: str, namespace: str) -> bool:
        return kind == "ScaledObject"

    async def apply(self, manifest: Obj, field_manager: str = "moorage") -> None:
        self.applied.append(manifest)

    async def apply_fields(self, *args: object) -> None:
        pass

    async def patch(self, *args: object) -> None:
        pass

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        self.deleted.append((kind, namespace, name))

    async def patch_status(self, namespace: str, name: str, status: Obj) -> None:
        pass

    async def event(self, *args: object) -> None:
        pass


def reconcile(kube: FakeKube) -> None:
    reconciler = Reconciler(kube, CONFIG, Resolver(resolve=lambda *_: RESOLVED))  # type: ignore[arg-type]
    asyncio.run(reconciler("ml", "m"))


def test_the_reconcile_points_the_service_at_the_activator_at_zero() -> None:
    kube = FakeKube(ready=0, live_slice=False)
    reconcile(kube)
    [applied] = [m for m in kube.applied if m["kind"] == "EndpointSlice"]
    assert [e["addresses"][0] for e in applied["endpoints"]] == list(ACTIVATOR_PODS)
    assert kube.deleted == []


def test_the_reconcile_removes_the_activator_once_a_replica_is_ready() -> None:
    kube = FakeKube(ready=1, live_slice=True)
    reconcile(kube)
    assert ("EndpointSlice", "ml", "m-activator") in kube.deleted
    assert "EndpointSlice" not in [m["kind"] for m in kube.applied]


def test_a_model_idle_at_zero_is_ready_and_says_so() -> None:
    the_model = model(TO_ZERO)
    at_zero = observed(0)
    the_plan = plan(the_model, at_zero, CONFIG)
    deployment = next(c for c in the_plan.children if c["kind"] == "Deployment")
    hashed = DeploymentState(1, 1, 0, 0, 0, 0, 0, dict(deployment["metadata"]["annotations"]))
    seen = replace(at_zero, deployment=hashed)
    ready = status(the_model, seen, plan(the_model, seen, CONFIG), CONFIG, "2026-11-27T10:00:00Z").condition(
        ConditionType.READY
    )
    assert ready is not None and (ready.status, ready.reason) == ("True", "ScaledToZero")
    assert "held" in ready.message
