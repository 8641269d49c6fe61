"""The real node's configuration files: containerd, kubelet, kube-proxy, CoreDNS and the DNS Service.

Pure functions of paths and addresses; :mod:`moorage.devcluster.node` writes
them and starts the programs. Every path a program would otherwise take from
its defaults outside the node directory is set here, so that nothing but what
``nodeclean.HOST_PATHS`` lists is written elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from moorage.devcluster import hostnet
from moorage.devcluster.api import JSON
from moorage.devcluster.images import PAUSE_IMAGE

CLUSTER_DOMAIN = "cluster.local"
KUBELET_PORT = 10250
KUBE_PROXY_HEALTHZ = "127.0.0.1:10256"
_RUNTIME = "plugins.'io.containerd.cri.v1.runtime'"


def containerd(*, image_store: Path, state: Path, opt: Path, socket: Path, cni_conf_dir: Path) -> str:
    """containerd's config (version 3): its own root, state and socket; runc and the CNI bridge."""
    return f"""version = 3
root = "{image_store}"
state = "{state}"
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{socket}"

[plugins.'io.containerd.internal.v1.opt']
  path = "{opt}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{PAUSE_IMAGE}"

[{_RUNTIME}]
  # Without CAP_SYS_RESOURCE every sandbox fails ("can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  # Network namespaces are mounted under the state dir, not /run/netns.
  netns_mounts_under_state_dir = true
  enable_cdi = false
  [{_RUNTIME}.containerd]
    default_runtime_name = "runc"
    [{_RUNTIME}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{_RUNTIME}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
        Root = "{state / "runc"}"
  [{_RUNTIME}.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "{cni_conf_dir}"
"""


def kubelet(*, address: str, socket: Path, ca: Path, resolv_conf: Path, pod_logs: Path) -> JSON:
    """The KubeletConfiguration: cgroupfs on cgroup v1, webhook authn/authz, no eviction or image GC."""
    endpoint = f"unix://{socket}"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": address,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": endpoint,
        "imageServiceEndpoint": endpoint,
        "clusterDNS": [hostnet.DNS_SERVICE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(resolv_conf),
        "podLogsDir": str(pod_logs),
        # This is a test machine's disk, shared: never evict, never GC images we loaded.
        "evictionHard": {},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "protectKernelDefaults": False,
        "rotateCertificates": False,
        "serializeImagePulls": False,
    }


def kube_proxy(*, node_name: str, kubeconfig: Path, address: str) -> JSON:
    """kube-proxy in iptables mode for the node's pod range."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "hostnameOverride": node_name,
        "clusterCIDR": hostnet.NODE_POD_CIDR,
        "healthzBindAddress": KUBE_PROXY_HEALTHZ,
        "metricsBindAddress": "127.0.0.1:10249",
        # NodePorts only on the host address, never on the machine's own interfaces.
        "nodePortAddresses": [f"{address}/32"],
        # Leave the host's conntrack table sizes and timeouts alone.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }


def corefile(*, address: str, ready_port: int, kubeconfig: Path) -> str:
    """CoreDNS serving the cluster domain (and reverse lookups) on ``address``.

    Nothing is forwarded: other names fail at once, since nothing off this
    machine is for pods to reach.
    """
    return f"""{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {address}
    errors
    ready 127.0.0.1:{ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} devcluster
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    cache 30
}}
"""


def dns_objects(address: str) -> list[tuple[str, JSON]]:
    """(API path, object) of the ``kube-dns`` Service and, since CoreDNS is a host process and the
    Service has no selector, the EndpointSlice that points it at ``address``."""
    ports = [("dns", "UDP"), ("dns-tcp", "TCP")]
    service: JSON = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}},
        "spec": {
            "clusterIP": hostnet.DNS_SERVICE_IP,
            "ports": [{"name": n, "port": 53, "protocol": p, "targetPort": 53} for n, p in ports],
        },
    }
    endpoints: JSON = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kube-dns-host",
            "namespace": "kube-system",
            "labels": {
                "kubernetes.io/service-name": "kube-dns",
                "endpointslice.kubernetes.io/managed-by": "devcluster.moorage.dev",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"name": n, "port": 53, "protocol": p} for n, p in ports],
    }
    return [
        ("/api/v1/namespaces/kube-system/services", service),
        ("/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices", endpoints),
    ]
