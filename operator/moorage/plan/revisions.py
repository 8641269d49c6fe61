"""Revisions: each change of what the serving pods run (image, arguments, weights commit, adapter), as
status records them: the current one, the last one that was Ready, the one rolled back, a short history.

Pure, and derived from the previous status and what was observed: an operator restart loses nothing,
and a reconcile that sees nothing new computes the same records (so writes nothing).
"""

from dataclasses import dataclass
from typing import Any

from moorage.api.status import REVISION_HISTORY, OpenSourceModelStatus, Revision, RevisionState
from moorage.plan.meta import Manifest
from moorage.plan.observed import DeploymentState
from moorage.plan.serving import TEMPLATE_HASH, ServingTarget

State = RevisionState


def revision(annotations: dict[str, str], image: str | None) -> Revision | None:
    """The revision a Deployment runs, from the annotations the plan wrote on it; None without them."""
    hash_ = annotations.get(TEMPLATE_HASH)
    if not hash_:
        return None
    target = ServingTarget.from_annotations(annotations)
    adapter = target.adapter.path.rsplit("/", 1)[-1] if target and target.adapter else None
    return Revision(
        template_hash=hash_, commit=target.revision if target else None, adapter=adapter, image=image
    )


def revision_of(deployment: Manifest) -> Revision:
    """The revision of a Deployment the plan built."""
    template: dict[str, Any] = deployment["spec"]["template"]
    found = revision(deployment["metadata"]["annotations"], template["spec"]["containers"][0].get("image"))
    assert found is not None, "the plan stamps every Deployment with its template hash"
    return found


def proven(deployment: DeploymentState | None) -> Revision | None:
    """The revision of a Deployment whose replicas are all updated and ready: one known to work."""
    if deployment is None or not deployment.rolled_out or deployment.ready_replicas == 0:
        return None
    return revision(deployment.annotations, deployment.image)


@dataclass(frozen=True)
class Revisions:
    current: Revision | None
    last_ready: Revision | None
    failed: Revision | None
    history: tuple[Revision, ...]


def revisions(
    previous: OpenSourceModelStatus,
    current: Revision | None,
    ready: Revision | None,
    failed: Revision | None,
    now: str,
) -> Revisions:
    """The records after a reconcile in which the Deployment runs `current`, `ready` was seen all ready,
    and `failed` (if any) is rolled back."""
    history = list(previous.revision_history)
    if current is not None and (not history or history[0].template_hash != current.template_hash):
        earlier = next((r for r in history if r.template_hash == current.template_hash), None)
        state = State.READY if earlier is not None and earlier.state == State.READY else State.ROLLING_OUT
        entry = current.model_copy(update={"since": now, "state": state})
        history = [entry, *(r for r in history if r.template_hash != current.template_hash)]
    if failed is not None and all(r.template_hash != failed.template_hash for r in history):
        history.insert(min(1, len(history)), failed.model_copy(update={"since": now}))

    def settle(index: int, entry: Revision) -> Revision:
        if ready is not None and entry.template_hash == ready.template_hash:
            return entry.model_copy(update={"state": State.READY, "reason": None, "message": None})
        if failed is not None and entry.template_hash == failed.template_hash:
            update = {"state": State.ROLLED_BACK, "reason": failed.reason, "message": failed.message}
            return entry.model_copy(update=update)
        if index > 0 and entry.state == State.ROLLING_OUT:
            return entry.model_copy(update={"state": State.SUPERSEDED})
        return entry

    history = [settle(i, r) for i, r in enumerate(history)][:REVISION_HISTORY]
    by_hash = {r.template_hash: r for r in history}
    last_ready = previous.last_ready_revision
    if ready is not None:
        # The record as first written (from the plan), so the same revision always reads the same.
        same = (
            last_ready if last_ready is not None and last_ready.template_hash == ready.template_hash else None
        )
        base = by_hash.get(ready.template_hash) or same or ready
        last_ready = base.model_copy(update={"since": base.since or now, "state": State.READY})
    if failed is not None:
        found = by_hash.get(failed.template_hash)
        failed = failed.model_copy(
            update={"since": found.since if found else now, "state": State.ROLLED_BACK}
        )
    return Revisions(
        current=history[0] if current is not None and history else None,
        last_ready=last_ready,
        failed=failed,
        history=tuple(history),
    )
