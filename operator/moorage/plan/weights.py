"""The weights of a model: a content-addressed volume and the Job that fills it."""

import math
from collections.abc import Sequence
from typing import Any

from moorage.api.layout import WEIGHTS_MOUNT, content_hash, snapshot_dir
from moorage.api.model import OpenSourceModel
from moorage.api.quantity import GIB
from moorage.api.resolved import ResolvedSource
from moorage.plan.config import PlanConfig
from moorage.plan.jobs import program_container, program_job
from moorage.plan.meta import WEIGHTS_LABEL, Manifest, child, owner_reference

HEADROOM_BYTES = 2 * GIB
"""Room beside the weights for adapters, datasets and the filesystem's own overhead."""


def weights_id(model: OpenSourceModel, resolved: ResolvedSource) -> str:
    """Same weights and same cache settings, same id: every model on them shares one volume."""
    return content_hash(resolved.repo_type, resolved.repo_id, resolved.sha, model.spec.cache.wire())


def claim_name(model: OpenSourceModel, resolved: ResolvedSource) -> str:
    return claim_of(weights_id(model, resolved))


def claim_of(volume: str) -> str:
    """The name of the volume whose WEIGHTS_LABEL is `volume`."""
    return f"moorage-weights-{volume}"


def claim_size(model: OpenSourceModel, resolved: ResolvedSource) -> str:
    if model.spec.cache.size:
        return model.spec.cache.size
    return f"{math.ceil((resolved.total_bytes * 1.1 + HEADROOM_BYTES) / GIB)}Gi"


def weights_claim(model: OpenSourceModel, resolved: ResolvedSource) -> Manifest:
    cache = model.spec.cache
    spec: dict[str, Any] = {
        "accessModes": [cache.access_mode or "ReadWriteMany"],
        "resources": {"requests": {"storage": claim_size(model, resolved)}},
    }
    if cache.storage_class_name:
        spec["storageClassName"] = cache.storage_class_name
    weights_labels = {
        "app.kubernetes.io/name": "moorage-weights",
        "app.kubernetes.io/component": "weights",
        "app.kubernetes.io/part-of": "moorage",
        "app.kubernetes.io/managed-by": "moorage",
        WEIGHTS_LABEL: weights_id(model, resolved),
    }
    annotations = {"moorage.dev/source": resolved.uri, "moorage.dev/revision": resolved.sha}
    return child(
        model,
        api_version="v1",
        kind="PersistentVolumeClaim",
        name=claim_name(model, resolved),
        labels_=weights_labels,
        body={"spec": spec},
        annotations=annotations,
        owner=owner_reference(model, controller=False),
    )


def snapshot_path(resolved: ResolvedSource) -> str:
    return str(snapshot_dir(WEIGHTS_MOUNT, resolved.repo_id, resolved.repo_type, resolved.sha))


PULLED_PREFIX = "pulled.moorage.dev/"
PULL_JOB_PREFIX = "moorage-pull-"


def pulled_annotation(model: OpenSourceModel) -> str:
    """The volume's annotation that says a pull of these files completed; its value is the commit.

    The operator sets it only after a pull Job it made for this volume succeeded (the program verified every
    file's sha256 and wrote its completion marker), so a second model on the same weights serves at once,
    without a Job. One per set of include patterns: models may select different files of one snapshot."""
    return PULLED_PREFIX + content_hash(list(model.spec.source.include or ()), length=16)


def pulled_on(claim: Manifest | None, model: OpenSourceModel, resolved: ResolvedSource) -> bool:
    annotations = ((claim or {}).get("metadata") or {}).get("annotations") or {}
    return bool(annotations.get(pulled_annotation(model)) == resolved.sha)


def pull_job_name(model: OpenSourceModel, resolved: ResolvedSource) -> str:
    """One pull per volume and set of include patterns, whichever model asks for it first: the name says
    which files of which volume, never which model."""
    include = content_hash(list(model.spec.source.include or ()), length=8)
    return f"{PULL_JOB_PREFIX}{weights_id(model, resolved)}-{include}"


def pull_container(
    name: str, source: ResolvedSource, include: Sequence[str], model: OpenSourceModel, config: PlanConfig
) -> dict[str, Any]:
    """`moorage pull` of one pinned source onto the weights volume."""
    args = ["pull", source.uri, "--revision", source.sha, "--dest", str(WEIGHTS_MOUNT)]
    for pattern in include:
        args += ["--include", pattern]
    return program_container(name, args, model, config, requests=("500m", "512Mi"), memory_limit="2Gi")


def pull_job(model: OpenSourceModel, resolved: ResolvedSource, config: PlanConfig) -> Manifest:
    """The Job that fills the volume. One per volume (and include patterns), whichever model asks for it
    first: every model on the volume waits for it (its label names the volume), and it runs with the
    settings, hub token included, of the model that made it, which owns it and marks the volume pulled once
    it succeeded. It goes with that model (so a volume is never held by a finished pod of a Job waiting for
    the volume to go): a pull cut short that way is made again by another model on the volume, and resumes.
    """
    container = pull_container("pull", resolved, model.spec.source.include or (), model, config)
    return program_job(
        model,
        container,
        name=pull_job_name(model, resolved),
        component="weights",
        claim=claim_name(model, resolved),
        backoff_limit=6,
        annotations={"moorage.dev/revision": resolved.sha},
        labels_={WEIGHTS_LABEL: weights_id(model, resolved)},
    )
