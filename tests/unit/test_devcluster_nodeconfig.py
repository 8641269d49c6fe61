"""The real node's configuration files say what the machine needs (see ../shared/notes/real-node.md)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from moorage.devcluster import hostnet, nodeconfig
from moorage.devcluster.images import PAUSE_IMAGE


def test_containerd_keeps_to_its_own_paths_and_runs_sandboxes_without_cap_sys_resource(
    tmp_path: Path,
) -> None:
    config = tomllib.loads(
        nodeconfig.containerd(
            image_store=tmp_path / "store",
            state=tmp_path / "state",
            opt=tmp_path / "opt",
            socket=tmp_path / "containerd.sock",
            cni_conf_dir=tmp_path / "net.d",
        )
    )
    assert config["version"] == 3
    assert config["root"] == str(tmp_path / "store")
    assert config["state"] == str(tmp_path / "state")
    assert config["grpc"]["address"] == str(tmp_path / "containerd.sock")
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["netns_mounts_under_state_dir"] is True
    runc = runtime["containerd"]["runtimes"]["runc"]["options"]
    assert runc["SystemdCgroup"] is False
    assert runc["Root"].startswith(str(tmp_path / "state"))
    assert runtime["cni"]["conf_dir"] == str(tmp_path / "net.d")
    assert config["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == PAUSE_IMAGE
    assert config["plugins"]["io.containerd.internal.v1.opt"]["path"] == str(tmp_path / "opt")


def test_the_kubelet_authenticates_callers_and_never_evicts(tmp_path: Path) -> None:
    config = nodeconfig.kubelet(
        address=hostnet.HOST_ADDRESS,
        socket=tmp_path / "c.sock",
        ca=tmp_path / "ca.crt",
        resolv_conf=tmp_path / "resolv.conf",
        pod_logs=tmp_path / "pod-logs",
    )
    assert config["authentication"]["anonymous"] == {"enabled": False}
    assert config["authentication"]["x509"]["clientCAFile"] == str(tmp_path / "ca.crt")
    assert config["authorization"]["mode"] == "Webhook"
    assert config["readOnlyPort"] == 0
    assert (config["cgroupDriver"], config["failCgroupV1"], config["failSwapOn"]) == (
        "cgroupfs",
        False,
        False,
    )
    assert config["evictionHard"] == {}
    assert config["clusterDNS"] == [hostnet.DNS_SERVICE_IP]
    assert config["podLogsDir"] == str(tmp_path / "pod-logs")


def test_kube_proxy_opens_node_ports_only_on_the_host_address(tmp_path: Path) -> None:
    config = nodeconfig.kube_proxy(node_name="n", kubeconfig=tmp_path / "k", address=hostnet.HOST_ADDRESS)
    assert config["mode"] == "iptables"
    assert config["nodePortAddresses"] == [f"{hostnet.HOST_ADDRESS}/32"]
    assert config["conntrack"]["maxPerCore"] == 0


def test_cluster_dns_answers_on_the_host_address_and_forwards_nothing(tmp_path: Path) -> None:
    corefile = nodeconfig.corefile(address=hostnet.HOST_ADDRESS, ready_port=8181, kubeconfig=tmp_path / "k")
    assert f"bind {hostnet.HOST_ADDRESS}" in corefile
    assert "forward" not in corefile
    (_, service), (_, endpoints) = nodeconfig.dns_objects(hostnet.HOST_ADDRESS)
    assert service["spec"]["clusterIP"] == hostnet.DNS_SERVICE_IP
    assert "selector" not in service["spec"]
    assert endpoints["endpoints"][0]["addresses"] == [hostnet.HOST_ADDRESS]
    assert endpoints["metadata"]["labels"]["kubernetes.io/service-name"] == "kube-dns"
