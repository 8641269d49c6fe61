"""The few Kubernetes calls the operator makes, as plain dicts in and out (lightkube underneath)."""

import asyncio
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
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import CascadeType, PatchType

from moorage.api.model import GROUP, KIND, PLURAL, VERSION
from moorage.plan.gateway import GATEWAY_KINDS
from moorage.reconcile.cache import Cache

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
    "EndpointSlice": EndpointSlice,
    "Job": Job,
    "PersistentVolumeClaim": PersistentVolumeClaim,
    "Pod": Pod,
    "PodDisruptionBudget": PodDisruptionBudget,
    "ScaledObject": ScaledObject,
    "ReplicaSet": ReplicaSet,
    "Service": Service,
}

Obj = dict[str, Any]

MAX_IN_FLIGHT = 32
"""Requests the operator has open at once, per kind. A thousand models applied together would otherwise
send thousands at the same moment: the API server then answers each late, past the client's timeout, and
the request made again costs as much as the first (a Service abandoned that way even leaks its address
until the API server's repair loop finds it). Per kind, because the API server is much slower on some
(Services wait for an address) and those must not hold back the status of every model."""


class KindNotServedError(Exception):
    """The API server does not serve the kind (its CRD is not installed, or was just removed)."""


def namespace_terminating(error: ApiError) -> bool:
    """The API server refuses new objects in a namespace being deleted (403, not an RBAC denial)."""
    return error.status.code == 403 and "being terminated" in (error.status.message or "")


def _plain(obj: Any) -> Obj:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


class Kube:
    """Reads come from the watch-fed cache where it can answer, else from the API server; writes go to the
    API server, and its answer into the cache."""

    def __init__(
        self, client: AsyncClient, cache: Cache | None = None, max_in_flight: int = MAX_IN_FLIGHT
    ) -> None:
        # lightkube's overloads are keyed on resource classes; this layer works with dicts on purpose.
        self.client: Any = client
        self.cache = cache if cache is not None else Cache()
        self._max_in_flight = max_in_flight
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}
        self._forbidden: set[str] = set()

    async def get(self, kind: str, namespace: str, name: str, *, watched: bool = True) -> Obj | None:
        """`watched=False` for an object the operator's watches may not see (one it does not manage)."""
        store = self.cache.synced(kind) if watched else None
        if store is not None:
            return store.get(namespace, name)
        resource = OpenSourceModelResource if kind == KIND else KINDS[kind]
        try:
            async with self._slot(kind):
                return _plain(await self.client.get(resource, name, namespace=namespace))
        except ApiError as error:
            if error.status.code == 404:
                return None
            raise
        except httpx2.HTTPStatusError as error:
            # An unknown resource's 404 is a plain-text page, not a Status: the kind is not served.
            if error.response.status_code == 404:
                raise KindNotServedError(kind) from error
            raise

    async def select(
        self, kind: str, namespace: str, labels: Mapping[str, str | None], owner: str | None = None
    ) -> list[Obj]:
        """Objects whose labels match (a None value matches any value of that label), and that `owner`
        (a uid) owns, when given."""
        store = self.cache.synced(kind)
        if store is not None:
            return store.select(namespace, labels, owner)
        selector = {k: operators.exists() if v is None else v for k, v in labels.items()}
        async with self._slot(kind):
            found = [
                _plain(o) async for o in self.client.list(KINDS[kind], namespace=namespace, labels=selector)
            ]
        if owner is None:
            return found
        return [
            o for o in found if any(r.get("uid") == owner for r in o["metadata"].get("ownerReferences") or [])
        ]

    def _slot(self, kind: str) -> asyncio.Semaphore:
        return self._slots.setdefault(kind, asyncio.Semaphore(self._max_in_flight))

    def _one_at_a_time(self, kind: str, namespace: str, name: str) -> asyncio.Lock:
        """Writes to one object wait for each other here, not in the API server: the weights volume of a
        base many models share gets an owner reference from each, and applied all at once they conflict
        and are retried there until they time out."""
        return self._locks.setdefault((kind, namespace, name), asyncio.Lock())

    def _remember(self, kind: str, answer: Any) -> None:
        """The API server's answer to our write: the body the next reconcile must see."""
        if answer is not None and kind in self.cache.stores:
            self.cache.store(kind).put(_plain(answer), ours=True)

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
        metadata = manifest["metadata"]
        key = (manifest["kind"], metadata.get("namespace") or "", metadata["name"])
        async with self._one_at_a_time(*key), self._slot(manifest["kind"]):
            answer = await self.client.apply(
                codecs.from_dict(manifest), field_manager=field_manager, force=True
            )
        self._remember(manifest["kind"], answer)

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
            async with self._slot(kind):
                await self.client.delete(
                    KINDS[kind], name, namespace=namespace, cascade=CascadeType.BACKGROUND
                )
        except ApiError as error:
            if error.status.code != 404:
                raise
        if kind in self.cache.stores:
            self.cache.store(kind).remove(namespace, name)

    async def patch(self, kind: str, namespace: str, name: str, patch: list[Obj]) -> None:
        async with self._one_at_a_time(kind, namespace, name), self._slot(kind):
            answer = await self.client.patch(
                KINDS[kind], name, patch, namespace=namespace, patch_type=PatchType.JSON
            )
        self._remember(kind, answer)

    async def patch_status(self, namespace: str, name: str, status: Obj) -> None:
        async with self._slot(KIND):
            answer = await self.client.patch(
                OpenSourceModelResource.Status,
                name,
                {"status": status},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        self._remember(KIND, answer)

    async def log_tail(self, namespace: str, pod: str, lines: int) -> list[str]:
        """The last lines a pod's container printed; empty when the kubelet cannot say (yet)."""
        try:
            async with self._slot("Pod"):
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
        async with self._slot("Event"):
            await self.client.create(codecs.from_dict(event), namespace=metadata["namespace"])
