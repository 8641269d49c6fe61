"""The model's status, derived from what was observed and planned: pure, so every case is a unit test."""

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from moorage.api.layout import WEIGHTS_MOUNT, content_hash
from moorage.api.model import OpenSourceModel
from moorage.api.quantity import gib
from moorage.api.status import (
    AdapterStatus,
    Condition,
    ConditionType,
    FineTuneStatus,
    OpenSourceModelStatus,
    WeightsStatus,
)
from moorage.plan import adapters, autoscaling, gateway, meta
from moorage.plan.children import Plan
from moorage.plan.config import PlanConfig
from moorage.plan.observed import JobState, Observed, Problem
from moorage.plan.revisions import proven, revision_of, revisions
from moorage.plan.rollback import ROLLED_BACK
from moorage.plan.serving import PORT, ServingTarget, endpoint, served_model_name

T = ConditionType
HUB_DOWN = "the hub cannot be reached, so the commit pinned in status stands"


@dataclass(frozen=True)
class Verdict:
    status: bool
    reason: str
    message: str = ""


def _job_problem(job: JobState, default_reason: str) -> Problem:
    if job.report and not job.report.ok:
        return Problem(job.report.reason, job.report.message)
    return Problem(default_reason, job.failure_message or "the Job failed; see its pod's logs")


def _weights(observed: Observed) -> Verdict:
    resolved = observed.resolved
    if resolved is None:
        return Verdict(False, "Resolving", "resolving the source revision on the hub")
    what = (
        f"{resolved.repo_id}@{resolved.sha[:12]} ({resolved.file_count} files, {gib(resolved.total_bytes)})"
    )
    pull = observed.pull
    if pull is not None and pull.succeeded:
        if resolved.hub_down:
            return Verdict(True, "Pulled", f"{what} verified on the cache volume; {HUB_DOWN}")
        return Verdict(True, "Pulled", f"{what} verified on the cache volume")
    if pull is not None and pull.blocked:
        return Verdict(False, pull.blocked.reason, f"the pull Job's pod cannot start: {pull.blocked.message}")
    if pull is not None and pull.progress:
        return Verdict(False, "Pulling", f"pulling {what}: {pull.progress}")
    if pull is not None and pull.failed:
        problem = _job_problem(pull, "PullFailed")
        return Verdict(False, problem.reason, problem.message)
    return Verdict(False, "Pulling", f"pulling {what}")


def _fine_tuned(model: OpenSourceModel, observed: Observed, weights: Verdict) -> Verdict | None:
    if model.spec.fine_tune is None:
        return None
    if not weights.status:
        return Verdict(False, "WaitingForWeights", "training starts once the base weights are pulled")
    job = observed.finetune
    if job is not None and job.succeeded:
        return Verdict(True, "Trained", job.report.message if job.report else "adapter trained")
    if job is not None and job.failed:
        problem = _job_problem(job, "TrainingFailed")
        return Verdict(False, problem.reason, problem.message)
    if job is not None and job.blocked:
        blocked = job.blocked
        return Verdict(False, blocked.reason, f"the fine-tune Job's pod cannot start: {blocked.message}")
    return Verdict(False, "Training", "training the LoRA adapter")


def _adapters(model: OpenSourceModel, observed: Observed, weights: Verdict) -> Verdict | None:
    """spec.adapters on the volume, laid out for vLLM; None without the list, or before the weights."""
    if not adapters.enabled(model) or not weights.status:
        return None
    job, names = observed.adapters_job, ", ".join(a.name for a in observed.adapters) or "none"
    if job is not None and job.succeeded:
        return Verdict(True, "AdaptersReady", f"adapters served: {names}")
    if job is not None and job.failed:
        problem = _job_problem(job, "AdaptersFailed")
        message = problem.message
        if problem.reason == adapters.NOT_FOUND and observed.resolved is not None:
            # Same list, same Job: putting the files on the claim changes nothing in the spec.
            name = adapters.job_name(model, observed.resolved, observed.adapters)
            message += f" (once it is there, kubectl delete job {name} to read it again)"
        return Verdict(False, problem.reason, message)
    if job is not None and job.blocked:
        return Verdict(
            False, job.blocked.reason, f"the adapters Job's pod cannot start: {job.blocked.message}"
        )
    return Verdict(False, "PullingAdapters", f"pulling adapters: {names}")


def _adapter_statuses(
    model: OpenSourceModel,
    observed: Observed,
    verdict: Verdict | None,
    removing: tuple[AdapterStatus, ...],
    tuned: AdapterStatus | None,
    *,
    reloading: frozenset[str],
) -> tuple[AdapterStatus, ...] | None:
    if observed.resolved is None:
        return model.status.adapters  # nothing new is known
    first = (tuned,) if tuned else ()
    if verdict is None:
        return first + removing or None
    job = observed.adapters_job
    state: Literal["Pulling", "Served", "Failed"] = (
        "Served" if verdict.status else "Failed" if job is not None and job.failed else "Pulling"
    )
    before = {a.name: a for a in model.status.adapters or ()}
    replaced = set(adapters.changed(model, observed))
    listed = []
    for index, a in enumerate(observed.adapters):
        uri, revision, digest = adapters.version(model, observed, index)
        message = None if state == "Served" else verdict.message
        entry = AdapterStatus(
            name=a.name, uri=uri, revision=revision, digest=digest, state=state, message=message
        )
        if a.name in replaced and (state != "Served" or a.name in reloading):
            # The replicas may hold the version status lists: it stays listed until none can serve it any
            # more (the new one is in place, and unloaded from every replica that loaded the old one).
            if state == "Served":
                message = "replacing the version the replicas loaded: being unloaded from them"
            entry = before[a.name].model_copy(
                update={"state": "Failed" if state == "Failed" else "Pulling", "message": message}
            )
        listed.append(entry)
    return first + tuple(listed) + removing


def _fine_tuned_adapter(observed: Observed, plan: Plan, tuned: Verdict | None) -> AdapterStatus | None:
    """The adapter spec.fineTune trained, as one more entry of status.adapters. It is served from the pods'
    command line (--lora-modules), so it is Served once the Deployment runs it, all rolled out."""
    desired = plan.desired
    adapter = desired.adapter if desired else None
    if desired is None or adapter is None or tuned is None:
        return None
    deployment = observed.deployment
    current = ServingTarget.from_annotations(deployment.annotations) if deployment else None
    state: Literal["Training", "Deploying", "Served", "Failed"]
    message: str | None = tuned.message
    if observed.finetune is not None and observed.finetune.failed:
        state = "Failed"
    elif not tuned.status:
        state = "Training"
    elif (
        deployment is not None
        and current is not None
        and current.adapter == adapter
        and deployment.rolled_out
        and deployment.available_replicas > 0
    ):
        state, message = "Served", None
    else:
        state, message = "Deploying", "the serving pods roll out to serve it"
    relative = PurePosixPath(adapter.path).relative_to(WEIGHTS_MOUNT)
    return AdapterStatus(
        name=adapter.served_name,
        uri=f"pvc://{desired.claim}/{relative}",
        digest=relative.name,
        fine_tune=True,
        state=state,
        message=message,
    )


def _available(observed: Observed) -> Verdict:
    deployment = observed.deployment
    if deployment is None:
        return Verdict(False, "NotDeployed", "the serving Deployment is created once the weights are ready")
    if deployment.available_replicas > 0:
        return Verdict(
            True, "MinimumReplicasAvailable", f"{deployment.available_replicas} replica(s) answering"
        )
    if observed.serving_blocked:
        return Verdict(False, observed.serving_blocked.reason, observed.serving_blocked.message)
    return Verdict(False, "NoReplicasAvailable", "no serving replica is ready")


def _stall(
    model: OpenSourceModel, observed: Observed, weights: Verdict, tuned: Verdict | None
) -> Problem | None:
    """A problem no retry will fix: a person has to change the spec or the world."""
    if observed.problem and not observed.problem.retryable:
        return observed.problem
    if observed.pull and observed.pull.failed:
        return Problem(weights.reason, weights.message)
    if tuned is not None and observed.finetune and observed.finetune.failed:
        return Problem(tuned.reason, tuned.message)
    served = _adapters(model, observed, weights)
    if served is not None and observed.adapters_job and observed.adapters_job.failed:
        return Problem(served.reason, served.message)
    deployment = observed.deployment
    if deployment and deployment.progress_deadline_exceeded is not None:
        deadline = model.spec.serving.rollout.deadline()
        return Problem(
            "ProgressDeadlineExceeded",
            f"the rollout made no progress for {deadline}s: {deployment.progress_deadline_exceeded}",
        )
    return None


def _ready(
    model: OpenSourceModel,
    observed: Observed,
    plan: Plan,
    weights: Verdict,
    tuned: Verdict | None,
    *,
    served: Verdict | None,
) -> Verdict:
    if observed.problem:
        return Verdict(False, observed.problem.reason, observed.problem.message)
    if not weights.status:
        return Verdict(False, weights.reason, weights.message)
    if tuned is not None and not tuned.status:
        return Verdict(False, tuned.reason, tuned.message)
    if served is not None and not served.status:
        return Verdict(False, served.reason, served.message)
    deployment = observed.deployment
    # The Deployment observed must be the one planned: same target, same spec, fully rolled out.
    planned = next((c for c in plan.children if c["kind"] == "Deployment"), None)
    if deployment is None or planned is None:
        return Verdict(False, "Deploying", "creating the serving Deployment")
    if (
        deployment.annotations.get(meta.SPEC_HASH) != planned["metadata"]["annotations"][meta.SPEC_HASH]
        or not deployment.rolled_out
    ):
        if observed.serving_blocked:
            return Verdict(False, observed.serving_blocked.reason, observed.serving_blocked.message)
        return Verdict(
            False,
            "RollingOut",
            f"{deployment.updated_replicas} of {deployment.desired_replicas} "
            f"replica(s) updated, {deployment.ready_replicas} ready",
        )
    if model.spec.serving.replicas == 0 and model.spec.serving.autoscaling is None:
        return Verdict(True, "ScaledToZero", "no replica is asked for")
    scaling = model.spec.serving.autoscaling
    if scaling is not None and scaling.to_zero and deployment.desired_replicas == 0:
        return Verdict(
            True,
            "ScaledToZero",
            "idle at zero replicas: the next request is held while a replica starts (coldStart)",
        )
    return Verdict(
        True,
        "Serving",
        f"{deployment.ready_replicas} replica(s) serving {plan.desired.revision[:12]}"
        if plan.desired
        else "serving",
    )


def _gateway(model: OpenSourceModel, observed: Observed, plan: Plan) -> Verdict | None:
    """Whether the gateway objects the spec asks for are in place; never a verdict on serving."""
    if model.spec.gateway is None:
        return None
    name = model.metadata.name
    lacking = gateway.missing(model, observed.gateway_apis)
    if lacking == gateway.INFERENCE_POOL:
        return Verdict(
            False,
            "InferencePoolCRDNotInstalled",
            f"spec.gateway: this cluster does not serve {lacking.kind} {lacking.api_version} (CRD "
            f"{lacking.crd}): install the Gateway API Inference Extension's CRDs; the model serves on its "
            "Service meanwhile",
        )
    live = dict(observed.gateway_hashes)
    planned = [c for c in plan.children if c["apiVersion"] in gateway.API_VERSIONS]
    pending = [c for c in planned if live.get(c["kind"]) != c["metadata"]["annotations"][meta.SPEC_HASH]]
    if pending:
        return Verdict(False, "Applying", "applying " + ", ".join(f"{c['kind']} {name}" for c in pending))
    if lacking is not None:
        return Verdict(
            False,
            "HTTPRouteCRDNotInstalled",
            f"spec.gateway.route: this cluster does not serve {lacking.kind} {lacking.api_version} (CRD "
            f"{lacking.crd}): install the Gateway API CRDs; InferencePool {name} is in place",
        )
    message = f"InferencePool {name} selects the serving pods on port {PORT}"
    route = model.spec.gateway.route
    if route is not None:
        where = f"{route.gateway.namespace or model.metadata.namespace}/{route.gateway.name}"
        message += f"; HTTPRoute {name} routes {route.path} on Gateway {where} to it"
    return Verdict(True, "Applied", message)


def _conditions(
    verdicts: dict[ConditionType, Verdict | None],
    previous: OpenSourceModelStatus,
    generation: int | None,
    now: str,
) -> tuple[Condition, ...]:
    conditions = []
    for type_, verdict in verdicts.items():
        if verdict is None:
            continue
        status = "True" if verdict.status else "False"
        before = previous.condition(type_)
        # lastTransitionTime moves only when the status flips, as metav1.Condition requires.
        since = before.last_transition_time if before is not None and before.status == status else now
        conditions.append(
            Condition(
                type=type_,
                status=status,
                reason=verdict.reason,
                message=verdict.message,
                observed_generation=generation,
                last_transition_time=since,
            )
        )
    return tuple(conditions)


def status(
    model: OpenSourceModel,
    observed: Observed,
    plan: Plan,
    config: PlanConfig,
    now: str,
    *,
    failure: Problem | None = None,
    removing: tuple[AdapterStatus, ...] = (),
    reloading: frozenset[str] = frozenset(),
) -> OpenSourceModelStatus:
    """The status to write: the previous status only lends its transition times. `failure` is what stopped
    this reconcile half-way (the API server refused a child): the model is not Ready while it lasts."""
    previous = model.status
    weights = _weights(observed)
    tuned = _fine_tuned(model, observed, weights)
    served = _adapters(model, observed, weights)
    stall = _stall(model, observed, weights, tuned)
    ready = _ready(model, observed, plan, weights, tuned, served=served)
    if plan.rollback is not None and observed.problem is None and failure is None:
        # Serving, but not what the spec asks for, and no retry will change that: a person must.
        stall = Problem(ROLLED_BACK, plan.rollback.message())
        ready = Verdict(False, stall.reason, stall.message)
    if failure is not None:
        ready = Verdict(False, failure.reason, failure.message)
    verdicts: dict[ConditionType, Verdict | None] = {
        T.READY: ready,
        T.RECONCILING: Verdict(
            not ready.status and stall is None,
            ready.reason if not ready.status else "Done",
            ready.message if not ready.status else "",
        ),
        T.STALLED: Verdict(True, stall.reason, stall.message) if stall else Verdict(False, "Progressing"),
        T.WEIGHTS_READY: weights,
        T.FINE_TUNED: tuned,
        T.AVAILABLE: _available(observed),
        T.GATEWAY_READY: _gateway(model, observed, plan),
        T.AUTOSCALING: _scaling(model, observed),
    }
    resolved = observed.resolved
    deployment = observed.deployment
    planned = next((c for c in plan.children if c["kind"] == "Deployment"), None)
    records = revisions(
        previous,
        revision_of(planned) if planned is not None else None,
        proven(deployment),
        plan.rollback.failed if plan.rollback else None,
        now,
    )
    fine_tune = None
    if plan.desired and plan.desired.adapter and tuned is not None:
        details = observed.finetune.report.details if observed.finetune and observed.finetune.report else {}
        fine_tune = FineTuneStatus(
            adapter=plan.desired.adapter.path.rsplit("/", 1)[-1],
            path=plan.desired.adapter.path,
            served_model_name=plan.desired.adapter.served_name,
            steps=_int(details.get("steps")),
            final_loss=_float(details.get("finalLoss")),
            duration_seconds=_float(details.get("seconds")),
            dataset_revision=observed.dataset.sha if observed.dataset else None,
        )
    return OpenSourceModelStatus(
        observed_generation=model.metadata.generation,
        conditions=_conditions(verdicts, previous, model.metadata.generation, now),
        resolved_revision=resolved.sha if resolved else previous.resolved_revision,
        serving_revision=plan.target.revision if plan.target else None,
        weights=WeightsStatus(
            files=resolved.file_count,
            bytes=resolved.total_bytes,
            progress=observed.pull.progress if observed.pull and not observed.pull.succeeded else None,
            claim=plan.desired.claim if plan.desired else None,
            path=plan.desired.weights_path if plan.desired else None,
            source_hash=model.spec.source.fingerprint(),
        )
        if resolved
        else previous.weights,
        fine_tune=fine_tune,
        replicas=deployment.replicas if deployment else 0,
        ready_replicas=deployment.ready_replicas if deployment else 0,
        updated_replicas=deployment.updated_replicas if deployment else 0,
        selector=",".join(f"{k}={v}" for k, v in meta.selector(model).items()),
        endpoint=endpoint(model, config),
        served_model_name=served_model_name(model),
        adapters=_adapter_statuses(
            model, observed, served, removing, _fine_tuned_adapter(observed, plan, tuned), reloading=reloading
        ),
        revision=records.current,
        last_ready_revision=records.last_ready,
        failed_revision=records.failed,
        revision_history=records.history,
    )


def _scaling(model: OpenSourceModel, observed: Observed) -> Verdict | None:
    found = autoscaling.verdict(model, observed)
    return Verdict(found.status, found.reason, found.message) if found else None


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def fingerprint(status: OpenSourceModelStatus) -> str:
    """Equal fingerprints, nothing to write."""
    return content_hash(status.wire(), length=32)


def invalid_spec_status(
    previous: OpenSourceModelStatus, generation: int | None, message: str, now: str
) -> OpenSourceModelStatus:
    """A spec the API server let through but the operator cannot use (e.g. a CRD older than the operator)."""
    verdicts: dict[ConditionType, Verdict | None] = {
        T.READY: Verdict(False, "InvalidSpec", message),
        T.RECONCILING: Verdict(False, "InvalidSpec", message),
        T.STALLED: Verdict(True, "InvalidSpec", message),
    }
    return previous.model_copy(
        update={
            "observed_generation": generation,
            "conditions": _conditions(verdicts, previous, generation, now),
        }
    )
