"""Scale to zero: while a model with minReplicas 0 has no ready replica, its Service also routes to the
activator, which holds the requests, wakes the model and forwards them once a replica is ready.

How: the model's Service keeps its selector (Kubernetes keeps the pods' EndpointSlice), and the operator
adds a second EndpointSlice of that Service, labelled with its name, that lists the activator's pods.
kube-proxy routes a Service to the endpoints of all its slices, so with no ready pod every request goes
to the activator. Once a replica is ready the operator deletes that slice: the activator is out of the data
path, and the requests it still holds go straight to the pods. A model that never scales to zero (and a
model whose cluster runs no activator) gets no such slice: its children are what they always were.
"""

from moorage.api.activation import (
    ACTIVATOR_PORT,
    SERVICE_NAME_LABEL,
    SLICE_MANAGER,
    SLICE_MANAGER_LABEL,
    Hold,
)
from moorage.api.model import OpenSourceModel
from moorage.plan.meta import Manifest, child, labels, truncate_name
from moorage.plan.observed import Observed


def scales_to_zero(model: OpenSourceModel) -> bool:
    scaling = model.spec.serving.autoscaling
    return scaling is not None and scaling.to_zero


def hold(model: OpenSourceModel) -> Hold | None:
    """The activator's settings for this model, None when it does not scale to zero."""
    scaling = model.spec.serving.autoscaling
    if scaling is None or not scaling.to_zero:
        return None
    cold = scaling.holding()
    return Hold(cold.hold_timeout(), cold.queue_bound())


def slice_name(model: OpenSourceModel) -> str:
    return truncate_name(model.metadata.name, "activator")


def in_path(model: OpenSourceModel, observed: Observed) -> bool:
    """The activator should take the model's requests: it scales to zero, an activator runs, and no
    replica is ready (at zero, or starting)."""
    if not scales_to_zero(model) or not observed.activator:
        return False
    return observed.deployment is None or observed.deployment.ready_replicas == 0


def endpoint_slice(model: OpenSourceModel, addresses: tuple[str, ...]) -> Manifest:
    """The slice that sends the model's Service to the activator's pods (`addresses`, their IPs)."""
    family = "IPv6" if ":" in addresses[0] else "IPv4"
    body = {
        "addressType": family,
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in sorted(addresses)],
        # Named as the Service's port: kube-proxy matches them by name, so the Service's 8000 reaches
        # the activator's port.
        "ports": [{"name": "http", "port": ACTIVATOR_PORT, "protocol": "TCP", "appProtocol": "http"}],
    }
    return child(
        model,
        api_version="discovery.k8s.io/v1",
        kind="EndpointSlice",
        name=slice_name(model),
        labels_=labels(model, "activator")
        | {SERVICE_NAME_LABEL: model.metadata.name, SLICE_MANAGER_LABEL: SLICE_MANAGER},
        body=body,
    )
