"""Edge cases of one reconcile that a real cluster makes hard to time: the Kubernetes API is faked."""

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import Status

from moorage.api.layout import content_hash
from moorage.api.model import OpenSourceModel
from moorage.api.resolved import HubFile, ResolvedSource
from moorage.plan import finetune, weights
from moorage.plan.children import plan
from moorage.plan.config import PlanConfig
from moorage.plan.observed import DeploymentState, JobState, Observed
from moorage.plan.serving import TEMPLATE_HASH
from moorage.plan.status import status
from moorage.plan.weights import pulled_annotation
from moorage.reconcile.reconciler import ApplyError, Reconciler
from moorage.reconcile.resolver import Resolver

Obj = dict[str, Any]
MODEL = {
    "apiVersion": "moorage.dev/v1alpha1",
    "kind": "OpenSourceModel",
    "metadata": {"name": "m", "namespace": "ns", "uid": "u-1", "generation": 1},
    "spec": {"source": {"uri": "hf://org/m"}},
}


class FakeKube:
    """Holds only the model; every apply is answered with `refusal`."""

    def __init__(self, refusal: ApiError, model: Obj = MODEL) -> None:
        self.refusal, self.model = refusal, model
        self.status_patches: list[Obj] = []
        self.events: list[tuple[str, str, str]] = []

    async def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self.model if kind == "OpenSourceModel" else None

    async def select(self, kind: str, namespace: str, labels: object, owner: object = None) -> list[Obj]:
        return []

    async def served(self, kind: str, namespace: str) -> bool:
        return False

    async def apply(self, manifest: Obj, field_manager: str = "moorage") -> None:
        raise self.refusal

    async def patch_status(self, namespace: str, name: str, status: Obj) -> None:
        self.status_patches.append(status)

    async def event(self, model: Obj, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


def refusal(code: int, message: str) -> ApiError:
    return ApiError(status=Status(code=code, message=message, reason="Forbidden"))


RESOLVED = ResolvedSource("hf://org/m", "org/m", "model", "main", "a" * 40, (HubFile("config.json", 10),))


def reconciler(kube: FakeKube) -> Reconciler:
    return Reconciler(kube, resolver=Resolver(resolve=lambda *_: RESOLVED))  # type: ignore[arg-type]


def test_a_namespace_being_deleted_ends_the_reconcile_quietly() -> None:
    kube = FakeKube(
        refusal(
            403,
            'services "m" is forbidden: unable to create new content in namespace ns '
            "because it is being terminated",
        )
    )
    assert asyncio.run(reconciler(kube)("ns", "m")) is None
    assert kube.status_patches == []


def test_a_real_denial_is_raised_for_the_queue_to_retry_and_shown_on_the_model() -> None:
    kube = FakeKube(refusal(403, 'services "m" is forbidden: User "x" cannot patch resource "services"'))
    with pytest.raises(ApplyError):
        asyncio.run(reconciler(kube)("ns", "m"))
    conditions = {c["type"]: c for c in kube.status_patches[0]["conditions"]}
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Reconciling"]["reason"] == "ApplyFailed"
    assert conditions["Reconciling"]["message"] == (
        'Service m: services "m" is forbidden: User "x" cannot patch resource "services"'
    )
    assert kube.events == [("Warning", "ApplyFailed", conditions["Reconciling"]["message"])]


def test_an_invalid_stored_spec_stalls_with_the_field_named() -> None:
    """A spec the CRD let through (an older CRD, say) but the operator cannot use."""
    bad = {**MODEL, "spec": {"source": {"uri": "hf://org/m"}, "serving": {"gpus": -1}}}
    kube = FakeKube(refusal(500, "unused"), model=bad)
    assert asyncio.run(reconciler(kube)("ns", "m")) is None
    stalled = next(c for c in kube.status_patches[0]["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "InvalidSpec"
    assert stalled["message"].startswith("spec.serving.gpus:")


class JobKube(FakeKube):
    """The model's Job `job` exists, and the weights volume unless `volume` is None (marked pulled by an
    older operator when `volume` is "pulled"); applies and deletes are recorded, not refused."""

    def __init__(self, job: Obj, model: Obj = MODEL, volume: str | None = None) -> None:
        super().__init__(refusal(500, "unused"), model)
        self.job = job
        self.volume = volume
        self.patches: list[tuple[str, str, list[Obj]]] = []
        self.applied: list[str] = []
        self.deleted: list[str] = []

    async def get(self, kind: str, namespace: str, name: str, **_: object) -> Obj | None:
        if kind == "Job" and name == self.job["metadata"]["name"]:
            return self.job
        if kind == "PersistentVolumeClaim" and self.volume is not None:
            model = OpenSourceModel.parse(self.model)
            annotations = {pulled_annotation(model): RESOLVED.sha} if self.volume == "pulled" else {}
            return {"metadata": {"name": name, "uid": "c-1", "annotations": annotations}}
        return await super().get(kind, namespace, name)

    async def apply(self, manifest: Obj, field_manager: str = "moorage") -> None:
        self.applied.append(f"{manifest['kind']}/{manifest['metadata']['name']}")

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        self.deleted.append(f"{kind}/{name}")

    async def patch(self, *args: Any) -> None:
        kind, _, name, patch = args
        self.patches.append((kind, name, patch))


def _old_job(name: str, condition: str | None, owner: Obj) -> Obj:
    """A Job as an older operator made it: another hash, and a finished condition or none."""
    status = {"conditions": [{"type": condition, "status": "True"}]} if condition else {"active": 1}
    return {
        "kind": "Job",
        "metadata": {
            "name": name,
            "annotations": {"moorage.dev/spec-hash": "older"},
            "ownerReferences": [owner],
        },
        "status": status,
    }


TUNED = {
    **MODEL,
    "spec": {**MODEL["spec"], "fineTune": {"adapterName": "a", "dataset": {"uri": "hf://datasets/org/data"}}},
}
CONDITIONS = pytest.mark.parametrize(
    ("condition", "replaced"),
    [("Complete", False), ("Failed", True), (None, True)],
    ids=["done", "failed", "running"],
)


@CONDITIONS
def test_a_changed_job_is_replaced_unless_it_finished(condition: str | None, replaced: bool) -> None:
    """An operator upgrade changes the Job template, which is immutable: a Job that succeeded stands, any
    other is deleted (its deletion's event brings the new one); no apply ever hits the old Job."""
    name = finetune.job_name(OpenSourceModel.parse(TUNED), RESOLVED, RESOLVED)
    kube = JobKube(_old_job(name, condition, {"kind": "OpenSourceModel", "uid": "u-1"}), TUNED, "pulled")
    asyncio.run(reconciler(kube)("ns", "m"))  # type: ignore[arg-type]
    assert f"Job/{name}" not in kube.applied
    assert kube.deleted == ([f"Job/{name}"] if replaced else [])


@CONDITIONS
def test_the_volumes_pull_job_is_never_replaced(condition: str | None, replaced: bool) -> None:
    """Models on one volume share its pull Job, made with the settings of the first: another model's
    settings (or a new operator's) never replace it nor are applied over it; a person deletes a failed
    one."""
    name = weights.pull_job_name(OpenSourceModel.parse(MODEL), RESOLVED)
    kube = JobKube(_old_job(name, condition, {"kind": "OpenSourceModel", "uid": "u-other"}), volume="empty")
    asyncio.run(reconciler(kube)("ns", "m"))  # type: ignore[arg-type]
    assert f"Job/{name}" not in kube.applied
    assert kube.deleted == []


@pytest.mark.parametrize("owner", ["u-1", "u-other"])
def test_only_the_model_that_made_the_pull_marks_the_volume_pulled(owner: str) -> None:
    """A hundred models see the volume's pull succeed at once: one patch, not a hundred."""
    name = weights.pull_job_name(OpenSourceModel.parse(MODEL), RESOLVED)
    kube = JobKube(_old_job(name, "Complete", {"kind": "OpenSourceModel", "uid": owner}), volume="empty")
    asyncio.run(reconciler(kube)("ns", "m"))  # type: ignore[arg-type]
    marks = [p for kind, _, p in kube.patches if kind == "PersistentVolumeClaim" and "pulled" in str(p)]
    assert len(marks) == (1 if owner == "u-1" else 0)


def test_the_pull_job_is_named_after_the_volume() -> None:
    model = OpenSourceModel.parse(MODEL)
    name = weights.pull_job_name(model, RESOLVED)
    assert name == f"moorage-pull-{weights.weights_id(model, RESOLVED)}-{content_hash([], length=8)}"
    kube = JobKube({"metadata": {"name": "no-such-job"}})
    asyncio.run(reconciler(kube)("ns", "m"))  # type: ignore[arg-type]
    assert f"Job/{name}" in kube.applied


class ClaimKube(JobKube):
    """The weights volume exists, made by another model on the same weights; patches are recorded."""

    def __init__(self, claim: Obj) -> None:
        super().__init__({"metadata": {"name": "no-such-job"}})
        self.claim = claim

    async def get(self, kind: str, namespace: str, name: str, **_: object) -> Obj | None:
        if kind == "PersistentVolumeClaim" and name == self.claim["metadata"]["name"]:
            return self.claim
        return await super().get(kind, namespace, name)


def test_a_model_joins_a_shared_volume_with_its_owner_reference_alone() -> None:
    """A hundred models on one base: each adds its owner reference with a patch, never an apply under a
    field manager of its own, which would make each model's write cost grow with the number of models."""
    model = OpenSourceModel.parse(MODEL)
    claim = weights.weights_claim(model, RESOLVED)
    claim["metadata"]["ownerReferences"] = [{**claim["metadata"]["ownerReferences"][0], "uid": "u-other"}]
    kube = ClaimKube(claim)
    asyncio.run(reconciler(kube)("ns", "m"))  # type: ignore[arg-type]
    name = claim["metadata"]["name"]
    assert f"PersistentVolumeClaim/{name}" not in kube.applied
    joins = [p for kind, n, p in kube.patches if kind == "PersistentVolumeClaim" and n == name]
    assert joins == [
        [
            {
                "op": "add",
                "path": "/metadata/ownerReferences/-",
                "value": weights.weights_claim(model, RESOLVED)["metadata"]["ownerReferences"][0],
            }
        ]
    ]


# ---- a rollback is remembered before the Deployment changes


def _rollback_world() -> tuple[Obj, Obj, Obj]:
    """Revision A was Ready; the spec now asks for B (a bad flag), whose new pod crash-loops.
    Returns the model as stored, the live Deployment (B) and A's pod template as its ReplicaSet keeps it."""
    serving = {"replicas": 2}
    good = OpenSourceModel.parse({**MODEL, "spec": {**MODEL["spec"], "serving": serving}})
    pulled = Observed(resolved=RESOLVED, pull=JobState(succeeded=True))
    a = next(c for c in plan(good, pulled, PlanConfig()).children if c["kind"] == "Deployment")
    seen = replace(pulled, deployment=_state(a, ready=2))
    ready = status(good, seen, plan(good, seen, PlanConfig()), PlanConfig(), "2026-11-26T12:00:00Z")
    broken_spec = {**MODEL["spec"], "serving": {**serving, "vllm": {"extraArgs": ["--bad"]}}}
    stored = {**MODEL, "metadata": {**MODEL["metadata"], "generation": 2}, "spec": broken_spec}
    broken = OpenSourceModel.parse(stored).model_copy(update={"status": ready})
    b = next(c for c in plan(broken, seen, PlanConfig()).children if c["kind"] == "Deployment")
    live = {
        **b,
        "metadata": {**b["metadata"], "uid": "d-1", "generation": 2},
        "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "readyReplicas": 2},
    }
    return {**stored, "status": ready.wire()}, live, a["spec"]["template"]


def _state(manifest: Obj, ready: int) -> DeploymentState:
    return DeploymentState.from_deployment(
        {
            **manifest,
            "metadata": {**manifest["metadata"], "generation": 1},
            "status": {
                "observedGeneration": 1,
                "replicas": ready,
                "updatedReplicas": ready,
                "readyReplicas": ready,
            },
        }
    )


class RollbackKube(FakeKube):
    """The world of _rollback_world; every call that writes is logged in order."""

    def __init__(self, refuse_deployment: bool) -> None:
        model, self.live, self.template = _rollback_world()
        super().__init__(refusal(500, "etcd went away"), model=model)
        self.refuse_deployment = refuse_deployment
        self.log: list[str] = []
        self.applied: list[Obj] = []

    async def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        if kind == "Deployment":
            return self.live
        if kind == "PersistentVolumeClaim":
            model = OpenSourceModel.parse(self.model)
            annotations = {pulled_annotation(model): RESOLVED.sha}
            return {"metadata": {"name": name, "annotations": annotations}}
        return await super().get(kind, namespace, name)

    async def select(self, kind: str, namespace: str, labels: object, owner: object = None) -> list[Obj]:
        hash_ = self.live["metadata"]["annotations"][TEMPLATE_HASH]
        if kind == "Pod":
            container = {
                "name": "vllm",
                "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 2, "message": "unrecognized arguments: --bad"}},
            }
            metadata = {"name": "m-b-1", "annotations": {TEMPLATE_HASH: hash_}}
            return [{"metadata": metadata, "status": {"containerStatuses": [container]}}]
        if kind == "ReplicaSet":
            return [{"metadata": {"ownerReferences": [{"uid": "d-1"}]}, "spec": {"template": self.template}}]
        return []

    async def apply(self, manifest: Obj, field_manager: str = "moorage") -> None:
        self.log.append(f"apply {manifest['kind']}")
        if manifest["kind"] == "Deployment":
            self.applied.append(manifest)
            if self.refuse_deployment:
                raise self.refusal

    async def patch(self, *args: object) -> None:
        pass

    async def delete(self, *args: object) -> None:
        pass

    async def patch_status(self, namespace: str, name: str, status: Obj) -> None:
        self.log.append("status")
        self.model = {**self.model, "status": {**self.model["status"], **status}}
        self.model["status"] = {k: v for k, v in self.model["status"].items() if v is not None}

    async def event(self, model: Obj, type_: str, reason: str, message: str) -> None:
        self.log.append(f"event {reason}")
        await super().event(model, type_, reason, message)


def test_a_rollback_is_in_status_before_the_deployment_changes_and_is_told_once() -> None:
    kube = RollbackKube(refuse_deployment=True)
    good = kube.template["metadata"]["annotations"][TEMPLATE_HASH]
    failed = kube.live["metadata"]["annotations"][TEMPLATE_HASH]
    with pytest.raises(ApplyError):  # the operator stops (here: the API server fails) before the restore
        asyncio.run(reconciler(kube)("ns", "m"))
    assert kube.log.index("status") < kube.log.index("event RolledBack") < kube.log.index("apply Deployment")
    assert kube.model["status"]["failedRevision"]["templateHash"] == failed
    assert kube.applied[-1]["metadata"]["annotations"][TEMPLATE_HASH] == good

    # The next operator knows from status alone: it restores A, says nothing new, does not try B.
    kube.refuse_deployment = False
    asyncio.run(reconciler(kube)("ns", "m"))
    assert kube.applied[-1]["metadata"]["annotations"][TEMPLATE_HASH] == good
    assert kube.applied[-1]["spec"]["template"] == kube.template
    assert [e for e in kube.events if e[1] == "RolledBack"] == [kube.events[0]]
    assert kube.events[0][0] == "Warning" and "unrecognized arguments: --bad" in kube.events[0][2]
