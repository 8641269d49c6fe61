"""The fake (kwok) nodes of the dev cluster: GPU nodes and, without a real node, one CPU node."""

from __future__ import annotations

from dataclasses import dataclass

from moorage.devcluster.api import JSON

GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT: JSON = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
GPU_MEMORY_MIB = "81559"
GPU_INSTANCE_TYPE = "p5.48xlarge"
CPU_INSTANCE_TYPE = "m7i.8xlarge"

#: kwok manages only the nodes carrying this annotation (value ``fake``), so a
#: real kubelet's node next to them is left alone.
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"


@dataclass(frozen=True)
class NodeSpec:
    """A fake node the launcher creates."""

    name: str
    labels: dict[str, str]
    capacity: dict[str, str]
    taints: tuple[JSON, ...]
    internal_ip: str


def gpu_node_specs(count: int, gpus_per_node: int) -> list[NodeSpec]:
    """The fake GPU nodes (tainted ``nvidia.com/gpu=present:NoSchedule``)."""
    specs = []
    for i in range(count):
        name = f"gpu-node-{i}"
        specs.append(
            NodeSpec(
                name=name,
                labels={
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node.kubernetes.io/instance-type": GPU_INSTANCE_TYPE,
                    "nvidia.com/gpu.present": "true",
                    "nvidia.com/gpu.product": GPU_PRODUCT,
                    "nvidia.com/gpu.memory": GPU_MEMORY_MIB,
                    "nvidia.com/gpu.count": str(gpus_per_node),
                    "type": "kwok",
                },
                capacity={
                    "cpu": "64",
                    "memory": "512Gi",
                    "pods": "110",
                    "ephemeral-storage": "2Ti",
                    GPU_RESOURCE: str(gpus_per_node),
                },
                taints=(GPU_TAINT,),
                internal_ip=f"10.1.0.{10 + i}",
            )
        )
    return specs


def cpu_node_spec() -> NodeSpec:
    """The single untainted CPU-only node."""
    name = "cpu-node-0"
    return NodeSpec(
        name=name,
        labels={
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": CPU_INSTANCE_TYPE,
            "type": "kwok",
        },
        capacity={"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "1Ti"},
        taints=(),
        internal_ip="10.1.0.2",
    )


def node_object(spec: NodeSpec, kubelet_version: str) -> JSON:
    """The Node object of a fake node, annotated so that kwok (and only kwok) manages it."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec.name,
            "labels": spec.labels,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": list(spec.taints)} if spec.taints else {},
        "status": {
            "capacity": spec.capacity,
            "allocatable": spec.capacity,
            "addresses": [
                {"type": "InternalIP", "address": spec.internal_ip},
                {"type": "Hostname", "address": spec.name},
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "kwok",
                "kernelVersion": "kwok",
                "kubeletVersion": kubelet_version,
                "kubeProxyVersion": kubelet_version,
                "containerRuntimeVersion": "kwok://devcluster",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }
