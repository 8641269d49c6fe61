"""KEDA and Prometheus on a dev cluster with a real node, as host processes beside the control plane.

Built from their Go modules by tests/cluster/build-autoscaling.sh (:func:`build_autoscaling`):

- **Prometheus** scrapes the pods that ask for it (the usual ``prometheus.io/scrape`` annotations, which
  vLLM's pods carry) through Kubernetes service discovery over the API server, every 5 s, and labels each
  series with the pod's ``namespace`` and ``pod``. It listens on the host address, so both KEDA (here) and
  pods reach it at :attr:`Autoscaling.prometheus_url`: the operator's ``--prometheus-address``.
- **KEDA's operator** turns ScaledObjects into HPAs and answers its metrics server over mutual TLS.
- **KEDA's metrics API server** serves ``external.metrics.k8s.io`` through the API server's aggregation
  layer (the API server's front-proxy flags are set by :mod:`moorage.devcluster.cluster`): an APIService
  and a selector-less Service whose EndpointSlice points at the host process, reached like ``kube-dns``.
  The controller-manager's HPA controller asks it every 5 s.

KEDA authenticates as the cluster's admin: a dev cluster's convenience, not KEDA's RBAC. :meth:`stop` puts
the cluster back as it was: ScaledObjects deleted while KEDA can still release them, the APIService (a
dangling one would fail every client's discovery), KEDA's namespace and CRDs, then the processes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from moorage.devcluster import hostnet, pki
from moorage.devcluster.api import JSON, ApiError
from moorage.devcluster.build import build_autoscaling
from moorage.devcluster.cluster import Cluster, ClusterError, KubectlError
from moorage.devcluster.processes import free_port

NAMESPACE = "keda"
METRICS_SERVICE = "keda-metrics-apiserver"
API_SERVICE = "v1beta1.external.metrics.k8s.io"
SCRAPE_INTERVAL = "5s"


def prometheus_config(kubeconfig: Path) -> JSON:
    """One job: the pods annotated ``prometheus.io/scrape: "true"``, at their annotated port and path, with
    ``namespace`` and ``pod`` labels (what moorage's autoscaling query selects by)."""
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL},
        "scrape_configs": [
            {
                "job_name": "kubernetes-pods",
                "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(kubeconfig)}],
                "relabel_configs": [
                    {
                        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                        "regex": "true",
                        "action": "keep",
                    },
                    # A pod that is not running has no address to scrape.
                    {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Running", "action": "keep"},
                    {
                        "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
                        "regex": "(.+)",
                        "target_label": "__metrics_path__",
                    },
                    {
                        "source_labels": [
                            "__meta_kubernetes_pod_ip",
                            "__meta_kubernetes_pod_annotation_prometheus_io_port",
                        ],
                        "regex": r"(.+);(\d+)",
                        "replacement": "$1:$2",
                        "target_label": "__address__",
                    },
                    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                ],
            }
        ],
    }


def metrics_api_objects(address: str, port: int, ca_bundle: bytes) -> list[tuple[str, JSON]]:
    """(API path, object) of KEDA's metrics API behind the aggregation layer: the APIService, and the
    selector-less Service with the EndpointSlice that points it at ``address:port`` on this machine."""
    service: JSON = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": METRICS_SERVICE, "namespace": NAMESPACE},
        "spec": {"ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    }
    endpoints: JSON = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{METRICS_SERVICE}-host",
            "namespace": NAMESPACE,
            "labels": {
                "kubernetes.io/service-name": METRICS_SERVICE,
                "endpointslice.kubernetes.io/managed-by": "devcluster.moorage.dev",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }
    api_service: JSON = {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": API_SERVICE},
        "spec": {
            "service": {"name": METRICS_SERVICE, "namespace": NAMESPACE, "port": 443},
            "group": "external.metrics.k8s.io",
            "version": "v1beta1",
            "caBundle": base64.b64encode(ca_bundle).decode(),
            "groupPriorityMinimum": 100,
            "versionPriority": 100,
        },
    }
    return [
        (f"/api/v1/namespaces/{NAMESPACE}/services", service),
        (f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices", endpoints),
        ("/apis/apiregistration.k8s.io/v1/apiservices", api_service),
    ]


class Autoscaling:
    """KEDA and Prometheus running for ``cluster`` (which must have a real node); use :meth:`start`, then
    :meth:`stop` (or ``with``)."""

    def __init__(self, cluster: Cluster, bin_dir: Path) -> None:
        if cluster.node is None:
            raise ClusterError("KEDA and Prometheus need the real node: Cluster.start(..., real_node=True)")
        self.cluster = cluster
        self.bin_dir = bin_dir
        self.crd_dir = bin_dir.parent / "keda-crd"
        self.dir = cluster.workdir / "autoscaling"
        self.address = cluster.host_address
        self.prometheus_url = ""
        """Where Prometheus answers, from this machine and from pods: the operator's --prometheus-address."""
        self._started: list[str] = []

    @classmethod
    def start(cls, cluster: Cluster, *, bin_dir: Path | None = None, timeout: float = 120.0) -> Autoscaling:
        """Build if needed, start Prometheus and KEDA, and return once the HPA controller can read KEDA's
        metrics through the API server."""
        running = cls(cluster, bin_dir if bin_dir is not None else build_autoscaling())
        try:
            running._start(timeout)
        except BaseException:
            running.stop()
            raise
        return running

    def __enter__(self) -> Autoscaling:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def query(self, expr: str) -> list[Any]:
        """Prometheus's instant vector for ``expr`` (its ``data.result``)."""
        url = f"{self.prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own Prometheus
            answer = json.loads(response.read())
        result: list[Any] = answer["data"]["result"]
        return result

    # -- start -------------------------------------------------------------

    def _start(self, timeout: float) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._start_prometheus(timeout)
        certs = self.dir / "certs"
        ca = pki.mutual_tls(
            certs,
            "keda",
            dns_names=(f"{METRICS_SERVICE}.{NAMESPACE}.svc", f"keda-operator.{NAMESPACE}.svc", "localhost"),
            ip_addresses=("127.0.0.1", self.address),
        )
        self._kubectl("create", "namespace", NAMESPACE)
        self._kubectl("apply", "--server-side", "-f", str(self.crd_dir))
        self._kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")

        env = {
            **os.environ,
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "WATCH_NAMESPACE": "",
            "POD_NAMESPACE": NAMESPACE,
            "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE,
        }
        grpc_port, probe_port = free_port(), free_port()
        (self.dir / "no-custom-ca").mkdir(exist_ok=True)
        self._spawn(
            "keda-operator",
            [
                f"--cert-dir={certs}",
                f"--metrics-service-bind-address=127.0.0.1:{grpc_port}",
                f"--health-probe-bind-address=127.0.0.1:{probe_port}",
                "--metrics-bind-address=0",
                # Scalers' extra CAs; its default is /custom/ca.
                f"--ca-dir={self.dir / 'no-custom-ca'}",
                "--zap-log-level=info",
                "--zap-encoder=console",
            ],
            env,
            cluster_dns=True,
        )
        self.cluster.wait_ready(
            "keda-operator", lambda: _http_ok(f"http://127.0.0.1:{probe_port}/readyz"), timeout=timeout
        )

        api_port = free_port()
        kubeconfig = str(self.cluster.kubeconfig)
        self._spawn(
            "keda-adapter",
            [
                f"--secure-port={api_port}",
                f"--bind-address={self.address}",
                f"--cert-dir={certs}",
                f"--tls-cert-file={certs / 'tls.crt'}",
                f"--tls-private-key-file={certs / 'tls.key'}",
                f"--client-ca-file={ca}",
                f"--metrics-service-address=127.0.0.1:{grpc_port}",
                f"--lister-kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                # Its own /metrics; its default :8080 is anybody's port.
                f"--port={free_port()}",
                "--zap-log-level=info",
                "--zap-encoder=console",
            ],
            env,
        )
        context = ssl.create_default_context(cafile=str(ca))
        self.cluster.wait_ready(
            "keda-adapter",
            lambda: _http_ok(f"https://{self.address}:{api_port}/readyz", context),
            timeout=timeout,
        )
        for path, body in metrics_api_objects(self.address, api_port, ca.read_bytes()):
            self.cluster.api.create(path, body)
        self.cluster.wait_ready("keda-adapter", self._metrics_api_available, timeout=timeout)

    def _start_prometheus(self, timeout: float) -> None:
        config = self.dir / "prometheus.yaml"
        config.write_text(yaml.safe_dump(prometheus_config(self.cluster.kubeconfig)))
        port = free_port()
        self.prometheus_url = f"http://{self.address}:{port}"
        self._spawn(
            "prometheus",
            [
                f"--config.file={config}",
                f"--storage.tsdb.path={self.dir / 'prometheus'}",
                "--storage.tsdb.retention.time=2h",
                f"--web.listen-address={self.address}:{port}",
                "--log.level=info",
            ],
        )
        self.cluster.wait_ready(
            "prometheus", lambda: _http_ok(f"{self.prometheus_url}/-/ready"), timeout=timeout
        )

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None, *, cluster_dns: bool = False
    ) -> None:
        argv = [str(self.bin_dir / name), *args]
        if cluster_dns:
            argv = [*self._with_cluster_dns(), *argv]
        self.cluster.spawn(name, argv, env=env)
        self._started.append(name)

    def _with_cluster_dns(self) -> list[str]:
        """A command prefix: the program resolves names with the cluster's DNS, as it would in a pod.

        KEDA's scalers call what the ScaledObject names, and moorage names the activator by its Service
        (``<service>.<namespace>.svc.cluster.local``); a host process asks the host's resolver, which does not
        know it. In a mount namespace of its own, the program sees a resolv.conf that points at kube-dns
        (reached through kube-proxy like any Service address), and the host's stays as it is.
        """
        resolv = self.dir / "resolv.conf"
        resolv.write_text(
            f"nameserver {hostnet.DNS_SERVICE_IP}\nsearch {NAMESPACE}.svc.cluster.local svc.cluster.local "
            "cluster.local\noptions ndots:5\n"
        )
        mount = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", mount, str(resolv)]

    def _metrics_api_available(self) -> bool:
        service = self.cluster.api.get(f"/apis/apiregistration.k8s.io/v1/apiservices/{API_SERVICE}")
        conditions = service.get("status", {}).get("conditions", [])
        return any(c.get("type") == "Available" and c.get("status") == "True" for c in conditions)

    # -- stop --------------------------------------------------------------

    def stop(self) -> None:
        """Leave the cluster as it was before :meth:`start`. Idempotent; never raises for cleanup trouble."""
        if "keda-operator" in self._started:
            # KEDA's finalizer on each ScaledObject: deleted while KEDA runs, or they (and their
            # namespaces) would never go.
            self.cluster.kubectl(
                "delete",
                "scaledobjects",
                "--all",
                "--all-namespaces",
                "--wait=true",
                "--timeout=60s",
                timeout=90,
            )
        with contextlib.suppress(ApiError, OSError):
            self.cluster.api.delete(f"/apis/apiregistration.k8s.io/v1/apiservices/{API_SERVICE}")
        for name in reversed(self._started):
            self.cluster.stop_process(name)
        self._started.clear()
        self.cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false")
        if self.crd_dir.is_dir():
            # Gone before the next test looks: one that installs KEDA's CRD when it is missing must not
            # find it still terminating.
            self.cluster.kubectl(
                "delete",
                "--ignore-not-found",
                "--wait=true",
                "--timeout=60s",
                "-f",
                str(self.crd_dir),
                timeout=90,
            )

    def _kubectl(self, *args: str) -> None:
        result = self.cluster.kubectl(*args)
        if result.returncode != 0:
            raise KubectlError(result)


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


__all__ = ["API_SERVICE", "Autoscaling", "metrics_api_objects", "prometheus_config"]
