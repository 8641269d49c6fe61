"""What the operator and the activator agree on for models that scale to zero (minReplicas: 0).

The operator writes these on the children; the activator, a separate program, reads them. Neither imports
the other: this module is the contract.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from moorage.api.model import LABEL_PREFIX
from moorage.api.spec import DEFAULT_HOLD_TIMEOUT_SECONDS, DEFAULT_MAX_QUEUED

COLD_START = f"{LABEL_PREFIX}/cold-start"
"""Annotation on the Deployment of a model that scales to zero: its coldStart settings as JSON. The
activator serves only Deployments that carry it."""
ACTIVATOR_PORT = 8080
"""The port the activator takes requests on (its pods' and the model's activator EndpointSlice's)."""
ACTIVATOR_METRICS_PORT = 9090
"""The activator's port of /metrics, /healthz and /held/<namespace>/<name> (what KEDA asks)."""
ACTIVATOR_LABEL = f"{LABEL_PREFIX}/activator"
"""Label of the activator's Service (copied by Kubernetes onto its EndpointSlices), which the operator
watches to learn the activator's addresses."""
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
"""The label that ties an EndpointSlice to its Service (kube-proxy routes a Service to every such slice)."""
SLICE_MANAGER_LABEL = "endpointslice.kubernetes.io/managed-by"
SLICE_CONTROLLER = "endpointslice-controller.k8s.io"
"""The managed-by value of the slices Kubernetes keeps from a Service's selector: the model's pods."""
SLICE_MANAGER = "operator.moorage.dev"
"""The managed-by value of the slice that points a model's Service at the activator."""
HELD_METRIC = "moorage_activator_requests_held"
"""The activator's gauge of requests held per model (labels model_namespace, model), for dashboards and
alerts; KEDA reads the same number from the activator's /held/<namespace>/<name>."""


@dataclass(frozen=True)
class Hold:
    """How long and how many requests the activator holds for one model."""

    timeout_seconds: int = DEFAULT_HOLD_TIMEOUT_SECONDS
    max_queued: int = DEFAULT_MAX_QUEUED

    def annotation(self) -> str:
        return json.dumps({"holdTimeoutSeconds": self.timeout_seconds, "maxQueued": self.max_queued})

    @staticmethod
    def from_annotations(annotations: dict[str, str]) -> "Hold | None":
        """None: the Deployment does not scale to zero (or the annotation is not ours to read)."""
        raw = annotations.get(COLD_START)
        if raw is None:
            return None
        try:
            values = json.loads(raw)
            return Hold(int(values["holdTimeoutSeconds"]), int(values["maxQueued"]))
        except (ValueError, KeyError, TypeError):
            return Hold()


def ready_ips(endpoint_slice: Mapping[str, Any]) -> list[str]:
    """The addresses of an EndpointSlice's ready endpoints (a missing condition counts as ready, as
    kube-proxy counts it)."""
    return [
        address
        for endpoint in endpoint_slice.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready") is not False
        for address in endpoint.get("addresses") or []
    ]
