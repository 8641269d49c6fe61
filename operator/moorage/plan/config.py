"""What the operator was started with that shapes every plan: images, hub endpoint, GPU profile."""

from dataclasses import dataclass

DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.23.0"
DEFAULT_OPERATOR_IMAGE = "ghcr.io/moorage-dev/moorage:0.1.0"
DEFAULT_FINETUNE_IMAGE = "ghcr.io/moorage-dev/moorage-finetune:0.1.0"


@dataclass(frozen=True)
class PlanConfig:
    vllm_image: str = DEFAULT_VLLM_IMAGE
    operator_image: str = DEFAULT_OPERATOR_IMAGE
    """Runs `moorage pull` in the weights Job."""
    finetune_image: str = DEFAULT_FINETUNE_IMAGE
    hf_endpoint: str | None = None
    """Passed to the pull Job as HF_ENDPOINT, for a hub mirror; None means the public hub."""
    default_gpu_profile: str = "nvidia-h100-80gb"
    cluster_domain: str = "cluster.local"
