"""Reading the world of one model: its source on the hub, its children, their pods."""

import base64
import logging
from dataclasses import dataclass, replace

from moorage.api.model import OpenSourceModel
from moorage.api.programs import Report
from moorage.api.resolved import Pinned, ResolvedSource
from moorage.api.status import ConditionType, WeightsStatus
from moorage.hub import HubError, check_trust
from moorage.hub.uri import parse_uri
from moorage.plan import finetune, weights
from moorage.plan.config import PlanConfig
from moorage.plan.meta import selector
from moorage.plan.observed import (
    DeploymentState,
    JobState,
    Observed,
    Problem,
    start_problem,
)
from moorage.reconcile.checks import serving_problem
from moorage.reconcile.kube import Kube, Obj
from moorage.reconcile.resolver import Resolver

log = logging.getLogger("moorage.reconcile")

PROGRESS_PREFIX = "pull: "
"""What `moorage pull` starts its progress lines with."""
PROGRESS_LINES = 5


@dataclass(frozen=True)
class World:
    """The facts for the plan, and the live children as read, for the apply and the clean-up."""

    observed: Observed
    live: dict[tuple[str, str], Obj]
    """(kind, name) → the child as the API server has it."""


class SourceProblemError(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


async def _token(kube: Kube, model: OpenSourceModel) -> str | None:
    ref = model.spec.source.token_secret_ref
    if ref is None:
        return None
    namespace = model.metadata.namespace
    secret = await kube.get("Secret", namespace, ref.name)
    encoded = ((secret or {}).get("data") or {}).get(ref.key)
    if encoded:
        return base64.b64decode(encoded).decode()
    missing = f"no key {ref.key!r} in Secret {ref.name!r}" if secret else f"Secret {ref.name!r} not found"
    raise SourceProblemError(
        Problem(
            "TokenSecretNotFound",
            f"spec.source.tokenSecretRef: {missing} in namespace {namespace!r}",
            retryable=True,
        )
    )


async def _sources(
    kube: Kube, resolver: Resolver, model: OpenSourceModel, config: PlanConfig
) -> tuple[ResolvedSource, ResolvedSource | None]:
    source = model.spec.source
    token = await _token(kube, model)
    try:
        resolved = await resolver(source.uri, source.revision, source.include, token)
        check_trust(resolved, source.trust_remote_code)
        dataset = None
        tune = model.spec.fine_tune
        if tune and tune.dataset.from_hub:
            dataset = await resolver(tune.dataset.uri, tune.dataset.revision, None, token)
    except HubError as error:
        if not error.retryable:
            raise SourceProblemError(Problem(error.reason, error.message)) from error
        # The hub is down (an operator restart forgot what it said): what status pinned still stands.
        resolved, dataset = _as_pinned(model, error)
    problem = serving_problem(model, resolved, config)
    if problem is not None:
        raise SourceProblemError(problem)
    return resolved, dataset


def _as_pinned(model: OpenSourceModel, error: HubError) -> tuple[ResolvedSource, ResolvedSource | None]:
    """The resolution the model's status remembers, for a source the spec has not changed since; else the
    outage (retried). A model stalled for a reason a person must fix stays stalled: nothing the hub could
    say now is known, and the spec is the one that stalled."""
    previous, spec = model.status, model.spec
    stalled = previous.condition(ConditionType.STALLED)
    if stalled and stalled.status == "True" and previous.observed_generation == model.metadata.generation:
        raise SourceProblemError(Problem(stalled.reason, stalled.message))
    weights, tuned = previous.weights, previous.fine_tune
    pulled = previous.condition(ConditionType.WEIGHTS_READY)
    dataset = spec.fine_tune.dataset if spec.fine_tune and spec.fine_tune.dataset.from_hub else None
    dataset_sha = tuned.dataset_revision if tuned else None
    if (
        weights is None
        or weights.source_hash != spec.source.fingerprint()
        or previous.resolved_revision is None
        or pulled is None
        or pulled.status != "True"
        or (dataset is not None and dataset_sha is None)
    ):
        raise SourceProblemError(Problem(error.reason, error.message, retryable=True)) from error
    sha = previous.resolved_revision
    log.warning("%s/%s: %s; the pinned %s stands", *model.key, error.message, sha[:12])
    resolved = _pinned(spec.source.uri, spec.source.revision, sha, weights)
    if dataset is None or dataset_sha is None:
        return resolved, None
    return resolved, _pinned(dataset.uri, dataset.revision, dataset_sha, WeightsStatus())


def _pinned(uri: str, revision: str, sha: str, weights: WeightsStatus) -> ResolvedSource:
    repo_id, repo_type = parse_uri(uri)
    return ResolvedSource(
        uri, repo_id, repo_type, revision, sha, (), pinned=Pinned(weights.files or 0, weights.bytes or 0)
    )


async def _check_dataset_claim(kube: Kube, model: OpenSourceModel) -> None:
    """A pvc:// dataset on a claim that does not exist would leave the fine-tune pod Pending for ever."""
    claim = model.spec.fine_tune.dataset.claim if model.spec.fine_tune else None
    # The user's claim, not ours: the watches (of our claims only) cannot tell.
    if (
        claim
        and await kube.get("PersistentVolumeClaim", model.metadata.namespace, claim, watched=False) is None
    ):
        raise SourceProblemError(
            Problem(
                "DatasetClaimNotFound",
                f"spec.fineTune.dataset.uri: PersistentVolumeClaim {claim!r} not found in namespace "
                f"{model.metadata.namespace!r}; create it, or name a claim that exists",
            )
        )


def termination_report(pods: list[Obj], container: str) -> Report | None:
    """The newest termination message our program left in one of the Job's pods."""
    newest: tuple[str, Report] | None = None
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") != container:
                continue
            for state in (status.get("state"), status.get("lastState")):
                terminated = (state or {}).get("terminated") or {}
                report = Report.from_json(terminated.get("message"))
                finished = str(terminated.get("finishedAt") or "")
                if report and (newest is None or finished >= newest[0]):
                    newest = (finished, report)
    return newest[1] if newest else None


async def _progress(kube: Kube, namespace: str, pods: list[Obj]) -> str | None:
    """The last progress line of a running Job pod (`kubectl logs` shows the same)."""
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    if not running:
        return None
    lines = await kube.log_tail(namespace, running[0]["metadata"]["name"], lines=PROGRESS_LINES)
    return next(
        (line.split(": ", 1)[1] for line in reversed(lines) if line.startswith(PROGRESS_PREFIX)), None
    )


async def _job(kube: Kube, namespace: str, name: str, container: str) -> tuple[Obj | None, JobState | None]:
    job = await kube.get("Job", namespace, name)
    if job is None:
        return None, None
    pods = await kube.select("Pod", namespace, {"job-name": name})
    state = JobState.from_job(job, termination_report(pods, container))
    if not (state.succeeded or state.failed):
        state = replace(state, blocked=start_problem(pods))
    if state.active and container == "pull":
        state = replace(state, progress=await _progress(kube, namespace, pods))
    return job, state


async def observe(kube: Kube, resolver: Resolver, model: OpenSourceModel, config: PlanConfig) -> World:
    namespace, name = model.metadata.namespace, model.metadata.name
    live: dict[tuple[str, str], Obj] = {}
    resolved = dataset = problem = None
    try:
        resolved, dataset = await _sources(kube, resolver, model, config)
        await _check_dataset_claim(kube, model)
    except SourceProblemError as error:
        problem = error.problem

    pull = tuned = None
    if resolved is not None:
        claim_name = weights.claim_name(model, resolved)
        claim = await kube.get("PersistentVolumeClaim", namespace, claim_name)
        if claim:
            live["PersistentVolumeClaim", claim_name] = claim
        job_name = weights.pull_job_name(model, resolved)
        job, pull = await _job(kube, namespace, job_name, "pull")
        if job:
            live["Job", job_name] = job
        elif weights.pulled_on(claim, model, resolved):
            pull = JobState(succeeded=True, on_volume=True)
        if model.spec.fine_tune:
            job_name = finetune.job_name(model, resolved, dataset)
            job, tuned = await _job(kube, namespace, job_name, "finetune")
            if job:
                live["Job", job_name] = job

    deployment_state = blocked = None
    for kind in ("Deployment", "Service", "PodDisruptionBudget"):
        obj = await kube.get(kind, namespace, name)
        if obj:
            live[kind, name] = obj
    deployment = live.get(("Deployment", name))
    if deployment:
        deployment_state = DeploymentState.from_deployment(deployment)
        if not deployment_state.rolled_out:
            blocked = start_problem(await kube.select("Pod", namespace, selector(model)))

    observed = Observed(
        resolved=resolved,
        dataset=dataset,
        problem=problem,
        pull=pull,
        finetune=tuned,
        deployment=deployment_state,
        serving_blocked=blocked,
    )
    return World(observed, live)
