"""spec.gateway: the model as an InferencePool behind the cluster's inference gateway.

The shapes follow the published APIs they end up in (Gateway API Inference Extension v1 InferencePool,
Gateway API v1 HTTPRoute), with their bounds and patterns, so `kubectl apply` refuses what the API server
would later refuse the operator.
"""

from typing import Annotated, Literal

from pydantic import Field

from moorage.api.base import ApiModel, Rule

DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
"""A Service's name: the endpoint picker is referred to as a Service."""
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""Gateway API's Hostname: a DNS name, optionally with a leading wildcard label, no IP, no port."""

BAD_PATH_PARTS = ("//", "/./", "/../", "%2f", "%2F", "#")
BAD_PATH_ENDS = ("/..", "/.")
"""What Gateway API's HTTPRoute refuses in a PathPrefix value (its CEL rules), refused here first."""


def _path_ok(path: str) -> bool:
    return not any(p in path for p in BAD_PATH_PARTS) and not path.endswith(BAD_PATH_ENDS)


def _cel_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{i}'" for i in items) + "]"


class EndpointPicker(ApiModel):
    """The endpoint picker that chooses a serving pod for each request: the Inference Extension's EPP or
    the llm-d router (inference scheduler), deployed by you, referred to as a Service."""

    name: Annotated[str, Field(pattern=DNS_1035_LABEL, max_length=63)]
    """The endpoint picker's Service, in the model's namespace."""
    port: Annotated[int, Field(ge=1, le=65535)] = 9002
    """The Service's port for the gateway's ext-proc calls. Default 9002, the EPP's own default."""
    failure_mode: Literal["FailOpen", "FailClose"] = "FailClose"
    """What the gateway does when the picker does not answer: FailClose (default) refuses the request,
    FailOpen sends it to a pod of the pool without the picker's choice."""


class ParentGateway(ApiModel):
    """The Gateway the HTTPRoute attaches to (Gateway API parentRef)."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    namespace: Annotated[str | None, Field(pattern=DNS_LABEL, max_length=63)] = None
    """Default: the model's namespace. A Gateway in another namespace must allow routes from this one
    (its listeners' allowedRoutes)."""
    section_name: Annotated[str | None, Field(pattern=DNS_SUBDOMAIN, max_length=253)] = None
    """One listener of the Gateway, by name. Default: every listener that allows the route."""


class Route(ApiModel):
    """An HTTPRoute from a Gateway to the model's InferencePool."""

    rules = (
        Rule(
            cel=f"!has(self.path) || (!{_cel_list(BAD_PATH_PARTS)}.exists(p, self.path.contains(p))"
            f" && !{_cel_list(BAD_PATH_ENDS)}.exists(e, self.path.endsWith(e)))",
            message="path must not contain //, /./, /../, %2f or #, nor end with /. or /.. (as in HTTPRoute)",
            check=lambda r: _path_ok(r.path),
            field="path",
        ),
    )

    gateway: ParentGateway
    hostnames: Annotated[
        list[Annotated[str, Field(pattern=HOSTNAME, min_length=1, max_length=253)]] | None,
        Field(min_length=1, max_length=16),
    ] = None
    """Host names the route answers for, e.g. [models.example.com]. Default: any the Gateway accepts."""
    path: Annotated[str, Field(pattern=r"^/[^\s?]*$", max_length=1024)] = "/"
    """Requests whose path starts with this prefix go to the model. Default "/": all of them, as the
    OpenAI API lives under /v1."""


class Gateway(ApiModel):
    """Plugs the model into a Kubernetes inference gateway: an InferencePool selecting its serving pods
    and, with route, an HTTPRoute from your Gateway to that pool. Applied where the CRDs are installed;
    elsewhere the GatewayReady condition says which CRD is missing, and serving is unaffected."""

    endpoint_picker: EndpointPicker | None = None
    """The pool's endpointPickerRef. Most gateways need one; InferencePool CRDs of the Inference
    Extension before v1.6 refuse a pool without it."""
    route: Route | None = None
