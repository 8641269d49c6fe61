"""Where a model's pods may run: the usual Kubernetes placement knobs, typed."""

from typing import Annotated, Any, Literal

from pydantic import Field

from moorage.api.base import ApiModel


class Toleration(ApiModel):
    """A Kubernetes toleration (core/v1 Toleration)."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class Scheduling(ApiModel):
    """Placement of the model's pods. Empty means any node that has the GPUs."""

    node_selector: dict[str, str] | None = None
    """Node labels the pods require, e.g. {nvidia.com/gpu.product: NVIDIA-L4}."""
    tolerations: list[Toleration] | None = None
    """Added to the toleration of the GPU taint that moorage always sets."""
    affinity: Annotated[
        dict[str, Any] | None, Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    ] = None
    """A core/v1 Affinity, passed through as written."""
    runtime_class_name: str | None = None
    """E.g. nvidia, where the cluster runs GPU pods under a dedicated runtime class."""
    priority_class_name: str | None = None
