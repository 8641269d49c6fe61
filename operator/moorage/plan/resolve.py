"""The resolve Job: a source that needs a hub token is resolved in a pod that gets the token from the
user's Secret, so the operator needs no access to Secrets at all (it reads the Job's report instead)."""

from moorage.api.layout import content_hash
from moorage.api.model import OpenSourceModel
from moorage.plan.config import PlanConfig
from moorage.plan.jobs import job_spec
from moorage.plan.meta import Manifest, child, labels, truncate_name
from moorage.plan.security import container_security_context, pod_security_context
from moorage.plan.weights import hub_env

CONTAINER = "resolve"
BACKOFF_LIMIT = 4
"""Pod retries for a transient failure (hub unreachable), after the program's own retries."""


def needs_job(model: OpenSourceModel) -> bool:
    """Only a source with a token is resolved in a Job; a public one the operator asks the hub itself."""
    return model.spec.source.token_secret_ref is not None


def job_name(model: OpenSourceModel) -> str:
    """Named by what is resolved: the same source, dataset, token reference and trust, the same Job (its
    result stands while the spec does not change, like the operator's own cache of public sources)."""
    source = model.spec.source
    tune = model.spec.fine_tune
    dataset = (tune.dataset.uri, tune.dataset.revision) if tune and tune.dataset.from_hub else None
    ref = source.token_secret_ref.wire() if source.token_secret_ref else None
    listed = [a.wire() for a in model.spec.adapters or ()]
    digest = content_hash(source.fingerprint(), dataset, ref, source.trust_remote_code, *listed, length=16)
    return truncate_name(model.metadata.name, f"resolve-{digest}")


def resolve_job(model: OpenSourceModel, config: PlanConfig) -> Manifest:
    source = model.spec.source
    args = ["resolve", source.uri, "--revision", source.revision]
    for pattern in source.include or ():
        args += ["--include", pattern]
    if source.trust_remote_code:
        args.append("--trust-remote-code")
    tune = model.spec.fine_tune
    if tune and tune.dataset.from_hub:
        args += ["--dataset", tune.dataset.uri, "--dataset-revision", tune.dataset.revision]
    args += [f"--adapter={a.name}={a.uri}@{a.revision}" for a in model.spec.adapters or ()]
    container = {
        "name": CONTAINER,
        "image": config.operator_image,
        "command": ["moorage"],
        "args": args,
        "env": [*hub_env(model, config), {"name": "HOME", "value": "/tmp"}],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    job_labels = labels(model, "resolve")
    return child(
        model,
        api_version="batch/v1",
        kind="Job",
        name=job_name(model),
        labels_=job_labels,
        body={"spec": job_spec(CONTAINER, pod_spec, job_labels, backoff_limit=BACKOFF_LIMIT)},
    )
