"""Smoke tests proving the dev control plane behaves like a cluster with GPU nodes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from moorage.devcluster import GPU_RESOURCE, OUTCOME_ANNOTATION, Cluster, wait_for

pytestmark = pytest.mark.cluster

GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def _pod_spec(gpus: int = 0, **extra: Any) -> dict[str, Any]:
    resources = {"limits": {GPU_RESOURCE: str(gpus)}} if gpus else {"requests": {"cpu": "100m"}}
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": "registry.invalid/fake:1", "resources": resources}],
        **extra,
    }
    if gpus:
        spec["tolerations"] = [GPU_TOLERATION]
    return spec


def test_server_version(cluster: Cluster) -> None:
    result = cluster.kubectl("version", "-o", "json", check=True)
    server = json.loads(result.stdout)["serverVersion"]
    assert server["gitVersion"].startswith("v1.")
    assert server["gitVersion"] != "v0.0.0-master+$Format:%H$"
    assert int(server["major"]) == 1 and int(server["minor"].rstrip("+")) >= 30


def test_gpu_nodes(cluster: Cluster) -> None:
    nodes = {n["metadata"]["name"]: n for n in cluster.get_json("nodes")["items"]}
    gpu = [n for n in nodes.values() if GPU_RESOURCE in n["status"]["allocatable"]]
    assert len(gpu) == 2 == len(cluster.gpu_nodes)
    for node in gpu:
        assert node["status"]["allocatable"][GPU_RESOURCE] == "8"
        assert node["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
        assert {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"} in node["spec"]["taints"]
    cpu = nodes[cluster.cpu_nodes[0]]
    assert GPU_RESOURCE not in cpu["status"]["allocatable"]
    assert not cpu["spec"].get("taints")
    for node in nodes.values():
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"


def test_gpu_deployment_becomes_ready(cluster: Cluster, namespace: str) -> None:
    labels = {"app": "gpu"}
    cluster.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "gpu"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": _pod_spec(gpus=1)},
            },
        },
        namespace=namespace,
    )
    cluster.kubectl("rollout", "status", "deployment/gpu", "-n", namespace, "--timeout=60s", check=True)
    pods = cluster.get_json("pods", "-n", namespace, "-l", "app=gpu")["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"] in cluster.gpu_nodes
        assert pod["status"]["phase"] == "Running"
        assert pod["status"].get("podIP")

    # Deleted pods go away (and the ReplicaSet replaces them).
    victim = pods[0]["metadata"]["name"]
    cluster.kubectl("delete", "pod", victim, "-n", namespace, "--wait=false", check=True)
    wait_for(lambda: cluster.get_json("pod", victim, "-n", namespace) is None, what=f"pod {victim} gone")
    cluster.kubectl("rollout", "status", "deployment/gpu", "-n", namespace, "--timeout=60s", check=True)


def test_job_completes(cluster: Cluster, namespace: str) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "pull"},
        "spec": {"backoffLimit": 0, "template": {"spec": _pod_spec(restartPolicy="Never")}},
    }
    cluster.apply(job, namespace=namespace)
    cluster.kubectl(
        "wait", "--for=condition=Complete", "job/pull", "-n", namespace, "--timeout=60s", check=True
    )
    pods = cluster.get_json("pods", "-n", namespace, "-l", "job-name=pull")["items"]
    assert [p["status"]["phase"] for p in pods] == ["Succeeded"]
    assert pods[0]["spec"]["nodeName"] in cluster.cpu_nodes


def test_job_pod_can_be_made_to_fail(cluster: Cluster, namespace: str) -> None:
    template = {
        "metadata": {"annotations": {OUTCOME_ANNOTATION: "Failed"}},
        "spec": _pod_spec(restartPolicy="Never"),
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "doomed"},
        "spec": {"backoffLimit": 0, "template": template},
    }
    cluster.apply(job, namespace=namespace)
    cluster.kubectl(
        "wait", "--for=condition=Failed", "job/doomed", "-n", namespace, "--timeout=60s", check=True
    )


def test_pvc_binds_and_pv_is_cleaned_up(cluster: Cluster, namespace: str) -> None:
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "weights"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}},
    }
    cluster.apply(pvc, namespace=namespace)
    bound = wait_for(
        lambda: (
            (c := cluster.get_json("pvc", "weights", "-n", namespace))["status"].get("phase") == "Bound" and c
        ),
        what="PVC bound",
    )
    assert bound["spec"]["storageClassName"] == "standard"
    volume = bound["spec"]["volumeName"]
    pv = cluster.get_json("pv", volume)
    assert pv["spec"]["capacity"]["storage"] == "20Gi"
    cluster.kubectl("delete", "pvc", "weights", "-n", namespace, check=True)
    wait_for(lambda: cluster.get_json("pv", volume) is None, what=f"PV {volume} deleted")


def test_garbage_collector_deletes_dependents(cluster: Cluster, namespace: str) -> None:
    cluster.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}}, namespace=namespace
    )
    uid = cluster.get_json("configmap", "owner", "-n", namespace)["metadata"]["uid"]
    owner_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "dependent", "ownerReferences": [owner_ref]},
        },
        namespace=namespace,
    )
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace, check=True)
    wait_for(
        lambda: cluster.get_json("configmap", "dependent", "-n", namespace) is None,
        what="dependent garbage-collected",
    )


def test_too_many_gpus_is_unschedulable(cluster: Cluster, namespace: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "greedy"}, "spec": _pod_spec(gpus=9)}
    cluster.apply(pod, namespace=namespace)

    def unschedulable() -> bool:
        conditions = cluster.get_json("pod", "greedy", "-n", namespace)["status"].get("conditions", [])
        return any(c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable" for c in conditions)

    wait_for(unschedulable, what="PodScheduled=False/Unschedulable")
    assert cluster.get_json("pod", "greedy", "-n", namespace)["status"]["phase"] == "Pending"


def test_audit_log_records_writes(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "audited", "-n", namespace, check=True)

    def logged() -> bool:
        for line in cluster.audit_log.read_text().splitlines():
            event = json.loads(line)
            ref = event.get("objectRef", {})
            if (
                event["verb"] == "create"
                and ref.get("name") == "audited"
                and ref.get("namespace") == namespace
            ):
                assert event["level"] == "Metadata"
                return True
        return False

    wait_for(logged, timeout=10, what="audit event")
