"""The few Kubernetes calls the operator makes, as plain dicts in and out (lightkube underneath)."""

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx2
from lightkube import AsyncClient, codecs, operators
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment, ReplicaSet
from lightkube.resources.batch_v1 import Job
from lightkube.resources.core_v1 import PersistentVolumeClaim, Pod, Service
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import CascadeType, PatchType

from moorage.api.model import GROUP, KIND, PLURAL, VERSION
from moorage.plan.gateway import GATEWAY_KINDS

log = logging.getLogger("moorage.kube")
FIELD_MANAGER = "moorage"
OpenSourceModelResource = create_namespaced_resource(GROUP, VERSION, KIND, PLURAL)
ScaledObject = create_namespaced_resource("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects")
KINDS: dict[str, Any] = {
    **{
        api.kind: create_namespaced_resource(api.group, api.version, api.kind, api.plural)
        for api in GATEWAY_KINDS
    },
    "Deployment": Deployment,
    "Job": Job,
    "PersistentVolumeClaim": PersistentVolumeClaim,
    "Pod": Pod,
    "PodDisruptionBudget": PodDisruptionBudget,
    "ScaledObject": ScaledObject,
    "ReplicaSet": ReplicaSet,
    "Service": Service,
}

Obj = dict[str, Any]


def namespace_terminating(error: ApiError) -> bool:
    """The API server refuses new objects in a namespace being deleted (403, not an RBAC denial)."""
    return error.status.code == 403 and "being terminated" in (error.status.message or "")


def _plain(obj: Any) -> Obj:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


class Kube:
    def __init__(self, client: AsyncClient) -> None:
        # lightkube's overloads are keyed on resource classes; this layer works with dicts on purpose.
        self.client: Any = client
        self._forbidden: set[str] = set()

    async def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        resource = OpenSourceModelResource if kind == KIND else KINDS[kind]
        try:
            return _plain(await self.client.get(resource, name, namespace=namespace))
        except ApiError as error:
            if error.status.code == 404:
                return None
            raise

    async def select(self, kind: str, namespace: str, labels: Mapping[str, str | None]) -> list[Obj]:
        """Objects whose labels match; a None value matches any value of that label."""
        selector = {k: operators.exists() if v is None else v for k, v in labels.items()}
        return [_plain(o) async for o in self.client.list(KINDS[kind], namespace=namespace, labels=selector)]

    async def served(self, kind: str, namespace: str) -> bool:
        """Whether the API server serves `kind` (its CRD is installed): a list of at most one object in a
        namespace the operator serves, which it may list anyway to watch its children. 404: not served.
        403: the operator's RBAC leaves the kind out (a chart of its own): as good as not served, said once
        in the log, so that serving never depends on it."""
        try:
            async for _ in self.client.list(KINDS[kind], namespace=namespace, chunk_size=1):
                break
        except ApiError as error:
            if error.status.code == 404:
                return False
            if error.status.code == 403:
                if kind not in self._forbidden:
                    self._forbidden.add(kind)
                    log.warning("may not list %s in %s (RBAC); treating it as not installed", kind, namespace)
                return False
            raise
        except httpx2.HTTPStatusError as error:
            # An unknown resource's 404 is a plain-text page, not a Status: lightkube leaves it to httpx2.
            if error.response.status_code == 404:
                return False
            raise
        return True

    async def apply(self, manifest: Obj, field_manager: str = FIELD_MANAGER) -> None:
        """Server-side apply: we own the fields we set, and only those."""
        await self.client.apply(codecs.from_dict(manifest), field_manager=field_manager, force=True)

    async def apply_fields(
        self, kind: str, namespace: str, name: str, fields: Obj, field_manager: str
    ) -> None:
        """Server-side apply of a few fields of an existing object (sent as they are: a partial object would
        not pass lightkube's own check of the whole kind)."""
        await self.client.patch(
            KINDS[kind],
            name,
            fields,
            namespace=namespace,
            patch_type=PatchType.APPLY,
            field_manager=field_manager,
            force=True,
        )

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            await self.client.delete(KINDS[kind], name, namespace=namespace, cascade=CascadeType.BACKGROUND)
        except ApiError as error:
            if error.status.code != 404:
                raise

    async def patch(self, kind: str, namespace: str, name: str, patch: list[Obj]) -> None:
        await self.client.patch(KINDS[kind], name, patch, namespace=namespace, patch_type=PatchType.JSON)

    async def patch_status(self, namespace: str, name: str, status: Obj) -> None:
        await self.client.patch(
            OpenSourceModelResource.Status,
            name,
            {"status": status},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )

    async def log_tail(self, namespace: str, pod: str, lines: int) -> list[str]:
        """The last lines a pod's container printed; empty when the kubelet cannot say (yet)."""
        try:
            return [
                line.rstrip("\n")
                async for line in self.client.log(pod, namespace=namespace, tail_lines=lines)
            ]
        except ApiError:
            return []

    async def event(self, model: Obj, type_: str, reason: str, message: str) -> None:
        metadata = model["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
            "involvedObject": {
                "apiVersion": model["apiVersion"],
                "kind": KIND,
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata.get("uid"),
                "resourceVersion": metadata.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "moorage"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": "moorage.dev/operator",
            "reportingInstance": "moorage",
        }
        await self.client.create(codecs.from_dict(event), namespace=metadata["namespace"])
