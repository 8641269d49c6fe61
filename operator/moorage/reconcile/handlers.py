"""The kopf layer, thin: every event about a model or one of its children triggers that model's reconcile,
and every body the watches bring goes into the cache the reconcile reads from."""

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import httpx2
import kopf
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig

from moorage.api.activation import ACTIVATOR_LABEL, ready_ips
from moorage.api.model import GROUP, PLURAL, VERSION
from moorage.plan.autoscaling import KEDA_CRD
from moorage.plan.config import PlanConfig
from moorage.plan.gateway import GATEWAY_KINDS
from moorage.plan.meta import MANAGED_BY, MODEL_LABEL, OPERATOR, WEIGHTS_LABEL
from moorage.plan.weights import claim_of
from moorage.reconcile.cache import Cache, Store, resource_version
from moorage.reconcile.discovery import Discovery
from moorage.reconcile.kube import Kube
from moorage.reconcile.metrics import Metrics
from moorage.reconcile.queue import WorkQueue
from moorage.reconcile.reconciler import Reconciler
from moorage.reconcile.resolver import Resolver

log = logging.getLogger("moorage.operator")
GATEWAY_CRDS = frozenset(api.crd for api in GATEWAY_KINDS)

API_TIMEOUT = httpx2.Timeout(60.0, connect=10.0)
"""A busy API server can take more than lightkube's 10 s for a write (Services queue for their address):
a request abandoned at 10 s is done again from the start, which makes the queue longer still."""


class Operator:
    """What the handlers share; set up once kopf's event loop runs."""

    config: PlanConfig = PlanConfig()
    kubeconfig: KubeConfig | None = None
    """Read before kopf starts, so a missing one is a one-line error, not a retry loop."""
    queue: WorkQueue | None = None
    cache: Cache = Cache()
    """What the watches said; a fresh one each start."""
    metrics: Metrics = Metrics()
    """Served by `moorage run --metrics-port` from its own thread."""
    discovery: Discovery | None = None


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf computes each event's "essence" (a deep copy of the body, less its status) to diff it with the
    last one, for change handlers. We have only event handlers, which never see that diff: at a thousand
    models the copies were a tenth of the operator's CPU."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None
    ) -> kopf.BodyEssence:
        return cast(kopf.BodyEssence, {})

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


@kopf.on.startup()
async def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Only event handlers, so kopf keeps no progress, diff-base or finalizer on the models: nothing a
    # GitOps diff would show. Our own events replace kopf's log-to-event posting.
    settings.posting.enabled = False
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.watching.server_timeout = 300
    for watched in WATCHED:
        if watched.selector:
            # Filtered by the API server, not after the bytes came: the operator never sees others' pods.
            key = (watched.group, watched.version, watched.plural)
            settings.watching.label_selectors[key] = watched.selector
    settings.watching.label_selectors["discovery.k8s.io", "v1", "endpointslices"] = ACTIVATOR_LABEL
    Operator.cache = Cache({watched.kind: Store() for watched in WATCHED})
    client = AsyncClient(
        config=Operator.kubeconfig or KubeConfig.from_env(), field_manager="moorage", timeout=API_TIMEOUT
    )
    kube = Kube(client, Operator.cache)
    metrics = Operator.metrics
    Operator.discovery = Discovery(kube)
    resolver = Resolver(endpoint=Operator.config.hf_endpoint)
    reconciler = Reconciler(kube, Operator.config, resolver, Operator.discovery, metrics)
    Operator.queue = metrics.queue = WorkQueue(metrics.instrument(reconciler))
    log.info("moorage operator started")


@kopf.on.cleanup()
async def _cleanup(**_: Any) -> None:
    if Operator.queue:
        await Operator.queue.close()


def _trigger(namespace: str | None, name: str | None) -> None:
    if Operator.queue and namespace and name:
        Operator.queue.trigger(namespace, name)


@dataclass(frozen=True)
class Watched:
    kind: str
    group: str
    version: str
    plural: str
    selector: str | None
    """The label selector the API server filters the watch with (the handlers' `labels` say the same)."""

    @property
    def labels(self) -> dict[str, Any] | None:
        if self.selector is None:
            return None
        return {self.selector.split("=")[0]: kopf.PRESENT if "=" not in self.selector else OPERATOR}


OURS = f"{MANAGED_BY}={OPERATOR}"
MODELS = Watched("OpenSourceModel", GROUP, VERSION, PLURAL, None)
CLAIMS = Watched("PersistentVolumeClaim", "", "v1", "persistentvolumeclaims", OURS)
CHILDREN = (
    Watched("Deployment", "apps", "v1", "deployments", OURS),
    Watched("Job", "batch", "v1", "jobs", OURS),
    Watched("Service", "", "v1", "services", OURS),
    Watched("PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets", OURS),
    # Pods belong to ReplicaSets and Jobs, not to models: the model label leads back.
    Watched("Pod", "", "v1", "pods", MODEL_LABEL),
)
WATCHED = (MODELS, CLAIMS, *CHILDREN)


def _cache(watched: Watched) -> None:
    """An index handler per kind: kopf runs index handlers before any other handler and holds every
    other handler back until the first listing of every indexed kind is indexed, so no reconcile can read
    a store before it holds everything the API server had."""

    def put(body: kopf.Body, **_: Any) -> None:
        Operator.cache.store(watched.kind).put(
            dict(body)
        )  # kopf hands each event's freshly parsed body; nothing mutates it after

    kopf.index(
        watched.group, watched.version, watched.plural, labels=watched.labels, id=f"cache-{watched.kind}"
    )(put)


def _seen(watched: Watched, type: str | None, body: kopf.Body) -> None:
    """Any event handler runs only once every kind is indexed (see _cache): the stores can answer."""
    Operator.cache.mark_synced()
    if type == "DELETED":
        metadata = body.get("metadata", {})
        Operator.cache.store(watched.kind).remove(
            metadata.get("namespace") or "", metadata["name"], resource_version(body)
        )


def _echo(watched: Watched, body: kopf.Body) -> bool:
    """The event brings what our own write made (a status, an apply): the reconcile that wrote it knew
    it all. Without this, each write would cost its model one more reconcile that finds nothing to do."""
    return Operator.cache.store(watched.kind).echo(body)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def _model_event(
    type: str | None, body: kopf.Body, namespace: str | None, name: str | None, **_: Any
) -> None:
    _seen(MODELS, type, body)
    if type == "DELETED":
        if namespace and name:
            Operator.metrics.model_gone((namespace, name))
    elif not _echo(MODELS, body):
        _trigger(namespace, name)


def _owners(body: Mapping[str, Any]) -> list[str]:
    """The models an object concerns: all those on the weights volume whose pull it is (a Job or its pod),
    else its owners, else the model its label names (pods belong to ReplicaSets and Jobs, not models)."""
    metadata = body.get("metadata", {})
    labels = metadata.get("labels", {})
    volume = labels.get(WEIGHTS_LABEL)
    if volume and body.get("kind") in ("Job", "Pod"):
        # Every model on the volume waits for its one pull.
        claim = Operator.cache.store(CLAIMS.kind).get(metadata.get("namespace") or "", claim_of(volume))
        if claim is not None:
            return _model_owners(claim)
    if owners := _model_owners(body):
        return owners
    labelled = labels.get(MODEL_LABEL)
    return [labelled] if labelled else []


def _model_owners(body: Mapping[str, Any]) -> list[str]:
    references = body.get("metadata", {}).get("ownerReferences", [])
    return [o["name"] for o in references if o.get("kind") == "OpenSourceModel"]


def _child_handler(watched: Watched) -> None:
    async def child_event(type: str | None, body: kopf.Body, namespace: str | None, **_: Any) -> None:
        _seen(watched, type, body)
        if _echo(watched, body):
            return
        for owner in _owners(body):
            _trigger(namespace, owner)

    kopf.on.event(
        watched.group, watched.version, watched.plural, labels=watched.labels, id=f"event-{watched.kind}"
    )(child_event)


@kopf.on.event(CLAIMS.group, CLAIMS.version, CLAIMS.plural, labels=CLAIMS.labels)
async def _claim_event(type: str | None, body: kopf.Body, namespace: str | None, **_: Any) -> None:
    # A weights volume is shared: every owner's apply of its own owner reference changes it, and waking
    # every owner for each would make N models cost N² reconciles. Nothing in a model's plan or status
    # reads the volume but its pulled annotations, and those the cache holds without waking anyone: only
    # its deletion (the owners must make it again) concerns them.
    _seen(CLAIMS, type, body)
    if type == "DELETED":
        for owner in _owners(body):
            _trigger(namespace, owner)


for _watched in WATCHED:
    _cache(_watched)
for _watched in CHILDREN:
    _child_handler(_watched)


async def _gateway_event(body: kopf.Body, namespace: str | None, **_: Any) -> None:
    # Not cached: the gateway kinds exist only where their CRDs are installed, and kopf's first-listing
    # guarantee (see _cache) covers only kinds there at its start; their reads go to the API server.
    for owner in _owners(body):
        _trigger(namespace, owner)


# Watched once their CRDs are installed: kopf notices CRDs appearing (its watch of CRDs).
for _api in GATEWAY_KINDS:
    kopf.on.event(_api.group, _api.version, _api.plural, labels={MANAGED_BY: OPERATOR})(_gateway_event)


@kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions")
async def _crd_event(name: str | None, **_: Any) -> None:
    # The gateway kinds installed or removed (or becoming established): every model looks again, so one
    # that asked for an InferencePool gets it now, not at the next change of its own.
    if name in (*GATEWAY_CRDS, KEDA_CRD) and Operator.discovery and Operator.queue:
        Operator.discovery.forget()
        Operator.queue.trigger_all()


class _Activator:
    addresses: ClassVar[dict[str, frozenset[str]]] = {}
    """The activator's ready addresses per EndpointSlice of its Service, as last seen."""


@kopf.on.event("discovery.k8s.io", "v1", "endpointslices", labels={ACTIVATOR_LABEL: kopf.PRESENT})
async def _activator_event(type: str | None, body: kopf.Body, namespace: str | None, **_: Any) -> None:
    # The activator's pods came, went or moved: the models that scale to zero point their Services at its
    # new addresses. Only a change of the addresses wakes the models (they read them at their reconcile).
    if namespace != Operator.config.activator_namespace or Operator.queue is None:
        return
    name = body.get("metadata", {}).get("name", "")
    ready = frozenset(ready_ips(body))
    now = dict(_Activator.addresses)
    if type == "DELETED":
        now.pop(name, None)
    else:
        now[name] = ready
    if now != _Activator.addresses:
        _Activator.addresses = now
        Operator.queue.trigger_all()
