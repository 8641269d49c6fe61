"""The serving side of a model: vLLM pods in a Deployment, behind a Service."""

import math
from dataclasses import dataclass
from typing import Any

from moorage.api.activation import COLD_START
from moorage.api.layout import WEIGHTS_MOUNT, content_hash
from moorage.api.model import OpenSourceModel
from moorage.api.quantity import parse_quantity
from moorage.api.resources import default_requests, kv_cache_gib
from moorage.api.spec import Resources
from moorage.plan import activator, adapters
from moorage.plan.config import PlanConfig
from moorage.plan.meta import Manifest, child, labels, selector
from moorage.plan.placement import place
from moorage.plan.security import container_security_context, pod_security_context

PORT = 8000
TEMPLATE_HASH = "moorage.dev/template-hash"
TARGET_ANNOTATIONS = (
    "moorage.dev/revision",
    "moorage.dev/claim",
    "moorage.dev/weights-path",
    "moorage.dev/adapter",
    "moorage.dev/adapter-path",
    "moorage.dev/adapter-rank",
)
REPLICAS_OWNER = "moorage.dev/replicas-owner"
"""Annotation on a Deployment whose replicas the operator leaves to an autoscaler (value AUTOSCALER)."""
AUTOSCALER = "autoscaler"
WEIGHTS_BYTES = "moorage.dev/weights-bytes"
"""Annotation: the size of the served weights, which the pods' resource requests are sized from."""
STARTUP_PERIOD_SECONDS = 10
COLD_START_PERIOD_SECONDS = 2
"""The startup probe's period for a model that scales to zero: a request waits on this start, and a probe
every 10 s would add up to 10 s to it; vLLM's /health is cheap."""
DRAIN_SECONDS = 10
"""How long a replica being removed still serves before vLLM gets SIGTERM (preStop sleep)."""


@dataclass(frozen=True)
class Adapter:
    """A trained LoRA adapter to serve beside the base weights."""

    served_name: str
    path: str
    rank: int


@dataclass(frozen=True)
class ServingTarget:
    """What the pods serve: weights (and adapter) that are whole on the volume."""

    revision: str
    claim: str
    weights_path: str
    adapter: Adapter | None = None
    weights_bytes: int = 0
    """0 when unknown (an unresolved render): the requests are then the smallest."""

    def annotations(self) -> dict[str, str]:
        values = [self.revision, self.claim, self.weights_path]
        if self.adapter:
            values += [self.adapter.served_name, self.adapter.path, str(self.adapter.rank)]
        return dict(zip(TARGET_ANNOTATIONS, values, strict=False)) | {WEIGHTS_BYTES: str(self.weights_bytes)}

    @staticmethod
    def from_annotations(annotations: dict[str, str]) -> "ServingTarget | None":
        """What a running Deployment serves, read back from the annotations this module wrote."""
        try:
            revision, claim, path = (annotations[key] for key in TARGET_ANNOTATIONS[:3])
        except KeyError:
            return None
        adapter = None
        if TARGET_ANNOTATIONS[3] in annotations:
            name, adapter_path, rank = (annotations.get(key, "") for key in TARGET_ANNOTATIONS[3:])
            adapter = Adapter(name, adapter_path, int(rank or 0))
        size = annotations.get(WEIGHTS_BYTES, "0")
        return ServingTarget(revision, claim, path, adapter, int(size) if size.isdigit() else 0)


def served_model_name(model: OpenSourceModel) -> str:
    return model.spec.serving.vllm.served_model_name or model.metadata.name


def endpoint(model: OpenSourceModel, config: PlanConfig) -> str:
    return f"http://{model.metadata.name}.{model.metadata.namespace}.svc.{config.cluster_domain}:{PORT}/v1"


def vllm_args(model: OpenSourceModel, target: ServingTarget) -> list[str]:
    """The command line of `vllm serve`: typed flags first, the user's extraArgs last so they win."""
    serving, vllm = model.spec.serving, model.spec.serving.vllm
    args = [
        target.weights_path,
        "--served-model-name",
        served_model_name(model),
        "--port",
        str(PORT),
    ]
    if not serving.on_cpu:
        args += ["--tensor-parallel-size", str(serving.tensor_parallel_size())]
    optional = {
        "--max-model-len": vllm.max_model_len,
        "--dtype": vllm.dtype,
        "--quantization": vllm.quantization,
        "--gpu-memory-utilization": vllm.gpu_memory_utilization,
    }
    for flag, value in optional.items():
        if value is not None:
            args += [flag, str(value)]
    if model.spec.source.trust_remote_code:
        args.append("--trust-remote-code")
    if target.adapter or adapters.enabled(model):
        # Flags in the order earlier versions wrote them: an operator upgrade rolls no fine-tuned model.
        args.append("--enable-lora")
        ranks = [adapters.max_rank(model)] if adapters.enabled(model) else []
        if target.adapter:
            args += ["--lora-modules", f"{target.adapter.served_name}={target.adapter.path}"]
            ranks.append(target.adapter.rank)
        args += ["--max-lora-rank", str(_lora_rank_bucket(max(ranks)))]
    return args + list(vllm.extra_args or ())


def _lora_rank_bucket(rank: int) -> int:
    """vLLM accepts only these --max-lora-rank values; take the smallest that holds the adapter."""
    for bucket in (8, 16, 32, 64, 128, 256, 320, 512):
        if rank <= bucket:
            return bucket
    return rank


def _probe(path: str, period: int, failures: int, timeout: int = 5) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def _resources(model: OpenSourceModel, target: ServingTarget) -> dict[str, Any]:
    serving = model.spec.serving
    gpus = {} if serving.on_cpu else {serving.gpu_resource_name: str(serving.gpus)}
    asked = serving.resources or Resources()
    requests = {**gpus, **default_requests(serving, target.weights_bytes), **asked.wire()}
    limits = {**gpus} | ({"memory": asked.memory} if asked.memory else {})
    return {"requests": requests, "limits": limits}


def _env(model: OpenSourceModel, target: ServingTarget, requests: dict[str, str]) -> list[dict[str, str]]:
    env = {
        "HF_HUB_OFFLINE": "1",
        "HOME": "/home/vllm",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    if model.spec.serving.on_cpu:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib(target.weights_bytes))
        # vLLM pins its threads to cores it picks itself, the same ones in every pod of a node: two replicas
        # (a rollout's surge) would fight over one core. Kubernetes shares the cores; use as many threads
        # as CPUs requested.
        env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
        env["OMP_NUM_THREADS"] = str(max(1, math.ceil(parse_quantity(requests["cpu"]))))
    return [{"name": k, "value": v} for k, v in env.items()] + adapters.pod_env(model)


def _pod_spec(model: OpenSourceModel, target: ServingTarget, config: PlanConfig) -> dict[str, Any]:
    serving = model.spec.serving
    deadline = serving.rollout.deadline()
    startup = COLD_START_PERIOD_SECONDS if activator.scales_to_zero(model) else STARTUP_PERIOD_SECONDS
    resources = _resources(model, target)
    container = {
        "name": "vllm",
        "image": serving.image or (config.vllm_cpu_image if serving.on_cpu else config.vllm_image),
        "command": ["vllm", "serve"],
        "args": vllm_args(model, target),
        "env": _env(model, target, resources["requests"]),
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "resources": resources,
        # Loading big weights takes minutes: the startup probe allows the whole rollout deadline.
        "startupProbe": _probe("/health", startup, max(deadline // startup, 1)),
        "readinessProbe": _probe("/v1/models", 10, 3),
        "livenessProbe": _probe("/health", 15, 4, timeout=10),
        "securityContext": container_security_context(),
        # A crash leaves the end of vLLM's log in the pod's status, where the operator reads why.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        # A replica being replaced keeps answering until the Service has stopped sending it requests:
        # endpoints are removed in parallel with SIGTERM, and vLLM stops accepting at once.
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        "volumeMounts": [
            {"name": "weights", "mountPath": str(WEIGHTS_MOUNT), "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "home", "mountPath": "/home/vllm"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    spec: dict[str, Any] = {
        "containers": [container],
        "automountServiceAccountToken": False,
        # Service links would put VLLM_PORT-like variables in the environment, which vLLM misreads.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "securityContext": pod_security_context(),
        "volumes": [
            {"name": "weights", "persistentVolumeClaim": {"claimName": target.claim, "readOnly": True}},
            # NCCL and vLLM's workers exchange tensors through shared memory.
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{2 * max(serving.gpus, 1)}Gi"}},
            {"name": "home", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    return place(spec, serving.scheduling, None if serving.on_cpu else serving.gpu_resource_name)


def replicas(model: OpenSourceModel) -> int:
    """What the operator sets: the spec's; with autoscaling but no scaler to own them, the spec's within
    minReplicas and maxReplicas (turning autoscaling on never drops capacity while KEDA is missing)."""
    serving = model.spec.serving
    scaling = serving.autoscaling
    if scaling is None:
        return serving.replicas
    return min(max(serving.replicas, scaling.min_count()), scaling.max_replicas)


def deployment(
    model: OpenSourceModel, target: ServingTarget, config: PlanConfig, *, scaled: bool = False
) -> Manifest:
    """`scaled`: an autoscaler owns the replicas, so the manifest leaves them out."""
    serving = model.spec.serving
    pod_labels = labels(model, "serving")
    body: dict[str, Any] = {
        "spec": {
            "replicas": replicas(model),
            "selector": {"matchLabels": selector(model)},
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": serving.rollout.deadline(),
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {
                    "maxSurge": serving.rollout.surge(),
                    "maxUnavailable": serving.rollout.unavailable(),
                },
            },
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(PORT),
                        "prometheus.io/path": "/metrics",
                        **target.annotations(),
                    },
                },
                "spec": _pod_spec(model, target, config),
            },
        }
    }
    if scaled:
        del body["spec"]["replicas"]
    # The pods' hash apart from the whole object's: a new one means a rollout, the same one a scale. The
    # pods carry it too, so the operator tells a new revision's pods (and ReplicaSet) from the old ones'.
    template: dict[str, Any] = body["spec"]["template"]
    template_hash = content_hash(template, length=16)
    template["metadata"]["annotations"][TEMPLATE_HASH] = template_hash
    annotations = {**target.annotations(), TEMPLATE_HASH: template_hash}
    if scaled:
        annotations[REPLICAS_OWNER] = AUTOSCALER
    if (hold := activator.hold(model)) is not None:
        annotations[COLD_START] = hold.annotation()
    return child(
        model,
        api_version="apps/v1",
        kind="Deployment",
        name=model.metadata.name,
        labels_=pod_labels,
        body=body,
        annotations=annotations,
    )


def service(model: OpenSourceModel) -> Manifest:
    body = {
        "spec": {
            "type": "ClusterIP",
            "selector": selector(model),
            "ports": [
                {"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}
            ],
        }
    }
    return child(
        model,
        api_version="v1",
        kind="Service",
        name=model.metadata.name,
        labels_=labels(model, "serving"),
        body=body,
    )


def disruption_budget(model: OpenSourceModel) -> Manifest | None:
    """With two replicas or more, a node drain takes them one at a time; with one, nothing is promised
    (a budget would block the drain forever)."""
    scaling = model.spec.serving.autoscaling
    if (model.spec.serving.replicas if scaling is None else scaling.max_replicas) < 2:
        return None
    body = {
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(model)},
            # A replica that is not serving anyway must not hold up a drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        }
    }
    return child(
        model,
        api_version="policy/v1",
        kind="PodDisruptionBudget",
        name=model.metadata.name,
        labels_=labels(model, "serving"),
        body=body,
    )
