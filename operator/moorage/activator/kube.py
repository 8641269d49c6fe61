"""The activator's reads and its one write: a model's Deployment (coldStart settings, and its scale, which
the activator sets from 0 to 1 as KEDA would), the model's pods' EndpointSlices, and the Services' cluster
IPs of the models it serves. Its RBAC allows these and nothing else (charts/moorage/templates/activator.yaml).
"""

import time
from typing import Any

from lightkube import ALL_NS, AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Service
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType

from moorage.activator.gate import ModelKey
from moorage.api.activation import SERVICE_NAME_LABEL, SLICE_CONTROLLER, SLICE_MANAGER_LABEL, Hold, ready_ips

MANAGED: dict[str, Any] = {"app.kubernetes.io/managed-by": "moorage"}
SETTINGS_SECONDS = 10.0
"""How long a model's coldStart settings are reused before its Deployment is read again."""
ADDRESSES_SECONDS = 5.0
"""The least time between two listings of the Services when an unknown cluster IP comes."""
FIELD_MANAGER = "moorage-activator"
PORT_NAME = "http"


class KubeCluster:
    def __init__(self, client: AsyncClient, namespaces: list[str]) -> None:
        self.client, self.namespaces = client, namespaces or [ALL_NS]
        self._settings: dict[ModelKey, tuple[float, Hold | None]] = {}
        self._addresses: dict[str, ModelKey] = {}
        self._listed = float("-inf")

    def _serves(self, model: ModelKey) -> bool:
        return ALL_NS in self.namespaces or model.namespace in self.namespaces

    async def hold_settings(self, model: ModelKey) -> Hold | None:
        now = time.monotonic()
        cached = self._settings.get(model)
        if cached is not None and now - cached[0] < SETTINGS_SECONDS:
            return cached[1]
        hold = None
        if self._serves(model):
            try:
                deployment = await self.client.get(Deployment, model.name, namespace=model.namespace)
                metadata = deployment.metadata
                labels = (metadata.labels if metadata else None) or {}
                if all(labels.get(k) == v for k, v in MANAGED.items()):
                    hold = Hold.from_annotations((metadata.annotations if metadata else None) or {})
            except ApiError as error:
                if error.status.code not in (403, 404):
                    raise
        self._settings[model] = (now, hold)
        return hold

    async def wake(self, model: ModelKey) -> bool:
        scale = await self.client.get(Deployment.Scale, model.name, namespace=model.namespace)
        if scale.spec is not None and (scale.spec.replicas or 0) > 0:
            return False
        await self.client.patch(
            Deployment.Scale,
            model.name,
            {"spec": {"replicas": 1}},
            namespace=model.namespace,
            patch_type=PatchType.MERGE,
            field_manager=FIELD_MANAGER,
        )
        return True

    async def ready_endpoints(self, model: ModelKey) -> list[str]:
        labels: dict[str, Any] = {SERVICE_NAME_LABEL: model.name, SLICE_MANAGER_LABEL: SLICE_CONTROLLER}
        found: list[str] = []
        async for slice_ in self.client.list(EndpointSlice, namespace=model.namespace, labels=labels):
            found += ready_addresses(slice_.to_dict())
        return sorted(found)

    async def find(self, address: str) -> ModelKey | None:
        """The model whose Service has this cluster IP (a client that called the Service by its IP)."""
        if address not in self._addresses and time.monotonic() - self._listed > ADDRESSES_SECONDS:
            self._listed = time.monotonic()
            addresses = {}
            for namespace in self.namespaces:
                async for service in self.client.list(Service, namespace=namespace, labels=MANAGED):
                    meta, spec = service.metadata, service.spec
                    if meta and meta.name and meta.namespace and spec:
                        for ip in spec.clusterIPs or ([spec.clusterIP] if spec.clusterIP else []):
                            addresses[ip] = ModelKey(meta.namespace, meta.name)
            self._addresses = addresses
        return self._addresses.get(address)


def ready_addresses(slice_: dict[str, Any]) -> list[str]:
    """host:port of the ready endpoints of one EndpointSlice (its port named http)."""
    port = next((p.get("port") for p in slice_.get("ports") or [] if p.get("name") == PORT_NAME), None)
    if port is None:
        return []
    ipv6 = slice_.get("addressType") == "IPv6"
    return [f"[{address}]:{port}" if ipv6 else f"{address}:{port}" for address in ready_ips(slice_)]
