"""Reading the world of one model: its source on the hub, its children, their pods."""

import logging
from dataclasses import dataclass, replace

from lightkube.core.exceptions import ApiError

from moorage.api.activation import (
    ACTIVATOR_LABEL,
    COLD_START,
    SLICE_CONTROLLER,
    SLICE_MANAGER_LABEL,
    ready_ips,
)
from moorage.api.model import OpenSourceModel
from moorage.api.programs import Report
from moorage.api.resolved import Counts, ResolvedAdapter, ResolvedSource
from moorage.api.spec import AdapterSource
from moorage.api.status import ConditionType, WeightsStatus
from moorage.hub import HubError, check_trust
from moorage.hub.uri import parse_uri
from moorage.plan import activator, adapters, finetune, resolve, weights
from moorage.plan.config import PlanConfig
from moorage.plan.gateway import HTTP_ROUTE, INFERENCE_POOL
from moorage.plan.meta import SPEC_HASH, selector
from moorage.plan.observed import (
    AutoscalerState,
    DeploymentState,
    GatewayApis,
    JobState,
    Observed,
    Problem,
    crash_loop,
    start_problem,
)
from moorage.plan.serving import AUTOSCALER, REPLICAS_OWNER, TEMPLATE_HASH
from moorage.reconcile.checks import serving_problem
from moorage.reconcile.discovery import Discovery
from moorage.reconcile.kube import KindNotServedError, Kube, Obj
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


Adapters = tuple[ResolvedAdapter, ...]


async def _sources(
    kube: Kube,
    resolver: Resolver,
    model: OpenSourceModel,
    config: PlanConfig,
    live: dict[tuple[str, str], Obj],
) -> tuple[ResolvedSource | None, ResolvedSource | None, Adapters]:
    """The source (and hub dataset, and adapters) pinned to commits; None while a resolve Job is at work.
    The resolve Job, when there is one, goes into `live`: a Job that exists is never applied again."""
    if resolve.needs_job(model):
        resolved, dataset, adapters = await _resolved_in_job(kube, model, live)
    else:
        resolved, dataset = await _resolved_here(resolver, model)
        adapters = await _adapters_here(resolver, model)
    if resolved is not None and (problem := serving_problem(model, resolved, config)) is not None:
        raise SourceProblemError(problem)
    return resolved, dataset, adapters


async def _adapters_here(resolver: Resolver, model: OpenSourceModel) -> Adapters:
    """spec.adapters pinned, anonymously. A hub outage keeps the commits status remembers."""
    pinned: list[ResolvedAdapter] = []
    for wanted in model.spec.adapters or ():
        if wanted.claim is not None:
            pinned.append(ResolvedAdapter(wanted.name, wanted.uri))  # read from its claim by the Job
            continue
        try:
            source = await resolver(wanted.uri, wanted.revision, adapters.INCLUDE)
        except HubError as error:
            remembered = _remembered_adapter(model, wanted)
            if not error.retryable or remembered is None:
                message = f"spec.adapters {wanted.name!r}: {error.message}"
                raise SourceProblemError(Problem(error.reason, message, error.retryable)) from error
            source = replace(remembered, hub_down=True)
        pinned.append(ResolvedAdapter(wanted.name, wanted.uri, source))
    return tuple(pinned)


def _remembered_adapter(model: OpenSourceModel, wanted: AdapterSource) -> ResolvedSource | None:
    """The commit status remembers for an entry of spec.adapters (same name and uri), if any."""
    sha = next(
        (a.revision for a in model.status.adapters or () if (a.name, a.uri) == (wanted.name, wanted.uri)),
        None,
    )
    if sha is None:
        return None
    repo_id, repo_type = parse_uri(wanted.uri)
    return ResolvedSource(wanted.uri, repo_id, repo_type, wanted.revision, sha, ())


async def _resolved_here(
    resolver: Resolver, model: OpenSourceModel
) -> tuple[ResolvedSource, ResolvedSource | None]:
    """A source without a token: the operator asks the hub itself, anonymously."""
    source = model.spec.source
    try:
        resolved = await resolver(source.uri, source.revision, source.include)
        check_trust(resolved, source.trust_remote_code)
        dataset = None
        tune = model.spec.fine_tune
        if tune and tune.dataset.from_hub:
            dataset = await resolver(tune.dataset.uri, tune.dataset.revision, None)
    except HubError as error:
        if not error.retryable:
            raise SourceProblemError(Problem(error.reason, error.message)) from error
        # The hub is down (an operator restart forgot what it said): what status pinned still stands.
        stalled = _stalled(model)
        if stalled is not None:
            raise SourceProblemError(stalled) from error
        pinned = _from_status(model)
        if pinned is None:
            raise SourceProblemError(Problem(error.reason, error.message, retryable=True)) from error
        log.warning("%s/%s: %s; the pinned %s stands", *model.key, error.message, pinned[0].sha[:12])
        return replace(pinned[0], hub_down=True), pinned[1]
    return resolved, dataset


async def _resolved_in_job(
    kube: Kube, model: OpenSourceModel, live: dict[tuple[str, str], Obj]
) -> tuple[ResolvedSource | None, ResolvedSource | None, Adapters]:
    """A source with a token: its resolve Job (which alone gets the token) reports what it found."""
    namespace, name = model.metadata.namespace, resolve.job_name(model)
    job, state = await _job(kube, namespace, name, resolve.CONTAINER)
    if job is None or state is None:
        return None, None, ()  # the plan creates the Job
    live["Job", name] = job
    report = state.report
    if state.succeeded and report is not None and report.ok:
        try:
            return _from_report(model, report.details)
        except (KeyError, TypeError, ValueError) as error:
            raise SourceProblemError(
                Problem("ResolveFailed", f"Job {name}: the report cannot be read ({error!r})")
            ) from error
    if state.failed:
        reason = report.reason if report and not report.ok else "ResolveFailed"
        message = report.message if report and not report.ok else state.failure_message
        message = message or f"Job {name} failed; see its pod's logs"
        # Access granted on the hub later changes nothing in the spec: say how to try again.
        raise SourceProblemError(Problem(reason, f"{message} (to resolve again: kubectl delete job {name})"))
    if state.succeeded:
        # Its pod is gone (garbage-collected) with the report: status remembers the resolution.
        pinned = _from_status(model)
        if pinned is not None:
            return *pinned, _adapters_from_status(model)
        raise SourceProblemError(
            Problem(
                "ResolveFailed",
                f"Job {name} finished without a report (its pod is gone); delete the Job to resolve again",
            )
        )
    if state.blocked is not None:
        raise SourceProblemError(_blocked(model, state.blocked))
    return None, None, ()


def _from_report(
    model: OpenSourceModel, details: dict[str, object]
) -> tuple[ResolvedSource, ResolvedSource | None, Adapters]:
    """What the resolve Job found (ResolvedSource.summary of each); raises on a malformed report."""

    def pinned(uri: str, revision: str, summary: object) -> ResolvedSource:
        assert isinstance(summary, dict), "a mapping"
        repo_id, repo_type = parse_uri(uri)
        return ResolvedSource.from_summary(uri, repo_id, repo_type, revision, summary)

    source = model.spec.source
    resolved = pinned(source.uri, source.revision, details["source"])
    tune = model.spec.fine_tune
    dataset = None
    if tune and tune.dataset.from_hub:
        dataset = pinned(tune.dataset.uri, tune.dataset.revision, details["dataset"])
    found = details.get("adapters") or {}
    assert isinstance(found, dict), "a mapping"
    adapters = tuple(
        ResolvedAdapter(a.name, a.uri, pinned(a.uri, a.revision, found[a.name]) if a.claim is None else None)
        for a in model.spec.adapters or ()
    )
    return resolved, dataset, adapters


def _adapters_from_status(model: OpenSourceModel) -> Adapters:
    """The commits status remembers for spec.adapters; raises when one is not known."""
    pinned: list[ResolvedAdapter] = []
    for wanted in model.spec.adapters or ():
        if wanted.claim is not None:
            pinned.append(ResolvedAdapter(wanted.name, wanted.uri))
            continue
        remembered = _remembered_adapter(model, wanted)
        if remembered is None:
            problem = Problem(
                "ResolveFailed", f"spec.adapters {wanted.name!r}: not resolved; delete the resolve Job"
            )
            raise SourceProblemError(problem)
        pinned.append(ResolvedAdapter(wanted.name, wanted.uri, remembered))
    return tuple(pinned)


def _blocked(model: OpenSourceModel, blocked: Problem) -> Problem:
    """Why the resolve Job's pod cannot start; a missing Secret or key (as the kubelet says) names the
    field."""
    ref, namespace = model.spec.source.token_secret_ref, model.metadata.namespace
    if ref is not None and blocked.reason == "PodConfigInvalid":
        missing = None
        if f'secret "{ref.name}" not found' in blocked.message:
            missing = f"Secret {ref.name!r} not found"
        elif f"couldn't find key {ref.key} in Secret" in blocked.message:
            missing = f"no key {ref.key!r} in Secret {ref.name!r}"
        if missing:
            message = f"spec.source.tokenSecretRef: {missing} in namespace {namespace!r}"
            return Problem("TokenSecretNotFound", message, retryable=True)
    return Problem(blocked.reason, f"the resolve Job's pod cannot start: {blocked.message}", retryable=True)


def _stalled(model: OpenSourceModel) -> Problem | None:
    """A model stalled for a reason a person must fix stays stalled while nothing can be asked: the spec is
    the one that stalled."""
    previous = model.status
    stalled = previous.condition(ConditionType.STALLED)
    if stalled and stalled.status == "True" and previous.observed_generation == model.metadata.generation:
        return Problem(stalled.reason, stalled.message)
    return None


def _from_status(model: OpenSourceModel) -> tuple[ResolvedSource, ResolvedSource | None] | None:
    """The resolution the model's status remembers, for a source the spec has not changed since and weights
    verified on the volume; None when status cannot stand in."""
    previous, spec = model.status, model.spec
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
        return None
    resolved = _pinned(spec.source.uri, spec.source.revision, previous.resolved_revision, weights)
    if dataset is None or dataset_sha is None:
        return resolved, None
    return resolved, _pinned(dataset.uri, dataset.revision, dataset_sha, WeightsStatus())


def _pinned(uri: str, revision: str, sha: str, weights: WeightsStatus) -> ResolvedSource:
    repo_id, repo_type = parse_uri(uri)
    counts = Counts(weights.files or 0, weights.bytes or 0)
    return ResolvedSource(uri, repo_id, repo_type, revision, sha, (), counts=counts)


async def _check_claims(kube: Kube, model: OpenSourceModel) -> None:
    """A pvc:// dataset or adapter on a claim that does not exist would leave its Job's pod Pending for
    ever: the model stalls naming the field instead."""
    named: list[tuple[str, str, str]] = []
    if model.spec.fine_tune and model.spec.fine_tune.dataset.claim:
        named.append(
            ("DatasetClaimNotFound", "spec.fineTune.dataset.uri", model.spec.fine_tune.dataset.claim)
        )
    for index, adapter in enumerate(model.spec.adapters or ()):
        if adapter.claim:
            named.append((adapters.NOT_FOUND, f"spec.adapters[{index}].uri", adapter.claim))
    namespace = model.metadata.namespace
    for reason, field, claim in named:
        # The user's claim, not ours: the watches (of our claims only) cannot tell.
        if await kube.get("PersistentVolumeClaim", namespace, claim, watched=False) is None:
            raise SourceProblemError(
                Problem(
                    reason,
                    f"{field}: PersistentVolumeClaim {claim!r} not found in namespace {namespace!r}; "
                    "create it, or name a claim that exists",
                )
            )


def applied_replicas(deployment: Obj) -> bool:
    """Did our last apply of the Deployment set its replicas (not left them to an autoscaler)? Read from
    the annotation that apply wrote: the watch-fed stores keep no managedFields."""
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    return annotations.get(REPLICAS_OWNER) != AUTOSCALER


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


async def _gateway(
    kube: Kube, discovery: Discovery, model: OpenSourceModel, live: dict[tuple[str, str], Obj]
) -> tuple[GatewayApis, tuple[tuple[str, str], ...]]:
    """Which gateway kinds the cluster serves, and the model's live objects of those kinds (also when the
    spec no longer asks for them: they are to be removed)."""
    namespace, name = model.metadata.namespace, model.metadata.name
    apis = await discovery.gateway_apis(namespace)
    try:
        found = await _gateway_objects(kube, apis, namespace, name)
    except KindNotServedError:
        # A CRD went away and the watch of CRDs has not said so yet: what discovery remembered is stale.
        discovery.forget()
        apis = await discovery.gateway_apis(namespace)
        found = await _gateway_objects(kube, apis, namespace, name)
    hashes = []
    for kind, obj in found:
        live[kind, name] = obj
        hashes.append((kind, ((obj.get("metadata") or {}).get("annotations") or {}).get(SPEC_HASH, "")))
    return apis, tuple(hashes)


async def _gateway_objects(kube: Kube, apis: GatewayApis, namespace: str, name: str) -> list[tuple[str, Obj]]:
    found = []
    for api, served in ((INFERENCE_POOL, apis.inference_pool), (HTTP_ROUTE, apis.http_route)):
        obj = await kube.get(api.kind, namespace, name) if served else None
        if obj:
            found.append((api.kind, obj))
    return found


async def observe(
    kube: Kube, resolver: Resolver, model: OpenSourceModel, config: PlanConfig, discovery: Discovery
) -> World:
    namespace, name = model.metadata.namespace, model.metadata.name
    live: dict[tuple[str, str], Obj] = {}
    resolved = dataset = problem = None
    pinned_adapters: Adapters = ()
    try:
        resolved, dataset, pinned_adapters = await _sources(kube, resolver, model, config, live)
        await _check_claims(kube, model)
    except SourceProblemError as error:
        problem = error.problem

    pull = tuned = adapters_job = None
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
        if adapters.enabled(model):
            job_name = adapters.job_name(model, resolved, pinned_adapters)
            job, adapters_job = await _job(kube, namespace, job_name, adapters.CONTAINER)
            if job:
                live["Job", job_name] = job

    deployment_state = blocked = crashing = None
    templates: dict[str, Obj] = {}
    for kind in ("Deployment", "Service", "PodDisruptionBudget"):
        obj = await kube.get(kind, namespace, name)
        if obj:
            live[kind, name] = obj
    deployment = live.get(("Deployment", name))
    if deployment:
        deployment_state = DeploymentState.from_deployment(deployment)
        current = deployment_state.annotations.get(TEMPLATE_HASH)
        if not deployment_state.rolled_out:
            pods = await kube.select("Pod", namespace, selector(model))
            blocked = start_problem(pods)
            crashing = crash_loop(pods, TEMPLATE_HASH, current) if current else None
        if current:
            templates[current] = (deployment.get("spec") or {}).get("template") or {}
        last_ready = model.status.last_ready_revision
        if (
            model.spec.serving.rollout.rolls_back()
            and last_ready
            and last_ready.template_hash not in templates
        ):
            templates |= await _templates(kube, model, deployment)

    autoscaler = None
    wanted = model.spec.serving.autoscaling is not None
    if wanted:
        autoscaler = AutoscalerState(installed=False)
    # Autoscaling just turned off (our apply left the replicas to a scaler): its ScaledObject must go.
    left = deployment is not None and not applied_replicas(deployment)
    if (wanted or left) and await discovery.keda(namespace):
        scaled = await kube.get("ScaledObject", namespace, name)
        if scaled:
            live["ScaledObject", name] = scaled
        if wanted:
            autoscaler = AutoscalerState.from_scaled_object(scaled)

    gateway_apis, gateway_hashes = await _gateway(kube, discovery, model, live)
    activator_addresses = await _activator(kube, model, config, deployment, live)
    observed = Observed(
        activator=activator_addresses,
        gateway_apis=gateway_apis,
        gateway_hashes=gateway_hashes,
        resolved=resolved,
        dataset=dataset,
        problem=problem,
        pull=pull,
        finetune=tuned,
        adapters=pinned_adapters,
        adapters_job=adapters_job,
        deployment=deployment_state,
        serving_blocked=blocked,
        autoscaler=autoscaler,
        crash_loop=crashing,
        templates=templates,
    )
    return World(observed, live)


async def _activator(
    kube: Kube,
    model: OpenSourceModel,
    config: PlanConfig,
    deployment: Obj | None,
    live: dict[tuple[str, str], Obj],
) -> tuple[str, ...]:
    """For a model that scales to zero (or did at our last apply): the activator's ready addresses, and
    the model's live activator slice (to be removed once not planned). Others cost no request."""
    annotations = ((deployment or {}).get("metadata") or {}).get("annotations") or {}
    wanted = activator.scales_to_zero(model)
    if not wanted and COLD_START not in annotations:
        return ()
    name = activator.slice_name(model)
    ours = await kube.get("EndpointSlice", model.metadata.namespace, name, watched=False)
    if ours is not None:
        live["EndpointSlice", name] = ours
    if not wanted or config.activator_namespace is None:
        return ()
    try:
        slices = await kube.select(
            "EndpointSlice",
            config.activator_namespace,
            {ACTIVATOR_LABEL: None, SLICE_MANAGER_LABEL: SLICE_CONTROLLER},
        )
    except ApiError as error:
        if error.status.code != 403:
            raise
        # An operator confined to some namespaces may not read the activator's: no one holds requests.
        log.warning("%s/%s: cannot read the activator's endpoints: %s", *model.key, error.status.message)
        return ()
    return tuple(sorted({address for found in slices for address in ready_ips(found)}))


async def _templates(kube: Kube, model: OpenSourceModel, deployment: Obj) -> dict[str, Obj]:
    """The pod templates of the Deployment's ReplicaSets (kept per its revisionHistoryLimit), by hash."""
    uid = deployment["metadata"].get("uid")
    found: dict[str, Obj] = {}
    for replica_set in await kube.select("ReplicaSet", model.metadata.namespace, selector(model)):
        owners = replica_set["metadata"].get("ownerReferences") or []
        if not any(o.get("uid") == uid for o in owners):
            continue
        template = (replica_set.get("spec") or {}).get("template") or {}
        hash_ = ((template.get("metadata") or {}).get("annotations") or {}).get(TEMPLATE_HASH)
        if hash_:
            found[hash_] = template
    return found
