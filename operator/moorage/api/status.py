"""status of an OpenSourceModel: what is true now, kstatus-style, so kubectl wait and Argo CD read it."""

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from moorage.api.base import ApiModel

REVISION_HISTORY = 5
"""Revisions kept in status.revisionHistory."""


class ConditionType(StrEnum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    WEIGHTS_READY = "WeightsReady"
    FINE_TUNED = "FineTuned"
    AVAILABLE = "Available"
    AUTOSCALING = "Autoscaling"
    GATEWAY_READY = "GatewayReady"


CONDITION_DOCS = {
    ConditionType.READY: (
        "The model serves its current spec: weights pulled, adapter trained (with fineTune), every replica "
        "updated and ready. `kubectl wait --for=condition=Ready` waits for this."
    ),
    ConditionType.RECONCILING: (
        "The operator is working towards the spec: resolving, pulling, training or rolling out. The reason "
        "says which; the message says how far."
    ),
    ConditionType.STALLED: (
        "Progress stopped and needs a person: a wrong source, no access, weights that do not fit the GPUs, a "
        "failed pull or training, a rollout past its deadline. The message names what to fix. Reason "
        "RolledBack: the rollout of the current spec failed and the last Ready revision was restored "
        "(status.failedRevision says why); it is not tried again until the spec changes."
    ),
    ConditionType.WEIGHTS_READY: (
        "The weights of status.resolvedRevision are whole and verified on the cache volume."
    ),
    ConditionType.FINE_TUNED: "Only with spec.fineTune: the adapter of the current fineTune spec is trained.",
    ConditionType.AVAILABLE: (
        "At least one replica answers; during a rollout it may still serve the previous spec."
    ),
    ConditionType.AUTOSCALING: (
        "Only with spec.serving.autoscaling: KEDA scales the replicas. False with KedaNotInstalled when the "
        "cluster has no KEDA (the model keeps serving.replicas within minReplicas and maxReplicas), or when "
        "KEDA cannot read the metric."
    ),
    ConditionType.GATEWAY_READY: (
        "Only with spec.gateway: the InferencePool (and the HTTPRoute of spec.gateway.route) exist as the "
        "spec says. False with reason InferencePoolCRDNotInstalled or HTTPRouteCRDNotInstalled where the "
        "cluster lacks that CRD; serving goes on through the model's Service either way."
    ),
}


class Condition(ApiModel):
    """A metav1.Condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: Annotated[str, Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)]
    message: Annotated[str, Field(max_length=32768)] = ""
    observed_generation: int | None = None
    last_transition_time: str
    """RFC 3339, when status last changed (not reason or message)."""


class WeightsStatus(ApiModel):
    """The weights on the cache volume."""

    files: int | None = None
    bytes: int | None = None
    claim: str | None = None
    """The PersistentVolumeClaim that holds them, shared by every model on the same weights."""
    path: str | None = None
    """Where the snapshot lies on that claim."""
    progress: str | None = None
    """While the pull runs: bytes done of the total, and the rate (from the pull's log)."""
    source_hash: str | None = None
    """Which spec.source (uri, revision, include) these weights were resolved for: while the hub cannot be
    reached, a model whose source is unchanged keeps serving the commit pinned here."""


class FineTuneStatus(ApiModel):
    """The adapter trained for the current spec.fineTune."""

    adapter: str | None = None
    """Content-addressed id of the adapter: the same base, data and settings give the same id."""
    path: str | None = None
    served_model_name: str | None = None
    """Put this in the OpenAI request's `model` to get the fine-tuned model."""
    dataset_revision: str | None = None
    """The commit of an hf:// dataset the adapter was trained on."""
    steps: int | None = None
    final_loss: float | None = None
    duration_seconds: float | None = None


class AdapterStatus(ApiModel):
    """One adapter of spec.adapters (or one just removed from it), or the adapter spec.fineTune trained."""

    name: str
    """The model name it answers to."""
    uri: str
    """As spec.adapters has it; for the fine-tuned adapter, where it lies on the weights volume
    (pvc://<weights claim>/adapters/<id>)."""
    revision: str | None = None
    """The commit an hf:// adapter was pinned to."""
    digest: str | None = None
    """In place of a commit, the content's address: for a pvc:// adapter the sha256 over its files (the same
    bytes, the same digest; changed bytes, a new one), for the fine-tuned adapter its id (status.fineTune
    .adapter)."""
    fine_tune: bool | None = None
    """true for the adapter spec.fineTune trained: served with the base from the pods' command line."""
    state: Literal["Pulling", "Training", "Deploying", "Served", "Removing", "Failed"]
    """Served: on the volume, and loaded by each replica on its first request for it (the fine-tuned one: at
    start). Removing: taken out of spec.adapters, being unloaded from the replicas that loaded it.
    Training and Deploying: the fine-tuned adapter is being trained, or the pods rolled out to serve it."""
    message: str | None = None


class RevisionState(StrEnum):
    ROLLING_OUT = "RollingOut"
    READY = "Ready"
    ROLLED_BACK = "RolledBack"
    SUPERSEDED = "Superseded"


class Revision(ApiModel):
    """One version of what the serving pods run: a pod template, with the weights and adapter it serves."""

    template_hash: str
    """The hash of the serving pods' template (annotation moorage.dev/template-hash on the Deployment and
    its pods): a new one is a new revision, and a rollout."""
    commit: str | None = None
    """The commit sha of the weights."""
    adapter: str | None = None
    """The id of the LoRA adapter served beside the weights, with spec.fineTune."""
    image: str | None = None
    """The vLLM image."""
    since: str | None = None
    """RFC 3339, when the Deployment last changed to this revision."""
    state: RevisionState | None = None
    """RollingOut (not Ready yet), Ready (all its replicas were ready at least once), RolledBack (its
    rollout failed and was undone) or Superseded (replaced by a newer spec before it was Ready)."""
    reason: str | None = None
    """RolledBack: why its rollout failed (CrashLoopBackOff, ProgressDeadlineExceeded)."""
    message: str | None = None
    """RolledBack: what the failing pod said."""


class OpenSourceModelStatus(ApiModel):
    """What the operator observed. Written only by the operator."""

    observed_generation: int | None = None
    conditions: tuple[Condition, ...] = ()
    resolved_revision: str | None = None
    """The commit sha the spec's source revision resolved to: what is (or is about to be) served."""
    serving_revision: str | None = None
    """The commit sha the serving pods run now. Differs from resolvedRevision while new weights are
    pulled or a rollout is under way."""
    weights: WeightsStatus | None = None
    fine_tune: FineTuneStatus | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    updated_replicas: int | None = None
    selector: str | None = None
    """Label selector of the serving pods, for the scale subresource (and so for HPA)."""
    endpoint: str | None = None
    """Base URL of the OpenAI-compatible API inside the cluster."""
    served_model_name: str | None = None
    adapters: tuple[AdapterStatus, ...] | None = None
    """spec.adapters as served, with the commit of each."""
    revision: Revision | None = None
    """The revision the serving Deployment runs now."""
    last_ready_revision: Revision | None = None
    """The newest revision whose replicas were all ready: what a failed rollout is rolled back to."""
    failed_revision: Revision | None = None
    """The revision of the current spec whose rollout failed and was rolled back. It is not tried again
    until the spec asks for a different revision; then this goes."""
    revision_history: Annotated[tuple[Revision, ...], Field(max_length=REVISION_HISTORY)] = ()
    """The last revisions, newest first, with their state."""

    def condition(self, type_: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)
