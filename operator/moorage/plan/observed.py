"""What the operator saw of a model's world, reduced to the facts the plan and the status need.

Built by the reconcile layer from API objects (see `from_*` helpers), so the logic on top is pure and is
tested without a cluster.
"""

from dataclasses import dataclass, field
from typing import Any

from moorage.api.programs import Report
from moorage.api.resolved import ResolvedAdapter, ResolvedSource


@dataclass(frozen=True)
class Problem:
    """Something that stops progress, as a condition reason and a message naming what to fix."""

    reason: str
    message: str
    retryable: bool = False
    """True: the operator keeps trying (Reconciling); False: a person must act (Stalled)."""


@dataclass(frozen=True)
class JobState:
    succeeded: bool = False
    failed: bool = False
    active: bool = False
    report: Report | None = None
    """The termination message of the Job's last pod that wrote one."""
    failure_message: str = ""
    """The Job's Failed condition message (backoff limit, deadline, pod failure policy)."""
    progress: str | None = None
    """The program's last progress line while it runs, e.g. "3.1 GiB / 14.2 GiB (21.8%), 96.0 MiB/s"."""
    blocked: "Problem | None" = None
    """Why the Job's pod cannot start (unschedulable, its image cannot be pulled), while it cannot."""
    on_volume: bool = False
    """No Job ran for this model: the weights volume says an earlier pull of the same files completed."""

    @staticmethod
    def from_job(job: dict[str, Any], report: Report | None = None) -> "JobState":
        status = job.get("status") or {}
        conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
        failed = conditions.get("Failed")
        return JobState(
            succeeded="Complete" in conditions,
            failed=failed is not None,
            active=bool(status.get("active")),
            report=report,
            failure_message=(failed or {}).get("message", ""),
        )


@dataclass(frozen=True)
class DeploymentState:
    generation: int
    observed_generation: int
    replicas: int
    updated_replicas: int
    ready_replicas: int
    available_replicas: int
    desired_replicas: int
    annotations: dict[str, str]
    progress_deadline_exceeded: str | None = None
    """The Deployment's Progressing message when its deadline passed, else None."""
    image: str | None = None
    """The image of the pods' first container."""

    @staticmethod
    def from_deployment(deployment: dict[str, Any]) -> "DeploymentState":
        status = deployment.get("status") or {}
        stuck = next(
            (
                c.get("message", "")
                for c in status.get("conditions") or []
                if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
            ),
            None,
        )
        metadata = deployment.get("metadata") or {}
        return DeploymentState(
            generation=int(metadata.get("generation") or 0),
            observed_generation=int(status.get("observedGeneration") or 0),
            replicas=int(status.get("replicas") or 0),
            updated_replicas=int(status.get("updatedReplicas") or 0),
            ready_replicas=int(status.get("readyReplicas") or 0),
            available_replicas=int(status.get("availableReplicas") or 0),
            desired_replicas=int((deployment.get("spec") or {}).get("replicas") or 0),
            annotations=dict(metadata.get("annotations") or {}),
            progress_deadline_exceeded=stuck,
            image=_first_image((deployment.get("spec") or {}).get("template") or {}),
        )

    @property
    def rolled_out(self) -> bool:
        """Every replica runs the current template and is ready, and no old pod is left."""
        return (
            self.observed_generation >= self.generation
            and self.updated_replicas == self.desired_replicas
            and self.ready_replicas == self.desired_replicas
            and self.replicas == self.desired_replicas
        )


START_FAILURES = {
    "ErrImagePull": "ImagePullFailed",
    "ImagePullBackOff": "ImagePullFailed",
    "InvalidImageName": "ImagePullFailed",
    "CreateContainerConfigError": "PodConfigInvalid",
    "CrashLoopBackOff": "CrashLoopBackOff",
}
"""Waiting reasons of a container that will not start by itself, and the condition reason that says so."""
UNBOUND_CLAIM = "unbound immediate PersistentVolumeClaims"
"""What the scheduler says of a pod whose claim is not bound yet."""
LAST_WORDS = 400
"""Characters of a crashed container's last output kept in a message."""
CRASH_RESTARTS = 2
"""Restarts after which a crash-looping container of a new revision counts as broken: a program that
failed three times in a row with the same spec will not start by waiting longer."""


def _first_image(template: dict[str, Any]) -> str | None:
    containers = (template.get("spec") or {}).get("containers") or [{}]
    image = containers[0].get("image")
    return str(image) if image else None


def start_problem(pods: list[dict[str, Any]]) -> Problem | None:
    """Why a pod cannot start or keep running: the scheduler finds no node, an image cannot be pulled, or
    its program keeps crashing (with the end of what it printed, from its termination message)."""
    if (unschedulable := unschedulable_message(pods)) is not None:
        if UNBOUND_CLAIM in unschedulable:
            # The volume's storage class has not provisioned it yet: usually seconds, and the claim's own
            # events say more when it takes longer.
            message = f"the volume is not bound yet: {unschedulable}"
            return Problem("WaitingForVolume", message, retryable=True)
        return Problem("Unschedulable", unschedulable, retryable=True)
    for pod in pods:
        status = pod.get("status") or {}
        containers = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
        for container in containers:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = START_FAILURES.get(waiting.get("reason", ""))
            if reason is None:
                continue
            what = f"pod {(pod.get('metadata') or {}).get('name', '?')}: container {container.get('name')}"
            if reason == "CrashLoopBackOff":
                return Problem(reason, crashed(what, container), retryable=True)
            detail = waiting.get("message") or waiting["reason"]
            return Problem(reason, f"{what} ({container.get('image', '')}): {detail}", retryable=True)
    return None


def crashed(what: str, container: dict[str, Any]) -> str:
    """What a crashed container said: its exit code, restarts and the end of its output."""
    ended = (container.get("lastState") or {}).get("terminated") or {}
    words = " ".join(str(ended.get("message") or "").split())[-LAST_WORDS:]
    restarts = container.get("restartCount", 0)
    return f"{what} exited with code {ended.get('exitCode', '?')}, {restarts} restart(s)" + (
        f": {words}" if words else ""
    )


def crash_loop(pods: list[dict[str, Any]], annotation: str, value: str) -> Problem | None:
    """A container of one revision's pods (those whose `annotation` is `value`) crash-looping after
    CRASH_RESTARTS restarts or more, with what it said last."""
    for pod in pods:
        metadata = pod.get("metadata") or {}
        if (metadata.get("annotations") or {}).get(annotation) != value or metadata.get("deletionTimestamp"):
            continue
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if (
                waiting.get("reason") == "CrashLoopBackOff"
                and container.get("restartCount", 0) >= CRASH_RESTARTS
            ):
                what = f"pod {metadata.get('name', '?')}: container {container.get('name')}"
                return Problem("CrashLoopBackOff", crashed(what, container))
    return None


def unschedulable_message(pods: list[dict[str, Any]]) -> str | None:
    """The scheduler's reason when a serving pod cannot be placed (e.g. no node has enough GPUs)."""
    for pod in pods:
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
                return str(condition.get("message") or "no node fits the pod")
    return None


@dataclass(frozen=True)
class AutoscalerState:
    """KEDA, for a model with spec.serving.autoscaling."""

    installed: bool
    """The cluster serves KEDA's ScaledObject API."""
    ready: bool | None = None
    """The model's ScaledObject's Ready condition; None while there is none (not applied, or KEDA has not
    looked at it yet)."""
    message: str = ""

    @staticmethod
    def from_scaled_object(obj: dict[str, Any] | None) -> "AutoscalerState":
        conditions = ((obj or {}).get("status") or {}).get("conditions") or []
        ready = next((c for c in conditions if c.get("type") == "Ready"), None)
        if ready is None or ready.get("status") not in ("True", "False"):
            return AutoscalerState(installed=True)
        return AutoscalerState(True, ready["status"] == "True", str(ready.get("message") or ""))


@dataclass(frozen=True)
class GatewayApis:
    """Which gateway kinds the cluster serves (their CRDs are installed), as discovered."""

    inference_pool: bool = False
    """inference.networking.k8s.io/v1 InferencePool."""
    http_route: bool = False
    """gateway.networking.k8s.io/v1 HTTPRoute."""


EVERYWHERE = GatewayApis(inference_pool=True, http_route=True)
"""What `moorage render` assumes: the children a cluster with both CRDs gets."""


@dataclass(frozen=True)
class Observed:
    """Everything one reconcile learned, before deciding anything."""

    resolved: ResolvedSource | None = None
    dataset: ResolvedSource | None = None
    """The fine-tune dataset, when it comes from the hub."""
    problem: Problem | None = None
    """A problem found before any child is planned: resolution, sizing, a bad reference."""
    pull: JobState | None = None
    finetune: JobState | None = None
    adapters: tuple[ResolvedAdapter, ...] = ()
    """spec.adapters, pinned (empty until the source is resolved)."""
    adapters_job: JobState | None = None
    """The Job that pulls spec.adapters and lays them out for vLLM."""
    deployment: DeploymentState | None = None
    serving_blocked: Problem | None = None
    """Why serving pods of a rollout do not come up: unschedulable, image pull, crash loop."""
    autoscaler: AutoscalerState | None = None
    """Only for a model with spec.serving.autoscaling."""
    crash_loop: Problem | None = None
    """The pods of the Deployment's current template crash-loop (CRASH_RESTARTS or more restarts)."""
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Pod templates of the Deployment's ReplicaSets, by their moorage.dev/template-hash: what a
    rollback restores."""
    gateway_apis: GatewayApis = GatewayApis()
    gateway_hashes: tuple[tuple[str, str], ...] = ()
    """(kind, spec-hash annotation) of the model's live InferencePool and HTTPRoute."""
    activator: tuple[str, ...] = ()
    """The addresses of the activator's ready pods; read only for a model that scales to zero (empty
    otherwise, and where no activator runs)."""
