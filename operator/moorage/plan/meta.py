"""Names, labels and ownership shared by every child of a model."""

from typing import Any

from moorage.api.layout import content_hash
from moorage.api.model import API_VERSION, KIND, LABEL_PREFIX, OpenSourceModel

Manifest = dict[str, Any]

MODEL_LABEL = f"{LABEL_PREFIX}/model"
WEIGHTS_LABEL = f"{LABEL_PREFIX}/weights"
SPEC_HASH = f"{LABEL_PREFIX}/spec-hash"
"""Annotation: a hash of the child's desired content; equal hash, nothing to apply."""
MANAGED_BY = "app.kubernetes.io/managed-by"
OPERATOR = "moorage"


def labels(model: OpenSourceModel, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "moorage-model",
        "app.kubernetes.io/instance": model.metadata.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "moorage",
        MANAGED_BY: OPERATOR,
        MODEL_LABEL: model.metadata.name,
    }


def selector(model: OpenSourceModel) -> dict[str, str]:
    """Labels that pick the serving pods of one model; never changes for the model's lifetime."""
    return {MODEL_LABEL: model.metadata.name, "app.kubernetes.io/component": "serving"}


def owner_reference(model: OpenSourceModel, *, controller: bool = True) -> dict[str, Any]:
    """controller=False for a child several models own (the shared weights volume): it goes with the last."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": model.metadata.name,
        "uid": model.metadata.uid or "",
        "controller": controller,
        "blockOwnerDeletion": controller,
    }


def child(
    model: OpenSourceModel,
    *,
    api_version: str,
    kind: str,
    name: str,
    labels_: dict[str, str],
    body: Manifest,
    annotations: dict[str, str] | None = None,
    owner: dict[str, Any] | None = None,
) -> Manifest:
    """A child manifest: metadata filled in, and the hash of everything desired stamped on it."""
    metadata: Manifest = {
        "name": name,
        "namespace": model.metadata.namespace,
        "labels": labels_,
        "annotations": dict(annotations or {}),
        "ownerReferences": [owner or owner_reference(model)],
    }
    return stamp({"apiVersion": api_version, "kind": kind, "metadata": metadata, **body})


def stamp(manifest: Manifest) -> Manifest:
    """The manifest with the hash of its desired content (re)computed."""
    metadata = manifest["metadata"]
    annotations = {k: v for k, v in metadata["annotations"].items() if k != SPEC_HASH}
    # Owners stay out of the hash: models sharing a volume must agree on its hash, or they would take
    # turns re-applying it forever.
    hashed_metadata = {k: v for k, v in metadata.items() if k != "ownerReferences"} | {
        "annotations": annotations
    }
    metadata["annotations"] = annotations | {
        SPEC_HASH: content_hash({**manifest, "metadata": hashed_metadata}, length=16)
    }
    return manifest


def truncate_name(name: str, suffix: str, limit: int = 63) -> str:
    """name-suffix within Kubernetes' limit, keeping the suffix (it carries the content hash)."""
    room = limit - len(suffix) - 1
    return f"{name[:room].rstrip('-')}-{suffix}"
