"""One reconcile of one model: read the world, plan, apply the difference, tell the truth in status.

Level-triggered and idempotent: run it twice and the second run writes nothing.
"""

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lightkube.core.exceptions import ApiError
from pydantic import ValidationError

from moorage.api.errors import describe
from moorage.api.model import ObjectMeta, OpenSourceModel
from moorage.api.spec import OpenSourceModelSpec
from moorage.api.status import AdapterStatus, ConditionType, OpenSourceModelStatus
from moorage.plan import adapters, serving, weights
from moorage.plan.children import Plan, plan
from moorage.plan.config import PlanConfig
from moorage.plan.drift import drifted
from moorage.plan.gateway import GATEWAY_KINDS
from moorage.plan.meta import SPEC_HASH, WEIGHTS_LABEL, selector
from moorage.plan.observed import Problem
from moorage.plan.rollback import ROLLED_BACK
from moorage.plan.serving import TEMPLATE_HASH
from moorage.plan.status import fingerprint, invalid_spec_status, status
from moorage.reconcile.adapters import unload
from moorage.reconcile.discovery import Discovery
from moorage.reconcile.kube import Kube, Obj, namespace_terminating
from moorage.reconcile.metrics import Metrics
from moorage.reconcile.observe import World, applied_replicas, observe
from moorage.reconcile.resolver import Resolver

log = logging.getLogger("moorage.reconcile")

EVENTS = {
    # condition type, new status → event type, reason
    (ConditionType.WEIGHTS_READY, "True"): ("Normal", "WeightsPulled"),
    (ConditionType.FINE_TUNED, "True"): ("Normal", "AdapterTrained"),
    (ConditionType.READY, "True"): ("Normal", "Ready"),
    (ConditionType.STALLED, "True"): ("Warning", "Stalled"),
}


APPLY_FAILED = "ApplyFailed"
HANDOVER_MANAGER = "moorage-handover-to-autoscaler"


class ApplyError(Exception):
    """The API server refused a child: the model shows it (Reconciling/ApplyFailed and a Warning)."""

    def __init__(self, kind: str, name: str, cause: ApiError) -> None:
        message = " ".join((cause.status.message or str(cause)).split())
        super().__init__(f"{kind} {name}: {message}")
        self.cause = cause
        self.problem = Problem(APPLY_FAILED, f"{kind} {name}: {message}", retryable=True)


@dataclass
class Reconciler:
    kube: Kube
    config: PlanConfig = field(default_factory=PlanConfig)
    resolver: Resolver = field(default_factory=Resolver)
    discovery: Discovery | None = None
    """Which optional CRDs (gateway, KEDA) the cluster serves; made from `kube` unless given."""
    metrics: Metrics = field(default_factory=Metrics)

    def __post_init__(self) -> None:
        self._discovery = self.discovery or Discovery(self.kube)

    async def __call__(self, namespace: str, name: str) -> float | None:
        """Reconciles one model; returns when to look again without an event, if ever."""
        raw = await self.kube.get("OpenSourceModel", namespace, name)
        if raw is None or raw["metadata"].get("deletionTimestamp"):
            self.metrics.model_gone((namespace, name))
            return None  # garbage collection removes the children through their owner references
        previous = _previous_status(raw)
        try:
            spec = OpenSourceModelSpec.from_manifest(raw.get("spec") or {}, raw["metadata"].get("name"))
        except ValidationError as error:
            message = describe(error, "spec")
            log.warning("%s/%s: invalid spec: %s", namespace, name, message)
            new = invalid_spec_status(previous, raw["metadata"].get("generation"), message, _now())
            await self._write_status(raw, previous, new)
            self.metrics.model_seen((namespace, name), new)
            return None  # only a new spec helps
        model = OpenSourceModel(
            metadata=ObjectMeta.model_validate(raw["metadata"]), spec=spec, status=previous
        )
        world = await observe(self.kube, self.resolver, model, self.config, self._discovery)
        the_plan = plan(model, world.observed, self.config)
        now = _now()  # one time for every status of this reconcile: they agree, so one write
        if the_plan.rollback is not None and the_plan.rollback.new:
            # Remembered before the Deployment changes: an operator that stops in between still knows which
            # revision failed, and does not try it again.
            rolled_back = status(model, world.observed, the_plan, self.config, now)
            await self._write_status(raw, previous, rolled_back)
            previous = rolled_back
            log.warning("%s/%s: %s", namespace, name, the_plan.rollback.message())
            await self.kube.event(raw, "Warning", ROLLED_BACK, the_plan.rollback.message())
        try:
            await self._apply(raw, model, the_plan, world)
            await self._remove_unwanted_gateway(model, the_plan, world)
            if world.observed.resolved is not None and world.observed.problem is None:
                await self._mark_pulled(model, world)
                await self._clean_up(model, the_plan, world)
        except ApplyError as error:
            if namespace_terminating(error.cause):
                log.info("%s/%s: namespace is being deleted; the model goes with it", namespace, name)
                return None
            # Never silent: the model says what the API server refused, then the queue retries with backoff.
            failed = status(model, world.observed, the_plan, self.config, now, failure=error.problem)
            await self._write_status(raw, previous, failed)
            self.metrics.model_seen((namespace, name), failed, world.observed, the_plan)
            raise
        removing, reloading = await self._unload_adapters(model, world)
        new = status(
            model, world.observed, the_plan, self.config, now, removing=removing, reloading=reloading
        )
        await self._write_status(raw, previous, new)
        self.metrics.model_seen((namespace, name), new, world.observed, the_plan)
        return _next_look(new)

    async def _unload_adapters(
        self, model: OpenSourceModel, world: World
    ) -> tuple[tuple[AdapterStatus, ...], frozenset[str]]:
        """Adapters status still lists but spec.adapters no longer does, and adapters listed under a name
        whose version changed: once the served directory holds the current list (its adapters Job
        succeeded), each ready replica unloads them (a changed one loads again, new, on its next request).
        Returns the removed ones not yet unloaded everywhere (listed as Removing), and the changed ones not
        yet unloaded everywhere (status keeps their old version)."""
        if world.observed.resolved is None:
            return (), frozenset()  # nothing is known of the list now; status keeps what it said
        listed = {a.name for a in world.observed.adapters}
        gone = [a for a in model.status.adapters or () if a.name not in listed and not a.fine_tune]
        job = world.observed.adapters_job
        in_place = job is not None and job.succeeded
        changed = adapters.changed(model, world.observed) if in_place else []
        if not gone and not changed:
            return (), frozenset()
        if adapters.enabled(model) and not in_place:
            return tuple(
                a.model_copy(update={"state": "Removing", "message": None}) for a in gone
            ), frozenset()
        pods = await self.kube.select("Pod", model.metadata.namespace, selector(model))
        unloaded = await unload(pods, [a.name for a in gone] + changed)
        for name in sorted(unloaded):
            log.info("%s/%s: adapter %s is no longer served by any replica", *model.key, name)
        removing = tuple(
            a.model_copy(update={"state": "Removing", "message": "being unloaded from the replicas"})
            for a in gone
            if a.name not in unloaded
        )
        return removing, frozenset(changed) - unloaded

    async def _apply(self, raw: Obj, model: OpenSourceModel, the_plan: Plan, world: World) -> None:
        """The children at once: none waits for another, and the API server can be slow on one kind (it
        makes Services one at a time to give each its address) without holding back the pull."""

        async def one(manifest: Obj) -> None:
            kind, name = manifest["kind"], manifest["metadata"]["name"]
            try:
                await self._apply_child(raw, model, the_plan, manifest, world.live.get((kind, name)))
            except ApiError as error:
                raise ApplyError(kind, name, error) from error

        outcomes = await asyncio.gather(*map(one, the_plan.children), return_exceptions=True)
        for outcome in outcomes:  # in the plan's order: the first refusal is the one status shows
            if isinstance(outcome, BaseException):
                raise outcome

    async def _apply_child(
        self, raw: Obj, model: OpenSourceModel, the_plan: Plan, manifest: Obj, live: Obj | None
    ) -> None:
        namespace, uid = model.metadata.namespace, model.metadata.uid
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        if kind == "Job" and WEIGHTS_LABEL in manifest["metadata"]["labels"]:
            if live is None:
                await self._start_pull(model, manifest)
            return  # the volume's pull is every model's on it: none replaces it (their settings may differ)
        changed = live is None or not _up_to_date(live, manifest, uid)
        if live is not None and kind == "Job":
            if not changed or _succeeded(live):
                return  # a finished Job's result stands: a new operator image or hub endpoint keeps it
            # A Job's template is immutable: this one goes, and its deletion's event brings the new one.
            await self.kube.delete("Job", namespace, name)
            log.info("%s/%s: replacing Job %s (its template changed)", namespace, model.metadata.name, name)
            return
        if kind == "PersistentVolumeClaim" and live is not None and changed and _same_hash(live, manifest):
            await self._join_claim(model, live, manifest)
            return
        fields = [] if live is None or changed else drifted(live, manifest)
        if not changed and not fields:
            return
        # A volume shared by several models is co-owned: each model applies its own owner reference
        # under a field manager of its own, so no model's apply removes another's.
        shared = kind == "PersistentVolumeClaim"
        scaled = kind == "Deployment" and "replicas" not in manifest["spec"]
        if live is not None and scaled:
            await self._hand_over_replicas(live, manifest)
        await self.kube.apply(manifest, f"moorage-{uid}" if shared else "moorage")
        if live is None and scaled and (start := serving.replicas(model)) != 1:
            # Created without replicas, the Deployment would start at the API server's default of 1 until
            # the scaler's first look: it starts where the scaler would put it, in the scaler's hands.
            metadata = manifest["metadata"]
            first = {
                "apiVersion": "apps/v1",
                "kind": kind,
                "metadata": _name(metadata),
                "spec": {"replicas": start},
            }
            await self.kube.apply_fields(
                kind, metadata["namespace"], metadata["name"], first, HANDOVER_MANAGER
            )
        if fields:
            log.info(
                "%s/%s: restored %s %s (changed outside moorage: %s)",
                namespace,
                model.metadata.name,
                kind,
                name,
                ", ".join(fields[:5]),
            )
            await self.kube.event(
                raw, "Normal", "DriftReverted", f"{kind} {name}: restored {', '.join(fields[:5])}"
            )
            return
        log.info("%s/%s: applied %s %s", namespace, model.metadata.name, kind, name)
        if kind == "Deployment" and the_plan.rollback is None:
            await self.kube.event(raw, "Normal", *_deployment_event(live, manifest, the_plan))

    async def _start_pull(self, model: OpenSourceModel, manifest: Obj) -> None:
        """Makes the volume's pull Job. Models on one volume reconcile at once: another may have made it
        since the cache was read, with its own settings (an immutable template then refuses ours)."""
        name = manifest["metadata"]["name"]
        try:
            await self.kube.apply(manifest)
        except ApiError as error:
            if error.status.code not in (409, 422):
                raise
            if await self.kube.get("Job", model.metadata.namespace, name, watched=False) is None:
                raise
            return
        log.info("%s/%s: started Job %s, the weights volume's pull", *model.key, name)

    async def _hand_over_replicas(self, live: Obj, manifest: Obj) -> None:
        """An autoscaler takes the Deployment's replicas over: before our apply leaves them out, another
        field manager of ours co-owns the current count, or the API server would reset it to 1 (a field
        dropped by its only owner is removed). The scaler's first change of the count takes it over."""
        if not applied_replicas(live):
            return
        metadata = manifest["metadata"]
        handover = {
            "apiVersion": manifest["apiVersion"],
            "kind": "Deployment",
            "metadata": _name(metadata),
            "spec": {"replicas": (live.get("spec") or {}).get("replicas", 1)},
        }
        await self.kube.apply_fields(
            "Deployment", metadata["namespace"], metadata["name"], handover, HANDOVER_MANAGER
        )

    async def _join_claim(self, model: OpenSourceModel, live: Obj, manifest: Obj) -> None:
        """Another model made this volume, as this one would: only this model's owner reference is missing.
        Added with a patch, not an apply under a field manager per model: with a hundred models on one base,
        each apply would rewrite a hundred managers' fields, and the cost of a model would grow with the
        number of models."""
        (owner,) = manifest["metadata"]["ownerReferences"]
        if (live.get("metadata") or {}).get("ownerReferences"):
            patch = [{"op": "add", "path": "/metadata/ownerReferences/-", "value": owner}]
        else:
            patch = [{"op": "add", "path": "/metadata/ownerReferences", "value": [owner]}]
        name = manifest["metadata"]["name"]
        await self.kube.patch("PersistentVolumeClaim", model.metadata.namespace, name, patch)
        log.info("%s/%s: joined weights volume %s", *model.key, name)

    async def _remove_unwanted_gateway(self, model: OpenSourceModel, the_plan: Plan, world: World) -> None:
        """An InferencePool or HTTPRoute the spec no longer asks for goes (spec.gateway or its route
        removed). The model's own only: a user's object of the same name is left alone."""
        name, uid = model.metadata.name, model.metadata.uid
        for api in GATEWAY_KINDS:
            live = world.live.get((api.kind, name))
            if live is not None and name not in the_plan.names(api.kind) and _owned_by(live, uid):
                try:
                    await self.kube.delete(api.kind, model.metadata.namespace, name)
                except ApiError as error:
                    raise ApplyError(api.kind, name, error) from error
                log.info("%s/%s: removed %s %s (no longer in spec.gateway)", *model.key, api.kind, name)

    async def _mark_pulled(self, model: OpenSourceModel, world: World) -> None:
        """The volume's pull Job succeeded: its owner (the model that made it, alone, so once per volume)
        marks the volume pulled, which stays when the Job goes with its owner."""
        resolved, pull = world.observed.resolved, world.observed.pull
        if resolved is None or pull is None or not pull.succeeded or pull.on_volume:
            return
        job = world.live.get(("Job", weights.pull_job_name(model, resolved)))
        name = weights.claim_name(model, resolved)
        claim = world.live.get(("PersistentVolumeClaim", name))
        if job is None or not _owned_by(job, model.metadata.uid) or claim is None:
            return
        if weights.pulled_on(claim, model, resolved):
            return
        key = weights.pulled_annotation(model).replace("~", "~0").replace("/", "~1")
        patch = [{"op": "add", "path": f"/metadata/annotations/{key}", "value": resolved.sha}]
        await self.kube.patch("PersistentVolumeClaim", model.metadata.namespace, name, patch)

    async def _clean_up(self, model: OpenSourceModel, the_plan: Plan, world: World) -> None:
        """Jobs of earlier specs go, and a budget no longer wanted; volumes no longer used are released
        (deleted with their last owner)."""
        namespace, uid = model.metadata.namespace, model.metadata.uid
        for kind in ("PodDisruptionBudget", "ScaledObject"):
            unwanted = world.live.get((kind, model.metadata.name))
            if unwanted and not the_plan.names(kind) and _owned_by(unwanted, uid):
                await self.kube.delete(kind, namespace, model.metadata.name)
        # A replica is ready (or the model no longer scales to zero): the activator steps out of the path.
        for (kind, name), unwanted in world.live.items():
            if kind == "EndpointSlice" and name not in the_plan.names(kind) and _owned_by(unwanted, uid):
                await self.kube.delete(kind, namespace, name)
                log.info(
                    "%s/%s: the activator is out of the path (%s deleted)",
                    namespace,
                    model.metadata.name,
                    name,
                )
        wanted_jobs = the_plan.names("Job")
        mine = {"moorage.dev/model": model.metadata.name}
        for job in await self.kube.select("Job", namespace, mine, owner=uid):
            if job["metadata"]["name"] not in wanted_jobs and _owned_by(job, uid):
                await self.kube.delete("Job", namespace, job["metadata"]["name"])
        wanted_claims = the_plan.names("PersistentVolumeClaim")
        if the_plan.target:
            wanted_claims.add(the_plan.target.claim)
        for claim in await self.kube.select(
            "PersistentVolumeClaim", namespace, {WEIGHTS_LABEL: None}, owner=uid
        ):
            name = claim["metadata"]["name"]
            if name in wanted_claims:
                continue
            owners = claim["metadata"].get("ownerReferences") or []
            index = next((i for i, o in enumerate(owners) if o.get("uid") == uid), None)
            if index is None:
                continue
            if len(owners) == 1:
                await self.kube.delete("PersistentVolumeClaim", namespace, name)
            else:
                await self.kube.patch(
                    "PersistentVolumeClaim",
                    namespace,
                    name,
                    [
                        {"op": "test", "path": f"/metadata/ownerReferences/{index}/uid", "value": uid},
                        {"op": "remove", "path": f"/metadata/ownerReferences/{index}"},
                    ],
                )
            log.info("%s/%s: released weights volume %s", namespace, model.metadata.name, name)

    async def _write_status(
        self, raw: Obj, previous: OpenSourceModelStatus, new: OpenSourceModelStatus
    ) -> None:
        if fingerprint(new) == fingerprint(previous):
            return
        metadata = raw["metadata"]
        old_wire, new_wire = previous.wire(), new.wire()
        # A merge patch: every field we set, and null for the ones that went away.
        patch: dict[str, Any] = {**{k: None for k in old_wire if k not in new_wire}, **new_wire}
        await self.kube.patch_status(metadata["namespace"], metadata["name"], patch)
        for condition in new.conditions:
            before = previous.condition(ConditionType(condition.type))
            if condition.reason == APPLY_FAILED and condition.type == ConditionType.RECONCILING:
                # Each new refusal once (the queue retries the same one with backoff).
                if before is None or (before.reason, before.message) != (APPLY_FAILED, condition.message):
                    await self.kube.event(raw, "Warning", APPLY_FAILED, condition.message)
                continue
            if before is not None and before.status == condition.status:
                continue
            event = EVENTS.get((ConditionType(condition.type), condition.status))
            if event and condition.reason != ROLLED_BACK:  # that one is told when it is decided
                reason = condition.reason if condition.type == ConditionType.STALLED else event[1]
                await self.kube.event(raw, event[0], reason, condition.message or condition.reason)


IN_FLIGHT_POLL = 30.0
"""Seconds between looks while work is under way: pull progress, a Secret or the hub coming back."""
SCALER_POLL = 30.0
"""Seconds between looks at a model whose autoscaler is missing or not ready."""
STALLED_POLL = 300.0
"""A stalled model is looked at now and then too: access to a gated repo can be granted on the hub."""


def _next_look(status: OpenSourceModelStatus) -> float | None:
    if any(a.state in ("Removing", "Pulling") for a in status.adapters or ()):
        # A replica could not be asked to unload an adapter (removed, or replaced by a new version while
        # the model stays Ready): ask again.
        return IN_FLIGHT_POLL
    scaling = status.condition(ConditionType.AUTOSCALING)
    if scaling is not None and scaling.status == "False":
        return SCALER_POLL  # KEDA may be installed later, or come to read the metric
    if (ready := status.condition(ConditionType.READY)) is not None and ready.status == "True":
        return None
    stalled = status.condition(ConditionType.STALLED)
    return STALLED_POLL if stalled is not None and stalled.status == "True" else IN_FLIGHT_POLL


def _deployment_event(live: Obj | None, manifest: Obj, the_plan: Plan) -> tuple[str, str]:
    """Deploying, RolloutStarted (new pods) or Scaled (same pods, another count): reason and message."""
    replicas = manifest["spec"].get("replicas", "the autoscaler's")
    serves = f"{replicas} replica(s) of {the_plan.target.revision[:12] if the_plan.target else 'nothing'}"
    if live is None:
        return "Deploying", f"Deployment {manifest['metadata']['name']}: {serves}"
    before = (live.get("metadata") or {}).get("annotations") or {}
    if before.get(TEMPLATE_HASH) == manifest["metadata"]["annotations"][TEMPLATE_HASH]:
        return "Scaled", f"{(live.get('spec') or {}).get('replicas')} → {replicas} replica(s)"
    return "RolloutStarted", f"rolling out {serves} (maxSurge and maxUnavailable per spec.serving.rollout)"


def _up_to_date(live: Obj, manifest: Obj, uid: str | None) -> bool:
    return _same_hash(live, manifest) and _owned_by(live, uid)


def _same_hash(live: Obj, manifest: Obj) -> bool:
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    return bool(annotations.get(SPEC_HASH) == manifest["metadata"]["annotations"][SPEC_HASH])


def _name(metadata: Obj) -> Obj:
    return {"name": metadata["name"], "namespace": metadata["namespace"]}


def _succeeded(job: Obj) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions)


def _owned_by(obj: Obj, uid: str | None) -> bool:
    return any(o.get("uid") == uid for o in (obj.get("metadata") or {}).get("ownerReferences") or [])


def _previous_status(raw: Obj) -> OpenSourceModelStatus:
    try:
        return OpenSourceModelStatus.model_validate(raw.get("status") or {})
    except ValidationError:
        return OpenSourceModelStatus()  # written by something else; ours replaces it


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
