"""The model behind an inference gateway: an InferencePool over its serving pods, and an HTTPRoute to it.

Shapes from the published APIs: Gateway API Inference Extension `inference.networking.k8s.io/v1`
InferencePool (spec.selector.matchLabels, spec.targetPorts, spec.endpointPickerRef) and Gateway API
`gateway.networking.k8s.io/v1` HTTPRoute (a backendRef of group inference.networking.k8s.io, kind
InferencePool). Both are built only where their CRDs are served (`GatewayApis`, as observed).
"""

from dataclasses import dataclass

from moorage.api.model import OpenSourceModel
from moorage.plan.meta import Manifest, child, labels, selector
from moorage.plan.observed import GatewayApis
from moorage.plan.serving import PORT


@dataclass(frozen=True)
class Api:
    """A custom resource kind the operator makes only where its CRD is installed."""

    group: str
    version: str
    kind: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def crd(self) -> str:
        """The CRD's name, as `kubectl get crd` shows it."""
        return f"{self.plural}.{self.group}"


INFERENCE_POOL = Api("inference.networking.k8s.io", "v1", "InferencePool", "inferencepools")
HTTP_ROUTE = Api("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
GATEWAY_KINDS = (INFERENCE_POOL, HTTP_ROUTE)
API_VERSIONS = frozenset(api.api_version for api in GATEWAY_KINDS)


def inference_pool(model: OpenSourceModel) -> Manifest:
    """The pool of the model's serving pods: the same pods its Service selects, on vLLM's port."""
    gateway = model.spec.gateway
    spec: Manifest = {"selector": {"matchLabels": selector(model)}, "targetPorts": [{"number": PORT}]}
    picker = gateway.endpoint_picker if gateway else None
    if picker is not None:
        spec["endpointPickerRef"] = {
            "name": picker.name,
            "port": {"number": picker.port},
            "failureMode": picker.failure_mode,
        }
    return child(
        model,
        api_version=INFERENCE_POOL.api_version,
        kind=INFERENCE_POOL.kind,
        name=model.metadata.name,
        labels_=labels(model, "gateway"),
        body={"spec": spec},
    )


def http_route(model: OpenSourceModel) -> Manifest | None:
    """A route from the named Gateway to the model's pool; None without spec.gateway.route."""
    route = model.spec.gateway.route if model.spec.gateway else None
    if route is None:
        return None
    parent = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": route.gateway.name}
    if route.gateway.namespace is not None:
        parent["namespace"] = route.gateway.namespace
    if route.gateway.section_name is not None:
        parent["sectionName"] = route.gateway.section_name
    spec: Manifest = {"parentRefs": [parent]}
    if route.hostnames:
        spec["hostnames"] = list(route.hostnames)
    # No port on the backendRef: the pool's targetPorts say where its pods listen.
    backend = {"group": INFERENCE_POOL.group, "kind": INFERENCE_POOL.kind, "name": model.metadata.name}
    spec["rules"] = [
        {"matches": [{"path": {"type": "PathPrefix", "value": route.path}}], "backendRefs": [backend]}
    ]
    return child(
        model,
        api_version=HTTP_ROUTE.api_version,
        kind=HTTP_ROUTE.kind,
        name=model.metadata.name,
        labels_=labels(model, "gateway"),
        body={"spec": spec},
    )


def children(model: OpenSourceModel, apis: GatewayApis) -> list[Manifest]:
    """The gateway objects the spec asks for that this cluster can hold."""
    if model.spec.gateway is None or not apis.inference_pool:
        return []
    # A route to a pool that cannot exist would only point nowhere: no pool, no route.
    wanted = [inference_pool(model)]
    route = http_route(model)
    if route is not None and apis.http_route:
        wanted.append(route)
    return wanted


def missing(model: OpenSourceModel, apis: GatewayApis) -> Api | None:
    """The first kind the spec asks for whose CRD this cluster does not serve."""
    gateway = model.spec.gateway
    if gateway is None:
        return None
    if not apis.inference_pool:
        return INFERENCE_POOL
    if gateway.route is not None and not apis.http_route:
        return HTTP_ROUTE
    return None
