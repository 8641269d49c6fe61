"""Autoscaling on vLLM's own load: a KEDA ScaledObject with a Prometheus trigger over the model's pods.

Who owns replicas: while the ScaledObject exists, KEDA's HPA does. The operator's Deployment then carries no
`replicas` (server-side apply leaves the field to its other owner), so it never fights the scaler and
drift detection never sees the scaler's count. Without KEDA (its API not served) the operator keeps the
Deployment at serving.replicas within minReplicas and maxReplicas, and the Autoscaling condition says why.
"""

from dataclasses import dataclass
from typing import Any

from moorage.api.model import OpenSourceModel
from moorage.plan.config import PlanConfig
from moorage.plan.meta import Manifest, child, labels
from moorage.plan.observed import Observed
from moorage.plan.serving import replicas, served_model_name

KEDA_API_VERSION = "keda.sh/v1alpha1"
SCALED_OBJECTS = "scaledobjects"
KEDA_CRD = f"{SCALED_OBJECTS}.keda.sh"
POLLING_INTERVAL_SECONDS = 15
"""How often KEDA asks Prometheus; vLLM's pods are scraped every 15s by the chart's PodMonitor."""


def active(model: OpenSourceModel, observed: Observed) -> bool:
    """The scaler owns the replicas: autoscaling is asked for and KEDA is there to do it."""
    scaler = observed.autoscaler
    return model.spec.serving.autoscaling is not None and scaler is not None and scaler.installed


def query(model: OpenSourceModel, metric: str) -> str:
    """The model's load, summed over its replicas: KEDA's AverageValue divides it by the replica count.

    vLLM labels its metrics with the served model name; the namespace label comes from the scrape (the
    chart's PodMonitor, or the usual `prometheus.io/scrape` job), so two models of one name in two
    namespaces never mix.
    """
    selector = f'namespace="{model.metadata.namespace}",model_name="{served_model_name(model)}"'
    return f"sum({metric}{{{selector}}})"


ACTIVITY_TRIGGER = "in-use"
HELD_TRIGGER = "held"
OUT_OF_REACH = "1000000"
"""The per-replica target of the two triggers of a model that scales to zero: never reached, so they never
add replicas (the load trigger does); they only say whether the model is in use (their activation)."""


def activity_query(model: OpenSourceModel) -> str:
    """Is the model in use? Requests vLLM runs or queues, and requests finished in the last two minutes.
    Each term is 0 where its series is absent (no pod)."""
    vllm = f'namespace="{model.metadata.namespace}",model_name="{served_model_name(model)}"'
    terms = [
        f"sum(vllm:num_requests_running{{{vllm}}})",
        f"sum(vllm:num_requests_waiting{{{vllm}}})",
        f"sum(rate(vllm:request_success_total{{{vllm}}}[2m]))",
    ]
    return " + ".join(f"({term} or vector(0))" for term in terms)


def _to_zero_triggers(model: OpenSourceModel, config: PlanConfig) -> list[dict[str, Any]]:
    """With minReplicas 0, KEDA itself scales between 0 and 1, on whether any trigger is active. The load
    trigger alone (requests waiting) is inactive for a model that serves without a queue: `in-use` keeps
    such a model up, and lets it go to zero only after cooldownPeriod without a request. `held` asks the
    activator directly (KEDA's metrics-api trigger, no scrape in between) how many requests it holds for
    the model: the model it woke stays up, and KEDA wakes it too at its next poll."""
    triggers: list[dict[str, Any]] = [
        {
            "type": "prometheus",
            "name": ACTIVITY_TRIGGER,
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": config.prometheus_address,
                "query": activity_query(model),
                "threshold": OUT_OF_REACH,
                "activationThreshold": "0",
            },
        }
    ]
    url = config.held_url(model.metadata.namespace, model.metadata.name)
    if url is not None:
        triggers.append(
            {
                "type": "metrics-api",
                "name": HELD_TRIGGER,
                "metricType": "AverageValue",
                "metadata": {
                    "url": url,
                    "format": "json",
                    "valueLocation": "held",
                    "targetValue": OUT_OF_REACH,
                    "activationTargetValue": "0",
                },
            }
        )
    return triggers


def _threshold(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def scaled_object(model: OpenSourceModel, config: PlanConfig) -> Manifest:
    scaling = model.spec.serving.autoscaling
    assert scaling is not None
    metric, per_replica = scaling.target.metric()
    trigger_name = metric.removeprefix("vllm:").replace("_", "-")
    body: dict[str, Any] = {
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": model.metadata.name},
            "minReplicaCount": scaling.min_count(),
            "maxReplicaCount": scaling.max_replicas,
            "pollingInterval": POLLING_INTERVAL_SECONDS,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleUp": {"stabilizationWindowSeconds": scaling.up_window()},
                        "scaleDown": {"stabilizationWindowSeconds": scaling.down_window()},
                    }
                }
            },
            "triggers": [
                {
                    "type": "prometheus",
                    "name": trigger_name,
                    "metricType": "AverageValue",
                    "metadata": {
                        "serverAddress": config.prometheus_address,
                        "query": query(model, metric),
                        "threshold": _threshold(per_replica),
                    },
                }
            ],
        }
    }
    if scaling.to_zero:
        body["spec"]["cooldownPeriod"] = scaling.down_window()
        body["spec"]["triggers"] += _to_zero_triggers(model, config)
    return child(
        model,
        api_version=KEDA_API_VERSION,
        kind="ScaledObject",
        name=model.metadata.name,
        labels_=labels(model, "serving"),
        body=body,
    )


@dataclass(frozen=True)
class Verdict:
    status: bool
    reason: str
    message: str


def verdict(model: OpenSourceModel, observed: Observed) -> Verdict | None:
    """The Autoscaling condition: only for models that ask for it. Never a reason not to serve."""
    scaling = model.spec.serving.autoscaling
    if scaling is None:
        return None
    scaler = observed.autoscaler
    if scaler is None or not scaler.installed:
        return Verdict(
            False,
            "KedaNotInstalled",
            f"spec.serving.autoscaling: KEDA's ScaledObject API ({KEDA_API_VERSION}) is not served by this "
            f"cluster; install KEDA to scale on load. Until then the model keeps {replicas(model)} "
            "replica(s) (serving.replicas, within minReplicas and maxReplicas)",
        )
    metric, per_replica = scaling.target.metric()
    between = f"{scaling.min_count()} to {scaling.max_replicas} replicas on {metric}"
    if scaler.ready is False:
        return Verdict(False, "ScalerNotReady", f"ScaledObject {model.metadata.name}: {scaler.message}")
    if scaler.ready is None:
        return Verdict(False, "ScalerPending", f"waiting for KEDA to take ScaledObject {model.metadata.name}")
    return Verdict(True, "Scaling", f"KEDA scales {between} (target {_threshold(per_replica)} per replica)")
