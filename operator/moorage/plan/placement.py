"""Where a GPU pod may run: the GPU taint tolerated, then the user's scheduling knobs."""

from typing import Any

from moorage.api.scheduling import Scheduling


def place(
    pod_spec: dict[str, Any], scheduling: Scheduling | None, gpu_resource_name: str | None
) -> dict[str, Any]:
    """pod_spec with tolerations, node selector, affinity and classes set; the input is not changed.
    gpu_resource_name is None for a pod that takes no GPU: it stays off the GPU nodes."""
    placed = dict(pod_spec)
    # GPU nodes carry a NoSchedule taint named after their resource; pods that asked for GPUs tolerate it.
    tolerations: list[dict[str, Any]] = []
    if gpu_resource_name:
        tolerations.append({"key": gpu_resource_name, "operator": "Exists", "effect": "NoSchedule"})
    if scheduling:
        tolerations += [t.wire() for t in scheduling.tolerations or ()]
        optional = {
            "nodeSelector": scheduling.node_selector,
            "affinity": scheduling.affinity,
            "runtimeClassName": scheduling.runtime_class_name,
            "priorityClassName": scheduling.priority_class_name,
        }
        placed.update({key: value for key, value in optional.items() if value})
    if tolerations:
        placed["tolerations"] = tolerations
    return placed
