"""The shape every moorage Job shares: our programs' exit codes drive the Job's retries."""

from typing import Any

from moorage.api.layout import WEIGHTS_MOUNT
from moorage.api.model import OpenSourceModel
from moorage.api.programs import ExitCode
from moorage.plan.config import PlanConfig
from moorage.plan.meta import Manifest, child, labels
from moorage.plan.security import container_security_context, pod_security_context


def job_spec(
    container: str,
    pod_spec: dict[str, Any],
    pod_labels: dict[str, str],
    backoff_limit: int,
    pod_annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Job that retries transient failures and stops at once on a permanent one (a wrong source, a bad
    dataset): the program says which through its exit code."""
    rules = [
        {
            "action": "FailJob",
            "onExitCodes": {
                "containerName": container,
                "operator": "In",
                "values": [int(ExitCode.PERMANENT)],
            },
        },
        # An evicted or preempted pod is not the program's fault and does not count against the backoff.
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
    ]
    metadata: dict[str, Any] = {"labels": pod_labels}
    if pod_annotations:
        metadata["annotations"] = pod_annotations
    return {
        "backoffLimit": backoff_limit,
        "podFailurePolicy": {"rules": rules},
        "template": {"metadata": metadata, "spec": {"restartPolicy": "Never", **pod_spec}},
    }


def hub_env(model: OpenSourceModel, config: PlanConfig) -> list[dict[str, Any]]:
    """Hub settings for a pod; the token comes from the Secret, so it is never in the manifest."""
    env: list[dict[str, Any]] = [{"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"}]
    if config.hf_endpoint:
        env.append({"name": "HF_ENDPOINT", "value": config.hf_endpoint})
    ref = model.spec.source.token_secret_ref
    if ref:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    return env


def program_container(
    name: str,
    args: list[str],
    model: OpenSourceModel,
    config: PlanConfig,
    *,
    requests: tuple[str, str],
    memory_limit: str,
    weights: bool = True,
) -> dict[str, Any]:
    """A container running one of our programs (`moorage <args>`) in the operator image, with the hub's
    settings and token, the weights volume (when it needs it) and a writable /tmp."""
    mounts = [{"name": "weights", "mountPath": str(WEIGHTS_MOUNT)}] if weights else []
    return {
        "name": name,
        "image": config.operator_image,
        "command": ["moorage"],
        "args": args,
        "env": [*hub_env(model, config), {"name": "HOME", "value": "/tmp"}],
        "resources": {
            "requests": {"cpu": requests[0], "memory": requests[1]},
            "limits": {"memory": memory_limit},
        },
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [*mounts, {"name": "tmp", "mountPath": "/tmp"}],
    }


def program_job(
    model: OpenSourceModel,
    container: dict[str, Any],
    *,
    name: str,
    component: str,
    claim: str | None,
    backoff_limit: int,
    annotations: dict[str, str] | None = None,
    volumes: list[dict[str, Any]] | None = None,
    labels_: dict[str, str] | None = None,
) -> Manifest:
    """A Job of one program container, on the weights volume `claim` (None: none), with more `volumes`
    (which the container mounts itself) and more labels (on the Job and its pods)."""
    weights = [{"name": "weights", "persistentVolumeClaim": {"claimName": claim}}] if claim else []
    pod_spec = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [*weights, *(volumes or ()), {"name": "tmp", "emptyDir": {}}],
    }
    job_labels = labels(model, component) | (labels_ or {})
    return child(
        model,
        api_version="batch/v1",
        kind="Job",
        name=name,
        labels_=job_labels,
        body={"spec": job_spec(container["name"], pod_spec, job_labels, backoff_limit=backoff_limit)},
        annotations=annotations,
    )
