"""The whole plan of one model: which children should exist now, in what form.

Order comes from facts, not from sleeps: the serving Deployment appears only once the weights (and the
adapter) it would serve are whole; until new ones are, it keeps serving what it served.
"""

from dataclasses import dataclass, field

from moorage.api.model import OpenSourceModel
from moorage.plan import (
    activator,
    adapters,
    autoscaling,
    finetune,
    gateway,
    resolve,
    rollback,
    serving,
    weights,
)
from moorage.plan.config import PlanConfig
from moorage.plan.meta import Manifest
from moorage.plan.observed import Observed
from moorage.plan.rollback import Rollback
from moorage.plan.serving import ServingTarget


@dataclass(frozen=True)
class Plan:
    children: list[Manifest] = field(default_factory=list)
    """What should exist, in the order to apply it."""
    desired: ServingTarget | None = None
    """What the current spec wants served, once its weights are known."""
    target: ServingTarget | None = None
    """What the Deployment serves after this reconcile (the desired target, or the previous one while
    the desired weights are still being pulled or trained, or the last Ready one after a rollback)."""
    rollback: Rollback | None = None
    """The spec's revision failed: the Deployment runs the last Ready revision instead."""

    def names(self, kind: str) -> set[str]:
        return {c["metadata"]["name"] for c in self.children if c["kind"] == kind}


def desired_target(model: OpenSourceModel, observed: Observed) -> ServingTarget | None:
    resolved = observed.resolved
    if resolved is None:
        return None
    adapter = finetune.adapter(model, resolved, observed.dataset) if model.spec.fine_tune else None
    return ServingTarget(
        resolved.sha,
        weights.claim_name(model, resolved),
        weights.snapshot_path(resolved),
        adapter,
        resolved.total_bytes,
    )


def _ready(model: OpenSourceModel, observed: Observed) -> bool:
    """The desired target's weights, and adapter, are whole on the volume."""
    pulled = observed.pull is not None and observed.pull.succeeded
    if adapters.enabled(model) and not (observed.adapters_job and observed.adapters_job.succeeded):
        return False  # the served-adapters directory must exist before vLLM starts with the resolver
    if model.spec.fine_tune:
        return pulled and observed.finetune is not None and observed.finetune.succeeded
    return pulled


def plan(model: OpenSourceModel, observed: Observed, config: PlanConfig) -> Plan:
    children: list[Manifest] = [serving.service(model)]
    if resolve.needs_job(model):
        children.append(resolve.resolve_job(model, config))
    desired = desired_target(model, observed)
    resolved = observed.resolved
    if resolved is not None and observed.problem is None:
        children.append(weights.weights_claim(model, resolved))
        if not (observed.pull and observed.pull.on_volume):
            children.append(weights.pull_job(model, resolved, config))
        if model.spec.fine_tune and observed.pull is not None and observed.pull.succeeded:
            children.append(finetune.finetune_job(model, resolved, observed.dataset, config))
        if adapters.enabled(model) and observed.pull is not None and observed.pull.succeeded:
            children.append(adapters.adapters_job(model, resolved, observed.adapters, config))
    current = ServingTarget.from_annotations(observed.deployment.annotations) if observed.deployment else None
    target = (
        desired if desired is not None and observed.problem is None and _ready(model, observed) else current
    )
    rolled_back = None
    if target is not None:
        scaled = autoscaling.active(model, observed)
        wanted = serving.deployment(model, target, config, scaled=scaled)
        deployment, rolled_back = rollback.decide(model, observed, wanted)
        if rolled_back is not None:
            target = ServingTarget.from_annotations(deployment["metadata"]["annotations"]) or target
        children.append(deployment)
        if activator.in_path(model, observed):
            children.append(activator.endpoint_slice(model, observed.activator))
        if scaled:
            children.append(autoscaling.scaled_object(model, config))
        budget = serving.disruption_budget(model)
        if budget is not None:
            children.append(budget)
    # Last, so that a gateway object the API server refuses never holds back serving.
    children += gateway.children(model, observed.gateway_apis)
    return Plan(children, desired, target, rolled_back)
