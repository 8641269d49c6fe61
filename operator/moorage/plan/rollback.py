"""Automatic rollback: a rollout whose new pods fail goes back to the last revision that was Ready.

Pure, like the rest of the plan. The revision to restore is the pod template of its ReplicaSet, which
the Deployment controller keeps (revisionHistoryLimit): written back into the Deployment, it is the
template as it was, byte for byte, so the controller scales that ReplicaSet up again instead of making a
new one (what `kubectl rollout undo` does). Rebuilding it from the spec instead would need the old spec
and the operator settings of then, and could differ from what ran.
"""

import copy
from dataclasses import dataclass

from moorage.api.model import OpenSourceModel
from moorage.api.status import Revision
from moorage.plan.meta import SPEC_HASH, Manifest, stamp
from moorage.plan.observed import Observed, Problem
from moorage.plan.revisions import revision_of
from moorage.plan.serving import TARGET_ANNOTATIONS, TEMPLATE_HASH, WEIGHTS_BYTES

ROLLED_BACK = "RolledBack"
POD_TEMPLATE_HASH = "pod-template-hash"
"""The label the Deployment controller adds to a ReplicaSet's template: not part of the Deployment's."""
REVISION_ANNOTATIONS = (*TARGET_ANNOTATIONS, WEIGHTS_BYTES, TEMPLATE_HASH)
"""The Deployment's annotations that say which revision it runs (the pods carry the same)."""


@dataclass(frozen=True)
class Rollback:
    """The current spec's revision failed: the Deployment runs the last Ready one instead."""

    failed: Revision
    """The revision given up, with why (reason, message); no since or state: status fills those in."""
    restored: Revision
    """status.lastReadyRevision, served again."""
    new: bool
    """Decided in this reconcile (else remembered in status.failedRevision)."""

    def message(self) -> str:
        commit = f", commit {self.restored.commit[:12]}" if self.restored.commit else ""
        return (
            f"rolled back to revision {self.restored.template_hash}{commit}: the rollout of revision "
            f"{self.failed.template_hash} failed ({self.failed.reason}): {self.failed.message}. "
            "It is not tried again until the spec changes."
        )


def template_hash(manifest: Manifest) -> str:
    return str(manifest["metadata"]["annotations"][TEMPLATE_HASH])


def failure(model: OpenSourceModel, observed: Observed, wanted: str) -> Problem | None:
    """Why the rollout of revision `wanted` failed, if the live Deployment runs it and it did: its pods
    crash-loop (sooner than the deadline), or the Deployment controller gave up on its deadline."""
    deployment = observed.deployment
    if deployment is None or deployment.annotations.get(TEMPLATE_HASH) != wanted:
        return None
    if observed.crash_loop is not None:
        return observed.crash_loop
    # The controller's verdict on this template, not on the one before it.
    if (
        deployment.progress_deadline_exceeded is not None
        and deployment.observed_generation >= deployment.generation
    ):
        return Problem(
            "ProgressDeadlineExceeded",
            f"the rollout made no progress for {model.spec.serving.rollout.deadline()}s "
            f"(spec.serving.rollout.progressDeadlineSeconds): {deployment.progress_deadline_exceeded}",
        )
    return None


def decide(model: OpenSourceModel, observed: Observed, wanted: Manifest) -> tuple[Manifest, Rollback | None]:
    """The Deployment to apply: the one the spec wants, or the last Ready revision's while the spec still
    wants a revision that failed."""
    status = model.status
    last_ready = status.last_ready_revision
    hash_ = template_hash(wanted)
    if not model.spec.serving.rollout.rolls_back() or last_ready is None or last_ready.template_hash == hash_:
        return wanted, None
    template = observed.templates.get(last_ready.template_hash)
    if template is None:
        return wanted, None  # its ReplicaSet is gone: nothing faithful to restore
    remembered = status.failed_revision
    if remembered is not None and remembered.template_hash == hash_:
        failed, new = remembered.model_copy(update={"since": None, "state": None}), False
    else:
        problem = failure(model, observed, hash_)
        if problem is None:
            return wanted, None
        failed = revision_of(wanted).model_copy(update={"reason": problem.reason, "message": problem.message})
        new = True
    return restore(wanted, template), Rollback(failed, last_ready, new)


def restore(wanted: Manifest, template: Manifest) -> Manifest:
    """The Deployment the spec wants, running an earlier pod template (from its ReplicaSet)."""
    template = copy.deepcopy(template)
    metadata = template.setdefault("metadata", {})
    metadata.pop("creationTimestamp", None)
    (metadata.get("labels") or {}).pop(POD_TEMPLATE_HASH, None)
    pods = metadata.get("annotations") or {}
    annotations = {
        k: v
        for k, v in wanted["metadata"]["annotations"].items()
        if k not in (*REVISION_ANNOTATIONS, SPEC_HASH)
    }
    annotations |= {k: v for k, v in pods.items() if k in REVISION_ANNOTATIONS}
    manifest = {
        **wanted,
        "metadata": {**wanted["metadata"], "annotations": annotations},
        "spec": {**wanted["spec"], "template": template},
    }
    return stamp(manifest)
