"""The kopf layer, thin: every event about a model or one of its children triggers that model's reconcile."""

import logging
from typing import Any

import kopf
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig

from moorage.api.model import GROUP, PLURAL, VERSION
from moorage.plan.autoscaling import KEDA_CRD
from moorage.plan.config import PlanConfig
from moorage.plan.gateway import GATEWAY_KINDS
from moorage.plan.meta import MANAGED_BY, MODEL_LABEL, OPERATOR
from moorage.reconcile.discovery import Discovery
from moorage.reconcile.kube import Kube
from moorage.reconcile.metrics import Metrics
from moorage.reconcile.queue import WorkQueue
from moorage.reconcile.reconciler import Reconciler
from moorage.reconcile.resolver import Resolver

log = logging.getLogger("moorage.operator")
GATEWAY_CRDS = frozenset(api.crd for api in GATEWAY_KINDS)


class Operator:
    """What the handlers share; set up once kopf's event loop runs."""

    config: PlanConfig = PlanConfig()
    kubeconfig: KubeConfig | None = None
    """Read before kopf starts, so a missing one is a one-line error, not a retry loop."""
    queue: WorkQueue | None = None
    metrics: Metrics = Metrics()
    """Served by `moorage run --metrics-port` from its own thread."""
    discovery: Discovery | None = None


@kopf.on.startup()
async def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Only event handlers, so kopf keeps no progress, diff-base or finalizer on the models: nothing a
    # GitOps diff would show. Our own events replace kopf's log-to-event posting.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    client = AsyncClient(config=Operator.kubeconfig or KubeConfig.from_env(), field_manager="moorage")
    metrics = Operator.metrics
    kube = Kube(client)
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


@kopf.on.event(GROUP, VERSION, PLURAL)
async def _model_event(type: str | None, namespace: str | None, name: str | None, **_: Any) -> None:
    if type != "DELETED":
        _trigger(namespace, name)
    elif namespace and name:
        Operator.metrics.model_gone((namespace, name))


def _owners(body: kopf.Body) -> list[str]:
    labelled = body.get("metadata", {}).get("labels", {}).get(MODEL_LABEL)
    owners = [
        o["name"]
        for o in body.get("metadata", {}).get("ownerReferences", [])
        if o.get("kind") == "OpenSourceModel"
    ]
    return owners or ([labelled] if labelled else [])


async def _child_event(body: kopf.Body, namespace: str | None, **_: Any) -> None:
    for owner in _owners(body):
        _trigger(namespace, owner)


@kopf.on.event("", "v1", "persistentvolumeclaims", labels={MANAGED_BY: OPERATOR})
async def _claim_event(type: str | None, body: kopf.Body, namespace: str | None, **_: Any) -> None:
    # A weights volume is shared: every owner's apply of its own owner reference changes it, and waking
    # every owner for each would make N models cost N² reconciles. Nothing in a model's plan or status
    # reads the volume, so only its deletion (the owners must make it again) concerns them.
    if type == "DELETED":
        await _child_event(body, namespace)


for _group, _version, _plural in (
    ("apps", "v1", "deployments"),
    ("batch", "v1", "jobs"),
    ("", "v1", "services"),
    ("policy", "v1", "poddisruptionbudgets"),
    # Watched once their CRDs are installed: kopf notices CRDs appearing (its watch of CRDs).
    *((api.group, api.version, api.plural) for api in GATEWAY_KINDS),
):
    kopf.on.event(_group, _version, _plural, labels={MANAGED_BY: OPERATOR})(_child_event)


@kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions")
async def _crd_event(name: str | None, **_: Any) -> None:
    # The gateway kinds installed or removed (or becoming established): every model looks again, so one
    # that asked for an InferencePool gets it now, not at the next change of its own.
    if name in (*GATEWAY_CRDS, KEDA_CRD) and Operator.discovery and Operator.queue:
        Operator.discovery.forget()
        Operator.queue.trigger_all()


# Pods belong to ReplicaSets and Jobs, not to models: the model label leads back.
kopf.on.event("", "v1", "pods", labels={MODEL_LABEL: kopf.PRESENT})(_child_event)
