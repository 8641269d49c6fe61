"""The dev cluster's real node: containers really run, with cluster DNS, Services and the API server.

The session-scoped ``real_cluster`` fixture (conftest.py) starts a Cluster with
a real node (containerd, kubelet, kube-proxy, CoreDNS) next to the kwok GPU
nodes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moorage.devcluster import Cluster, ClusterError, dump_diagnostics, wait_for
from moorage.devcluster.fakehub import TINY_MODEL, FakeHub, add_demo_repos
from moorage.devcluster.images import PROBE_IMAGE, containerd_images, write_scratch_image
from moorage.devcluster.node import NODE_KIND_LABEL
from moorage.devcluster.processes import free_port

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not sys.platform.startswith("linux") or os.geteuid() != 0,
        reason="the real node (containerd, kubelet, iptables) needs root on Linux",
    ),
]

NONROOT = 65532
TAGGED = "localhost/moorage/probe-tags"


@pytest.fixture(scope="module")
def probe_namespace(real_cluster: Cluster) -> Iterator[str]:
    """A namespace with the probe image loaded, a server pod behind Service ``web`` and a client pod."""
    node = real_cluster.node
    assert node is not None
    archive = node.probe_archive()
    first = real_cluster.load_image(archive)
    again = real_cluster.load_image(archive)
    print(f"\nprobe image import {first.seconds:.2f}s (skipped: {first.skipped}); again {again.seconds:.2f}s")
    assert again.skipped, "a second load of the same archive should be skipped by digest"

    name = f"real-{uuid.uuid4().hex[:6]}"
    real_cluster.kubectl("create", "namespace", name, check=True)
    wait_for(
        lambda: real_cluster.kubectl("get", "serviceaccount", "default", "-n", name).returncode == 0,
        what=f"default serviceaccount in {name}",
    )
    real_cluster.apply(
        _pod("server", ["serve"], labels={"app": "web"}),
        _pod("client", ["sleep"]),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
        namespace=name,
    )
    try:
        for pod in ("server", "client"):
            _wait_running(real_cluster, name, pod)
        yield name
    finally:
        real_cluster.kubectl("delete", "namespace", name, "--wait=false")


def _pod(
    name: str, args: list[str], *, labels: dict[str, str] | None = None, volume: str = ""
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "probe",
        "image": PROBE_IMAGE,
        "imagePullPolicy": "Never",
        "args": args,
        "ports": [{"containerPort": 8080}],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    spec: dict[str, Any] = {
        "nodeSelector": {NODE_KIND_LABEL: "cpu"},
        "securityContext": {
            "runAsUser": NONROOT,
            "runAsGroup": NONROOT,
            "fsGroup": NONROOT,
            "runAsNonRoot": True,
        },
        "terminationGracePeriodSeconds": 2,
        "containers": [container],
    }
    if volume:
        container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
        spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": volume}}]
        spec["restartPolicy"] = "Never"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }


def _wait_running(cluster: Cluster, namespace: str, pod: str, phase: str = "Running") -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = cluster.get_json("pod", pod, "-n", namespace)
        return obj if obj and obj.get("status", {}).get("phase") == phase else None

    try:
        found = wait_for(check, timeout=90, what=f"pod {namespace}/{pod} {phase}")
    except TimeoutError:
        pytest.fail(f"pod {namespace}/{pod} not {phase}:\n{dump_diagnostics(cluster)}")
    assert found is not None
    return found


def _exec(cluster: Cluster, namespace: str, *args: str) -> str:
    result = cluster.kubectl("exec", "-n", namespace, "client", "--", "/probe", *args, timeout=60)
    assert result.returncode == 0, f"probe {' '.join(args)}: {result.stderr}{result.stdout}"
    return result.stdout


def test_the_real_node_runs_beside_the_kwok_gpu_nodes(real_cluster: Cluster) -> None:
    node = real_cluster.node
    assert node is not None
    assert real_cluster.cpu_nodes == [node.name]
    nodes = {n["metadata"]["name"]: n for n in real_cluster.get_json("nodes")["items"]}
    real = nodes[node.name]
    assert real["metadata"]["labels"][NODE_KIND_LABEL] == "cpu"
    assert "node.kubernetes.io/instance-type" in real["metadata"]["labels"]
    assert not real["spec"].get("taints")
    # kwok manages only its annotated nodes: the real one reports a real runtime.
    assert "kwok.x-k8s.io/node" not in real["metadata"].get("annotations", {})
    assert real["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    for name in [node.name, *real_cluster.gpu_nodes]:
        ready = [c for c in nodes[name]["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", name


def test_a_pod_runs_on_the_real_node(real_cluster: Cluster, probe_namespace: str) -> None:
    assert real_cluster.node is not None
    pod = real_cluster.get_json("pod", "server", "-n", probe_namespace)
    assert pod["spec"]["nodeName"] == real_cluster.node.name
    assert pod["status"]["podIP"].startswith("10.245.0.")


def test_pods_reach_the_api_server_through_the_kubernetes_service(
    real_cluster: Cluster, probe_namespace: str
) -> None:
    addresses = _exec(real_cluster, probe_namespace, "resolve", "kubernetes.default.svc.cluster.local")
    assert addresses.split() == ["10.96.0.1"]
    body = _exec(
        real_cluster, probe_namespace, "get", "https://kubernetes.default.svc/version", "--service-account"
    )
    assert json.loads(body)["gitVersion"].startswith("v1.")


def test_pods_reach_a_service_by_its_dns_name(real_cluster: Cluster, probe_namespace: str) -> None:
    for host in (f"web.{probe_namespace}.svc.cluster.local", "web"):
        assert _exec(real_cluster, probe_namespace, "get", f"http://{host}/").strip() == "probe server"


def test_pods_reach_the_local_hub(real_cluster: Cluster, probe_namespace: str) -> None:
    with FakeHub(host=real_cluster.host_address) as hub:
        add_demo_repos(hub)
        info = json.loads(_exec(real_cluster, probe_namespace, "get", f"{hub.url}/api/models/{TINY_MODEL}"))
    assert info["id"] == TINY_MODEL


def test_kubectl_logs_exec_and_port_forward(real_cluster: Cluster, probe_namespace: str) -> None:
    logs = real_cluster.kubectl("logs", "-n", probe_namespace, "server")
    assert logs.returncode == 0, logs.stderr
    assert "probe serving on :8080" in logs.stdout
    assert _exec(real_cluster, probe_namespace, "echo", "hello", "node").strip() == "hello node"

    port = free_port()
    forward = subprocess.Popen(
        [
            os.environ.get("MOORAGE_KUBECTL") or shutil.which("kubectl") or "kubectl",
            "--kubeconfig",
            str(real_cluster.kubeconfig),
            "port-forward",
            "-n",
            probe_namespace,
            "pod/server",
            f"{port}:8080",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def answer() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                return str(resp.read().decode())

        def forwarded() -> str | None:
            try:
                return answer()
            except OSError:
                return None

        assert (wait_for(forwarded, timeout=30, what="port-forward") or "").strip() == "probe server"
    finally:
        forward.terminate()
        forward.wait(10)


def test_volumes_are_writable_by_the_nonroot_uid(real_cluster: Cluster, probe_namespace: str) -> None:
    real_cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}},
        },
        _pod("writer", ["write", "/data/hello", "written by 65532"], volume="data"),
        namespace=probe_namespace,
    )
    _wait_running(real_cluster, probe_namespace, "writer", phase="Succeeded")


def test_a_second_real_node_is_refused_while_one_runs(real_cluster: Cluster, tmp_path: Path) -> None:
    assert real_cluster.node is not None
    with pytest.raises(ClusterError, match="another real node runs on this machine"):
        Cluster.start(tmp_path, gpu_nodes=0, real_node=True)
    assert real_cluster.running()
    assert real_cluster.kubectl("get", "node", real_cluster.node.name).returncode == 0


def test_loading_a_new_tag_forgets_the_old_one(real_cluster: Cluster, tmp_path: Path) -> None:
    node = real_cluster.node
    assert node is not None
    probe = node.node_bin_dir / "probe"
    for tag in ("old", "new"):
        archive = write_scratch_image(
            tmp_path / f"{tag}.tar", f"{TAGGED}:{tag}", probe, entrypoint=["/probe"]
        )
        assert not real_cluster.load_image(archive).skipped
    names = containerd_images(node.ctr)
    assert f"{TAGGED}:new" in names
    assert f"{TAGGED}:old" not in names


@pytest.fixture
def neighbour() -> Iterator[str]:
    """A web server in a network namespace of its own, reached from the host over a veth pair:
    a stand-in for anything off this machine. Yields its URL."""
    suffix = uuid.uuid4().hex[:4]
    netns, host_if, peer_if = f"moorage-nb-{suffix}", f"mnb{suffix}0", f"mnb{suffix}1"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    ip("netns", "add", netns)
    server: subprocess.Popen[bytes] | None = None
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        ip("link", "set", peer_if, "netns", netns)
        ip("addr", "add", "10.246.0.1/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        for args in (("addr", "add", "10.246.0.2/30", "dev", peer_if), ("link", "set", peer_if, "up")):
            ip("netns", "exec", netns, "ip", *args)
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                netns,
                sys.executable,
                "-m",
                "http.server",
                "8099",
                "--bind",
                "10.246.0.2",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = "http://10.246.0.2:8099/"

        def up() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        wait_for(up, timeout=20, what="the neighbour's web server")
        yield url
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)


def test_pods_reach_nothing_beyond_this_machine(
    real_cluster: Cluster, probe_namespace: str, neighbour: str
) -> None:
    # The host reaches the neighbour (see the fixture); a pod is refused at once.
    result = real_cluster.kubectl("exec", "-n", probe_namespace, "client", "--", "/probe", "get", neighbour)
    assert result.returncode != 0
    assert "connection refused" in result.stderr + result.stdout
