"""spec.gateway: the InferencePool and HTTPRoute planned, the GatewayReady condition, discovery, and the
pool checked against the published InferencePool v1 schema (our stand-in CRD, tests/crds/)."""

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import Status
from pydantic import ValidationError

from moorage.api.errors import describe
from moorage.api.model import OpenSourceModel
from moorage.api.resolved import HubFile, ResolvedSource
from moorage.api.spec import OpenSourceModelSpec
from moorage.plan import meta
from moorage.plan.children import plan
from moorage.plan.config import PlanConfig
from moorage.plan.drift import drifted
from moorage.plan.observed import EVERYWHERE, GatewayApis, JobState, Observed
from moorage.plan.status import status
from moorage.reconcile.discovery import Discovery
from moorage.reconcile.kube import KindNotServedError, Kube
from moorage.reconcile.observe import _gateway

Obj = dict[str, Any]
POOL_CRD = Path(__file__).parents[1] / "crds" / "inferencepools.inference.networking.k8s.io.yaml"
NOW = "2026-11-27T12:00:00Z"
PICKER = {"name": "tiny-epp", "port": 9002, "failureMode": "FailOpen"}
ROUTE = {"gateway": {"name": "inference-gateway", "namespace": "gateways", "sectionName": "http"}}
RESOLVED = ResolvedSource(
    "hf://org/tiny", "org/tiny", "model", "main", "a" * 40, (HubFile("config.json", 600),), parameters=1000
)
DONE = JobState(succeeded=True)


def model(gateway_spec: Obj | None = None) -> OpenSourceModel:
    spec: Obj = {"source": {"uri": "hf://org/tiny"}}
    if gateway_spec is not None:
        spec["gateway"] = gateway_spec
    return OpenSourceModel.parse(
        {"metadata": {"name": "tiny", "namespace": "ml", "uid": "u-1", "generation": 1}, "spec": spec}
    )


def observed(apis: GatewayApis, live: tuple[tuple[str, str], ...] = ()) -> Observed:
    return Observed(resolved=RESOLVED, pull=DONE, gateway_apis=apis, gateway_hashes=live)


def gateway_children(m: OpenSourceModel, apis: GatewayApis) -> dict[str, Obj]:
    return {c["kind"]: c for c in plan(m, observed(apis), PlanConfig()).children if c["kind"] in KINDS}


KINDS = {"InferencePool", "HTTPRoute"}


def condition(m: OpenSourceModel, seen: Observed) -> tuple[str, str, str] | None:
    s = status(m, seen, plan(m, seen, PlanConfig()), PlanConfig(), NOW)
    found = next((c for c in s.conditions if c.type == "GatewayReady"), None)
    return (found.status, found.reason, found.message) if found else None


def test_no_gateway_spec_no_gateway_objects_and_no_condition() -> None:
    assert gateway_children(model(), EVERYWHERE) == {}
    assert condition(model(), observed(EVERYWHERE)) is None


def test_pool_selects_the_serving_pods_on_vllms_port() -> None:
    m = model({"endpointPicker": PICKER})
    children = plan(m, observed(EVERYWHERE), PlanConfig()).children
    pool = next(c for c in children if c["kind"] == "InferencePool")
    service = next(c for c in children if c["kind"] == "Service")
    deployment = next(c for c in children if c["kind"] == "Deployment")
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    assert pool["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pool["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pool["spec"]["targetPorts"] == [{"number": 8000}]
    assert pool["spec"]["endpointPickerRef"] == {
        "name": "tiny-epp",
        "port": {"number": 9002},
        "failureMode": "FailOpen",
    }
    assert pool["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert pool["metadata"]["labels"][meta.MODEL_LABEL] == "tiny"
    # Applied after serving: a refused gateway object never holds back the Deployment.
    assert [c["kind"] for c in children][-1] == "InferencePool"


def test_picker_defaults_and_no_picker() -> None:
    pool = gateway_children(model({"endpointPicker": {"name": "epp"}}), EVERYWHERE)["InferencePool"]
    assert pool["spec"]["endpointPickerRef"] == {
        "name": "epp",
        "port": {"number": 9002},
        "failureMode": "FailClose",
    }
    bare = gateway_children(model({}), EVERYWHERE)
    assert set(bare) == {"InferencePool"} and "endpointPickerRef" not in bare["InferencePool"]["spec"]


def test_route_from_the_named_gateway_to_the_pool() -> None:
    route_spec = {**ROUTE, "hostnames": ["models.example.com"], "path": "/v1"}
    route = gateway_children(model({"route": route_spec}), EVERYWHERE)["HTTPRoute"]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"] == {
        "parentRefs": [
            {
                "group": "gateway.networking.k8s.io",
                "kind": "Gateway",
                "name": "inference-gateway",
                "namespace": "gateways",
                "sectionName": "http",
            }
        ],
        "hostnames": ["models.example.com"],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                "backendRefs": [
                    {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "tiny"}
                ],
            }
        ],
    }
    minimal = gateway_children(model({"route": {"gateway": {"name": "gw"}}}), EVERYWHERE)["HTTPRoute"]
    assert minimal["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}
    ]
    assert "hostnames" not in minimal["spec"]
    assert minimal["spec"]["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]


def test_without_the_pool_crd_nothing_is_planned_and_the_condition_names_it() -> None:
    m = model({"route": ROUTE})
    assert gateway_children(m, GatewayApis()) == {}
    # Not even a route where only the Gateway API is installed: it would point at nothing.
    assert gateway_children(m, GatewayApis(http_route=True)) == {}
    found = condition(m, observed(GatewayApis()))
    assert found is not None
    state, reason, message = found
    assert (state, reason) == ("False", "InferencePoolCRDNotInstalled")
    assert "inferencepools.inference.networking.k8s.io" in message and "spec.gateway" in message


def test_missing_crds_are_no_failure_of_serving() -> None:
    def ready(m: OpenSourceModel, apis: GatewayApis) -> tuple[str, str]:
        seen = observed(apis)
        c = next(c for c in status(m, seen, plan(m, seen, PlanConfig()), PlanConfig(), NOW).conditions)
        assert c.type == "Ready"
        return c.status, c.reason

    assert ready(model({"route": ROUTE}), GatewayApis()) == ready(model(), GatewayApis())


def test_condition_waits_for_the_live_objects_then_says_applied() -> None:
    m = model({"endpointPicker": PICKER, "route": ROUTE})
    assert condition(m, observed(EVERYWHERE)) == (
        "False",
        "Applying",
        "applying InferencePool tiny, HTTPRoute tiny",
    )
    children = gateway_children(m, EVERYWHERE)
    live = tuple((kind, c["metadata"]["annotations"][meta.SPEC_HASH]) for kind, c in children.items())
    found = condition(m, observed(EVERYWHERE, live))
    assert found is not None and found[:2] == ("True", "Applied")
    assert "HTTPRoute tiny routes / on Gateway gateways/inference-gateway" in found[2]


def test_route_crd_missing_keeps_the_pool_and_names_the_crd() -> None:
    m = model({"route": ROUTE})
    apis = GatewayApis(inference_pool=True)
    children = gateway_children(m, apis)
    assert set(children) == {"InferencePool"}
    live = (("InferencePool", children["InferencePool"]["metadata"]["annotations"][meta.SPEC_HASH]),)
    found = condition(m, observed(apis, live))
    assert found is not None and found[:2] == ("False", "HTTPRouteCRDNotInstalled")
    assert "httproutes.gateway.networking.k8s.io" in found[2]


def test_changed_live_objects_are_drift() -> None:
    pool = gateway_children(model({"endpointPicker": PICKER}), EVERYWHERE)["InferencePool"]
    live = yaml.safe_load(yaml.safe_dump(pool))
    live["spec"]["appProtocol"] = "http"  # the API server's default: not drift
    live["spec"]["endpointPickerRef"]["kind"] = "Service"
    assert drifted(live, pool) == []
    live["spec"]["targetPorts"] = [{"number": 9000}]
    assert drifted(live, pool) == [".spec.targetPorts[0].number"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"route": {**ROUTE, "path": "/a//b"}}, "spec.gateway.route.path: path must not contain //"),
        ({"route": {**ROUTE, "path": "/v1/.."}}, "spec.gateway.route.path: path must not contain"),
        ({"route": {**ROUTE, "path": "v1"}}, "spec.gateway.route.path:"),
        ({"route": {**ROUTE, "hostnames": ["Models.Example.com"]}}, "spec.gateway.route.hostnames[0]:"),
        ({"route": {**ROUTE, "hostnames": []}}, "spec.gateway.route.hostnames:"),
        (
            {"route": {"gateway": {"name": "gw", "namespace": "Gate_ways"}}},
            "spec.gateway.route.gateway.namespace:",
        ),
        ({"route": {}}, "spec.gateway.route.gateway: required"),
        (
            {"endpointPicker": {"name": "epp", "failureMode": "FailSoft"}},
            "spec.gateway.endpointPicker.failureMode:",
        ),
        ({"endpointPicker": {"name": "epp", "port": 0}}, "spec.gateway.endpointPicker.port:"),
        ({"endpointPicker": {"name": "9epp"}}, "spec.gateway.endpointPicker.name:"),
        ({"inferencePool": True}, "spec.gateway.inferencePool: unknown field"),
    ],
)
def test_errors_name_the_field(spec: Obj, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        OpenSourceModelSpec.from_manifest({"source": {"uri": "hf://a/b"}, "gateway": spec})
    assert message in describe(caught.value, "spec")


# The pool against the published v1 schema. The real API server checks it too, with the CEL rules, in
# tests/e2e: test_rendered_children_pass_the_api_server, test_gateway_objects_follow_the_crds_and_the_spec.


def _schema(required_picker: bool = False) -> Obj:
    crd = yaml.safe_load(POOL_CRD.read_text())
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1" and version["served"] and version["storage"]
    schema: Obj = version["schema"]["openAPIV3Schema"]
    if required_picker:  # releases v1.0 to v1.5 of the Inference Extension
        schema["properties"]["spec"]["required"].append("endpointPickerRef")
    return schema


def violations(value: Any, schema: Obj, path: str = "") -> list[str]:
    """A structural schema's checks that apply to our objects: types, required and unknown fields (the
    API server's strict field validation), enums, bounds, lengths and patterns."""
    kind = schema.get("type")
    checks = {"object": dict, "array": list, "string": str, "integer": int}
    if kind in checks and (not isinstance(value, checks[kind]) or isinstance(value, bool)):
        return [f"{path}: not {kind}"]
    found: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{path}: {value!r} not in {schema['enum']}")
    if kind == "string":
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", 1 << 30):
            found.append(f"{path}: length")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            found.append(f"{path}: pattern")
    if kind == "integer" and not schema.get("minimum", -(1 << 62)) <= value <= schema.get("maximum", 1 << 62):
        found.append(f"{path}: bounds")
    if kind == "array":
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", 1 << 30):
            found.append(f"{path}: items")
        for index, item in enumerate(value):
            found += violations(item, schema["items"], f"{path}[{index}]")
    if kind == "object" and not schema.get("x-kubernetes-preserve-unknown-fields"):
        properties = schema.get("properties")
        found += [f"{path}.{key}: required" for key in schema.get("required", []) if key not in value]
        if not schema.get("minProperties", 0) <= len(value) <= schema.get("maxProperties", 1 << 30):
            found.append(f"{path}: properties")
        for key, item in value.items():
            if properties is not None and key in properties:
                found += violations(item, properties[key], f"{path}.{key}")
            elif "additionalProperties" in schema:
                found += violations(item, schema["additionalProperties"], f"{path}.{key}")
            elif properties is not None and path != ".metadata":
                found.append(f"{path}.{key}: unknown field")
    return found


def test_the_schema_check_can_fail() -> None:
    pool = gateway_children(model({}), EVERYWHERE)["InferencePool"]
    bad = {**pool, "spec": {**pool["spec"], "targetPorts": [{"number": 0}], "endpointPickerRef": {"port": 1}}}
    assert violations(bad, _schema()) == [
        ".spec.targetPorts[0].number: bounds",
        ".spec.endpointPickerRef.name: required",
        ".spec.endpointPickerRef.port: not object",
    ]
    assert violations({**pool, "spec": {**pool["spec"], "port": 8000}}, _schema()) == [
        ".spec.port: unknown field"
    ]


@pytest.mark.parametrize("picker", [PICKER, {"name": "epp"}], ids=["picker", "picker-defaults"])
def test_pool_fits_the_published_v1_schema(picker: Obj) -> None:
    pool = gateway_children(model({"endpointPicker": picker, "route": ROUTE}), EVERYWHERE)["InferencePool"]
    assert violations(pool, _schema()) == []
    assert violations(pool, _schema(required_picker=True)) == []


def test_pool_without_a_picker_fits_v1_6_only() -> None:
    pool = gateway_children(model({}), EVERYWHERE)["InferencePool"]
    assert violations(pool, _schema()) == []
    assert violations(pool, _schema(required_picker=True)) == [".spec.endpointPickerRef: required"]


def test_the_golden_pool_fits_the_published_v1_schema() -> None:
    golden = Path(__file__).parent / "golden" / "qwen-gateway.yaml"
    pools = [d for d in yaml.safe_load_all(golden.read_text()) if d and d["kind"] == "InferencePool"]
    assert len(pools) == 1
    assert violations(pools[0], _schema(required_picker=True)) == []


class CountingKube:
    def __init__(self, served: set[str]) -> None:
        self.kinds, self.calls = served, 0

    async def served(self, kind: str, namespace: str) -> bool:
        self.calls += 1
        return kind in self.kinds


def test_discovery_is_remembered_until_it_expires_or_is_forgotten() -> None:
    kube = CountingKube({"InferencePool"})
    clock = [0.0]
    discovery = Discovery(kube, ttl=300, clock=lambda: clock[0])  # type: ignore[arg-type]

    def ask() -> GatewayApis:
        return asyncio.run(discovery.gateway_apis("ml"))

    assert ask() == GatewayApis(inference_pool=True, http_route=False) and kube.calls == 2
    clock[0] = 299
    ask()
    assert kube.calls == 2
    clock[0] = 301
    ask()
    assert kube.calls == 4
    kube.kinds.add("HTTPRoute")
    discovery.forget()
    assert ask() == EVERYWHERE and kube.calls == 6


class ListingClient:
    """A lightkube client whose list answers with one error (or one object)."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def list(self, *_: Any, **__: Any) -> Any:
        error = self.error

        async def items() -> Any:
            if error is not None:
                raise error
            yield {}

        return items()


def _status_error(code: int) -> Exception:
    request = httpx2.Request(
        "GET", "https://k/apis/inference.networking.k8s.io/v1/namespaces/ml/inferencepools"
    )
    return httpx2.HTTPStatusError("404", request=request, response=httpx2.Response(code, request=request))


@pytest.mark.parametrize(
    ("error", "served"),
    [
        (None, True),
        (ApiError(status=Status(code=404, message="not found")), False),
        (_status_error(404), False),  # what the API server says of a kind it does not know: plain text
        (ApiError(status=Status(code=403, message="forbidden")), False),  # RBAC without the gateway rules
    ],
    ids=["served", "404", "404-plain", "403"],
)
def test_served_is_a_list_that_may_find_nothing(error: Exception | None, served: bool) -> None:
    kube = Kube(ListingClient(error))  # type: ignore[arg-type]
    assert asyncio.run(kube.served("InferencePool", "ml")) is served


def test_other_errors_of_the_list_are_raised() -> None:
    kube = Kube(ListingClient(ApiError(status=Status(code=500, message="etcd"))))  # type: ignore[arg-type]
    with pytest.raises(ApiError):
        asyncio.run(kube.served("InferencePool", "ml"))


class VanishedCrdKube(CountingKube):
    """The HTTPRoute CRD was removed after discovery looked: a get of the kind is a plain-text 404."""

    def __init__(self) -> None:
        super().__init__({"InferencePool", "HTTPRoute"})

    async def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        if kind == "HTTPRoute" and kind not in self.kinds:
            raise KindNotServedError(kind)
        return None


def test_a_crd_removed_since_discovery_is_found_out_not_a_failed_reconcile() -> None:
    kube = VanishedCrdKube()
    discovery = Discovery(kube)  # type: ignore[arg-type]
    assert asyncio.run(discovery.gateway_apis("ml")) == EVERYWHERE
    kube.kinds.discard("HTTPRoute")  # and no CRD event reached the operator
    live: dict[tuple[str, str], Obj] = {}
    apis, hashes = asyncio.run(_gateway(kube, discovery, model(), live))  # type: ignore[arg-type]
    assert apis == GatewayApis(inference_pool=True, http_route=False) and hashes == () and live == {}


def test_a_get_of_a_kind_not_served_says_so() -> None:
    class GettingClient:
        async def get(self, *_: Any, **__: Any) -> Any:
            raise _status_error(404)

    with pytest.raises(KindNotServedError):
        asyncio.run(Kube(GettingClient()).get("HTTPRoute", "ml", "m", watched=False))  # type: ignore[arg-type]
