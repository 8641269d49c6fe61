"""A model with a hub token is resolved by its resolve Job (the operator has no access to Secrets): what the
operator makes of the Job and its pod. The Kubernetes API is faked; tests/e2e/test_real_serving.py runs the
real thing on the real node."""

import asyncio
from typing import Any

import pytest

from moorage.api.model import OpenSourceModel
from moorage.api.programs import Report
from moorage.api.resolved import ResolvedSource
from moorage.plan.resolve import job_name
from moorage.reconcile.reconciler import Reconciler
from moorage.reconcile.resolver import Resolver

Obj = dict[str, Any]
SHA = "c" * 40
MODEL = {
    "apiVersion": "moorage.dev/v1alpha1",
    "kind": "OpenSourceModel",
    "metadata": {"name": "m", "namespace": "ns", "uid": "u-1", "generation": 1},
    "spec": {"source": {"uri": "hf://org/gated", "tokenSecretRef": {"name": "hf"}}},
}
JOB = job_name(OpenSourceModel.parse(MODEL))


class Kube:
    """The model, and the resolve Job with one pod when given; writes are recorded."""

    def __init__(self, job_status: Obj | None = None, pod_status: Obj | None = None) -> None:
        self.job = {"kind": "Job", "metadata": {"name": JOB}, "status": job_status} if job_status else None
        self.pod = {"metadata": {"name": f"{JOB}-x"}, "status": pod_status} if pod_status else None
        self.applied: list[Obj] = []
        self.status: Obj = {}

    async def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        if kind == "OpenSourceModel":
            return MODEL
        return self.job if kind == "Job" and name == JOB else None

    async def select(
        self, kind: str, namespace: str, labels: dict[str, str | None], owner: str | None = None
    ) -> list[Obj]:
        return [self.pod] if kind == "Pod" and self.pod and labels.get("job-name") == JOB else []

    async def served(self, kind: str, namespace: str) -> bool:
        return False  # no gateway CRDs

    async def apply(self, manifest: Obj, field_manager: str = "moorage") -> None:
        self.applied.append(manifest)

    async def patch_status(self, namespace: str, name: str, status: Obj) -> None:
        self.status = status

    async def event(self, *args: object) -> None:
        pass

    async def delete(self, *args: object) -> None:
        pass

    async def patch(self, *args: object) -> None:
        pass

    def condition(self, type_: str) -> Obj:
        return next(c for c in self.status["conditions"] if c["type"] == type_)

    def applied_named(self, kind: str) -> list[Obj]:
        return [m for m in self.applied if m["kind"] == kind]


def never_asked(*_: object) -> ResolvedSource:
    raise AssertionError("the operator must not ask the hub for a source with a token")


def reconcile(kube: Kube) -> None:
    asyncio.run(Reconciler(kube, resolver=Resolver(resolve=never_asked))("ns", "m"))  # type: ignore[arg-type]


def terminated(report: Report) -> Obj:
    return {
        "containerStatuses": [{"name": "resolve", "state": {"terminated": {"message": report.to_json()}}}]
    }


def test_the_resolve_job_is_made_with_the_token_from_the_secret_and_nothing_else_yet() -> None:
    kube = Kube()
    reconcile(kube)
    jobs = kube.applied_named("Job")
    assert [j["metadata"]["name"] for j in jobs] == [JOB]
    container = jobs[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["resolve", "hf://org/gated"]
    token = next(e for e in container["env"] if e["name"] == "HF_TOKEN")
    assert token == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    assert not kube.applied_named("PersistentVolumeClaim")
    assert kube.condition("Ready")["reason"] == "Resolving"


@pytest.mark.parametrize(
    ("kubelet", "message"),
    [
        ('secret "hf" not found', "spec.source.tokenSecretRef: Secret 'hf' not found in namespace 'ns'"),
        (
            "couldn't find key token in Secret ns/hf",
            "spec.source.tokenSecretRef: no key 'token' in Secret 'hf' in namespace 'ns'",
        ),
    ],
)
def test_a_missing_secret_or_key_names_the_field(kubelet: str, message: str) -> None:
    waiting = {"reason": "CreateContainerConfigError", "message": kubelet}
    kube = Kube({"active": 1}, {"containerStatuses": [{"name": "resolve", "state": {"waiting": waiting}}]})
    reconcile(kube)
    ready = kube.condition("Ready")
    assert (ready["reason"], ready["message"]) == ("TokenSecretNotFound", message)


def test_the_report_pins_the_commit_and_sizes_the_volume() -> None:
    summary = {"sha": SHA, "files": 3, "bytes": 20 * 2**30, "parameters": 8_000_000_000, "dtype": "BF16"}
    report = Report(True, "Resolved", "ok", {"source": summary})
    kube = Kube({"conditions": [{"type": "Complete", "status": "True"}]}, terminated(report))
    reconcile(kube)
    assert kube.status["resolvedRevision"] == SHA
    assert JOB not in {j["metadata"]["name"] for j in kube.applied_named("Job")}, "an existing Job re-applied"
    claim = kube.applied_named("PersistentVolumeClaim")[0]
    assert (
        claim["spec"]["resources"]["requests"]["storage"] == "24Gi"
    )  # 20 GiB and a tenth, and 2 GiB of headroom
    pull = next(j for j in kube.applied_named("Job") if j["metadata"]["name"] != JOB)
    assert pull["spec"]["template"]["spec"]["containers"][0]["args"][2:4] == ["--revision", SHA]


def test_no_access_stalls_and_says_how_to_try_again() -> None:
    report = Report(False, "AccessDenied", "the token has not been granted access")
    kube = Kube({"conditions": [{"type": "Failed", "status": "True"}]}, terminated(report))
    reconcile(kube)
    stalled = kube.condition("Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "AccessDenied")
    assert stalled["message"].endswith(f"(to resolve again: kubectl delete job {JOB})")


def test_a_finished_job_without_its_report_is_said_plainly() -> None:
    kube = Kube({"conditions": [{"type": "Complete", "status": "True"}]})
    reconcile(kube)
    stalled = kube.condition("Stalled")
    assert stalled["reason"] == "ResolveFailed" and "without a report" in stalled["message"]
