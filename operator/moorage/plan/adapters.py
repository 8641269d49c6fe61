"""spec.adapters: the Job that pulls them onto the weights volume and lays them out for vLLM, and what the
serving pods need to load them at request time.

Why this design: vLLM's filesystem LoRA resolver loads an adapter the first time a request names it, from
<dir>/<name>. The directory is fixed per model, so the pod template does not depend on the list: adding an
adapter is a Job that writes one more directory, and no pod restarts. A removed adapter's directory goes,
and the operator unloads it from the replicas that loaded it (moorage.reconcile.adapters)."""

from moorage.api.layout import ADAPTER_FILES, CLAIMS_MOUNT, WEIGHTS_MOUNT, content_hash, served_adapters_dir
from moorage.api.model import OpenSourceModel
from moorage.api.resolved import ResolvedAdapter, ResolvedSource
from moorage.api.spec import claim_path
from moorage.api.status import AdapterStatus
from moorage.plan.config import PlanConfig
from moorage.plan.jobs import program_container, program_job
from moorage.plan.meta import Manifest, truncate_name
from moorage.plan.observed import Observed
from moorage.plan.weights import claim_name, snapshot_path

CONTAINER = "adapters"
INCLUDE = ADAPTER_FILES
NOT_FOUND = "AdapterNotFound"
"""The reason of a pvc:// adapter whose claim, directory or files are not there (the program's
AdapterNotFoundError)."""
DEFAULT_MAX_RANK = 16
"""vLLM's own default --max-lora-rank."""


def enabled(model: OpenSourceModel) -> bool:
    """spec.adapters is set (even empty): the pods are ready to load adapters at request time."""
    return model.spec.adapters is not None


def served_dir(model: OpenSourceModel) -> str:
    return str(served_adapters_dir(WEIGHTS_MOUNT, model.metadata.uid or "unknown"))


def max_rank(model: OpenSourceModel) -> int:
    return model.spec.serving.vllm.max_lora_rank or DEFAULT_MAX_RANK


def pod_env(model: OpenSourceModel) -> list[dict[str, str]]:
    """vLLM's filesystem resolver on the model's directory of served adapters. VLLM_PLUGINS stays unset: vLLM
    then loads every general plugin, this resolver among them (the hub resolver, which downloads, only
    when named there), and a custom image's own plugins keep working."""
    if not enabled(model):
        return []
    return [
        {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "true"},
        {"name": "VLLM_LORA_RESOLVER_CACHE_DIR", "value": served_dir(model)},
    ]


def job_name(model: OpenSourceModel, base: ResolvedSource, adapters: tuple[ResolvedAdapter, ...]) -> str:
    """Named by what is laid out: a new list (or commit) is a new Job. A pvc:// adapter is named by its uri,
    so new bytes at the same path are read by the next Job (a changed list, or this Job deleted)."""
    pinned = [(a.name, a.source.repo_id, a.source.sha) if a.source else (a.name, a.uri) for a in adapters]
    return truncate_name(model.metadata.name, f"adapters-{content_hash(base.sha, pinned, max_rank(model))}")


def claims(adapters: tuple[ResolvedAdapter, ...]) -> list[str]:
    """The distinct claims of the pvc:// adapters, sorted: one read-only volume each."""
    return sorted({claim_path(a.uri)[0] for a in adapters if a.source is None})


def claim_volumes(adapters: tuple[ResolvedAdapter, ...]) -> tuple[list[Manifest], list[Manifest]]:
    """The volumes and mounts of the claims pvc:// adapters lie on, read-only at CLAIMS_MOUNT/<claim>. The
    volume's name is by position: a claim's name may be longer than a volume's may."""
    volumes, mounts = [], []
    for index, claim in enumerate(claims(adapters)):
        name = f"claim-{index}"
        volumes.append({"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": name, "mountPath": str(CLAIMS_MOUNT / claim), "readOnly": True})
    return volumes, mounts


def adapters_job(
    model: OpenSourceModel, base: ResolvedSource, adapters: tuple[ResolvedAdapter, ...], config: PlanConfig
) -> Manifest:
    """`moorage adapters`: pulls each adapter (verified, into its content-addressed snapshot) or copies it
    from its claim (mounted read-only; the serving pods never mount it), checks it fits the base, and makes
    the served directory hold exactly these adapters."""
    args = [
        "adapters",
        "--dest",
        str(WEIGHTS_MOUNT),
        "--served-dir",
        served_dir(model),
        "--base-path",
        snapshot_path(base),
        "--base-repo",
        base.repo_id,
        "--max-rank",
        str(max_rank(model)),
    ]
    args += [a.pin() for a in adapters]
    container = program_container(
        CONTAINER, args, model, config, requests=("250m", "256Mi"), memory_limit="1Gi"
    )
    volumes, mounts = claim_volumes(adapters)
    container["volumeMounts"] += mounts
    return program_job(
        model,
        container,
        name=job_name(model, base, adapters),
        component="adapters",
        claim=claim_name(model, base),
        backoff_limit=4,
        volumes=volumes,
    )


Version = tuple[str, str | None, str | None]
"""What an adapter's name stands for: its uri, and its commit (hf://) or digest (pvc://)."""


def digest(model: OpenSourceModel, observed: Observed, index: int) -> str | None:
    """The digest of the pvc:// adapter at `index` of the list: as the adapters Job reported it (by
    position: the Job is named by the list, so its arguments are this list), else as status remembers it
    (the Job's pod, and so its report, is gone)."""
    adapter, job = observed.adapters[index], observed.adapters_job
    reported = job.report.details.get("digests") if job and job.report else None
    if isinstance(reported, list) and index < len(reported) and isinstance(reported[index], str):
        return str(reported[index])
    listed = model.status.adapters or ()
    return next((a.digest for a in listed if (a.name, a.uri) == (adapter.name, adapter.uri)), None)


def version(model: OpenSourceModel, observed: Observed, index: int) -> Version:
    """The version of the adapter at `index` of the list."""
    adapter = observed.adapters[index]
    if adapter.source is not None:
        return adapter.uri, adapter.source.sha, None
    return adapter.uri, None, digest(model, observed, index)


def version_of(entry: AdapterStatus) -> Version:
    return entry.uri, entry.revision, entry.digest


def changed(model: OpenSourceModel, observed: Observed) -> list[str]:
    """Names status lists with another version than spec.adapters now asks for (a new commit, uri or
    digest). A replica that loaded the old one keeps it in memory under that name until it is unloaded;
    its next request then loads the new one from the served directory."""
    before = {a.name: version_of(a) for a in model.status.adapters or () if not a.fine_tune}
    return [
        a.name
        for index, a in enumerate(observed.adapters)
        if a.name in before and _differ(before[a.name], version(model, observed, index))
    ]


def _differ(old: Version, new: Version) -> bool:
    """A digest not known yet (the Job has not reported) is no change of its own: the uri tells."""
    digests = (old[2], new[2])
    return old[:2] != new[:2] or (None not in digests and digests[0] != digests[1])
