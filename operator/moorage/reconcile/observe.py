"""Reading the world of one model: its source on the hub, its children, their pods."""

from dataclasses import dataclass, replace

from moorage.api.model import OpenSourceModel
from moorage.api.programs import Report
from moorage.api.quantity import gib, parse_quantity
from moorage.api.resolved import ResolvedSource
from moorage.api.resources import cpu_memory_bytes
from moorage.api.spec import Resources
from moorage.hub import HubError, check_trust
from moorage.hub.sizing import GPU_PROFILES, estimate_fit
from moorage.plan import finetune, weights
from moorage.plan.config import PlanConfig
from moorage.plan.meta import selector
from moorage.plan.observed import DeploymentState, JobState, Observed, Problem, unschedulable_message
from moorage.reconcile.kube import Kube, Obj
from moorage.reconcile.resolver import Resolver

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
    token = await kube.secret_value(model.metadata.namespace, ref.name, ref.key)
    if token is None:
        raise SourceProblemError(
            Problem(
                "TokenSecretNotFound",
                f"spec.source.tokenSecretRef: no key {ref.key!r} in Secret {ref.name!r} of namespace "
                f"{model.metadata.namespace!r}",
                retryable=True,
            )
        )
    return token


def _check_memory(model: OpenSourceModel, resolved: ResolvedSource) -> None:
    """On CPU the weights and the KV cache live in the pod's memory: a limit too small would OOM-kill it."""
    memory = (model.spec.serving.resources or Resources()).memory
    needed = cpu_memory_bytes(resolved.total_bytes)
    if memory is not None and parse_quantity(memory) < needed:
        raise SourceProblemError(
            Problem(
                "InsufficientMemory",
                f"spec.serving.resources.memory: {memory} cannot serve {resolved.repo_id} on CPU: it needs "
                f"~{gib(needed)} ({gib(resolved.total_bytes)} of weights, the KV cache and the engine); "
                "raise it, or leave it unset to size it from the model",
            )
        )


def _check_fit(model: OpenSourceModel, resolved: ResolvedSource, config: PlanConfig) -> None:
    serving = model.spec.serving
    if serving.on_cpu:
        _check_memory(model, resolved)
        return
    profile = serving.gpu_profile or config.default_gpu_profile
    if profile not in GPU_PROFILES:
        raise SourceProblemError(
            Problem(
                "UnknownGPUProfile",
                f"spec.serving.gpuProfile: {profile!r} is not one of {', '.join(sorted(GPU_PROFILES))}",
            )
        )
    if resolved.parameters is None:
        return
    fit = estimate_fit(
        parameters=resolved.parameters,
        weights_dtype=resolved.dtype,
        quantization=serving.vllm.quantization,
        dtype_override=serving.vllm.dtype,
        gpus=serving.tensor_parallel_size(),
        gpu_memory_bytes=GPU_PROFILES[profile].memory_bytes,
        gpu_name=profile,
        gpu_memory_utilization=serving.vllm.gpu_memory_utilization or 0.9,
    )
    if not fit.fits:
        raise SourceProblemError(Problem("InsufficientGPUMemory", f"spec.serving.gpus: {fit.message}"))


def _check_cache(model: OpenSourceModel, resolved: ResolvedSource) -> None:
    size = model.spec.cache.size
    if size is not None and parse_quantity(size) < resolved.total_bytes:
        raise SourceProblemError(
            Problem(
                "CacheTooSmall",
                f"spec.cache.size: {size} cannot hold the {gib(resolved.total_bytes)} of files of "
                f"{resolved.repo_id}@{resolved.sha[:12]}; leave it unset to size the volume from the files",
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
        raise SourceProblemError(Problem(error.reason, error.message, error.retryable)) from error
    _check_fit(model, resolved, config)
    _check_cache(model, resolved)
    return resolved, dataset


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
    if state.active and container == "pull":
        state = replace(state, progress=await _progress(kube, namespace, pods))
    return job, state


async def observe(kube: Kube, resolver: Resolver, model: OpenSourceModel, config: PlanConfig) -> World:
    namespace, name = model.metadata.namespace, model.metadata.name
    live: dict[tuple[str, str], Obj] = {}
    resolved = dataset = problem = None
    try:
        resolved, dataset = await _sources(kube, resolver, model, config)
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
        if model.spec.fine_tune:
            job_name = finetune.job_name(model, resolved, dataset)
            job, tuned = await _job(kube, namespace, job_name, "finetune")
            if job:
                live["Job", job_name] = job

    deployment_state = unschedulable = None
    for kind in ("Deployment", "Service", "PodDisruptionBudget"):
        obj = await kube.get(kind, namespace, name)
        if obj:
            live[kind, name] = obj
    deployment = live.get(("Deployment", name))
    if deployment:
        deployment_state = DeploymentState.from_deployment(deployment)
        if not deployment_state.rolled_out:
            unschedulable = unschedulable_message(await kube.select("Pod", namespace, selector(model)))

    observed = Observed(
        resolved=resolved,
        dataset=dataset,
        problem=problem,
        pull=pull,
        finetune=tuned,
        deployment=deployment_state,
        unschedulable=unschedulable,
    )
    return World(observed, live)
