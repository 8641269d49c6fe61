"""The resolve Job: a source that needs a hub token is resolved in a pod that gets the token from the
user's Secret, so the operator needs no access to Secrets at all (it reads the Job's report instead)."""

from moorage.api.layout import content_hash
from moorage.api.model import OpenSourceModel
from moorage.api.spec import AdapterSource
from moorage.plan.config import PlanConfig
from moorage.plan.jobs import program_container, program_job
from moorage.plan.meta import Manifest, truncate_name

CONTAINER = "resolve"
BACKOFF_LIMIT = 4
"""Pod retries for a transient failure (hub unreachable), after the program's own retries."""


def needs_job(model: OpenSourceModel) -> bool:
    """Only a source with a token is resolved in a Job; a public one the operator asks the hub itself."""
    return model.spec.source.token_secret_ref is not None


def hub_adapters(model: OpenSourceModel) -> list[AdapterSource]:
    """The entries of spec.adapters on the hub: a pvc:// one has nothing to resolve."""
    return [a for a in model.spec.adapters or () if a.claim is None]


def job_name(model: OpenSourceModel) -> str:
    """Named by what is resolved: the same source, dataset, token reference and trust, the same Job (its
    result stands while the spec does not change, like the operator's own cache of public sources)."""
    source = model.spec.source
    tune = model.spec.fine_tune
    dataset = (tune.dataset.uri, tune.dataset.revision) if tune and tune.dataset.from_hub else None
    ref = source.token_secret_ref.wire() if source.token_secret_ref else None
    listed = [a.wire() for a in hub_adapters(model)]
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
    args += [f"--adapter={a.name}={a.uri}@{a.revision}" for a in hub_adapters(model)]
    container = program_container(
        CONTAINER, args, model, config, requests=("100m", "256Mi"), memory_limit="512Mi", weights=False
    )
    return program_job(
        model, container, name=job_name(model), component="resolve", claim=None, backoff_limit=BACKOFF_LIMIT
    )
