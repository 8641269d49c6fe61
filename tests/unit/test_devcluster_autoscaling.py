"""What the dev cluster gives KEDA and Prometheus (moorage.devcluster.autoscaling); running them is
tests/e2e/test_real_autoscaling.py."""

from __future__ import annotations

import base64
import socket
import ssl
import threading
from pathlib import Path

from moorage.devcluster import pki
from moorage.devcluster.autoscaling import API_SERVICE, metrics_api_objects, prometheus_config


def test_one_certificate_serves_both_ends_of_kedas_mutual_tls(tmp_path: Path) -> None:
    """KEDA's operator and its metrics server read the same ca.crt, tls.crt and tls.key, as server and as
    client of one gRPC link: a real handshake with the client's certificate required."""
    ca = pki.mutual_tls(tmp_path, "keda", dns_names=("localhost",), ip_addresses=("127.0.0.1",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]

    def context(purpose: ssl.Purpose) -> ssl.SSLContext:
        made = ssl.create_default_context(purpose, cafile=str(ca))
        made.load_cert_chain(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))
        made.verify_mode = ssl.CERT_REQUIRED
        return made

    server_side = context(ssl.Purpose.CLIENT_AUTH)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        peers: list[dict[str, object] | None] = []

        def serve() -> None:
            conn, _ = listener.accept()
            with server_side.wrap_socket(conn, server_side=True) as tls:
                peers.append(tls.getpeercert())

        thread = threading.Thread(target=serve)
        thread.start()
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            context(ssl.Purpose.SERVER_AUTH).wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.getpeercert()
        thread.join(5)
    assert peers and peers[0], "the server saw no client certificate"


def test_the_metrics_api_points_at_the_host_process_and_trusts_kedas_ca() -> None:
    objects = dict(metrics_api_objects("10.245.0.1", 6443, b"CA PEM"))
    service = objects["/api/v1/namespaces/keda/services"]
    slice_ = objects["/apis/discovery.k8s.io/v1/namespaces/keda/endpointslices"]
    api = objects["/apis/apiregistration.k8s.io/v1/apiservices"]
    assert "selector" not in service["spec"]
    assert slice_["metadata"]["labels"]["kubernetes.io/service-name"] == service["metadata"]["name"]
    assert slice_["endpoints"][0]["addresses"] == ["10.245.0.1"]
    assert slice_["ports"][0]["port"] == service["spec"]["ports"][0]["targetPort"] == 6443
    assert api["metadata"]["name"] == API_SERVICE
    assert api["spec"]["service"] == {"name": service["metadata"]["name"], "namespace": "keda", "port": 443}
    assert base64.b64decode(api["spec"]["caBundle"]) == b"CA PEM"


def test_prometheus_labels_what_the_autoscaling_query_selects_by(tmp_path: Path) -> None:
    """moorage's query selects vLLM's series by namespace (and vLLM's own model_name): the scrape adds it."""
    (job,) = prometheus_config(tmp_path / "kubeconfig")["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "kubeconfig_file": str(tmp_path / "kubeconfig")}]
    targets = {rule.get("target_label") for rule in job["relabel_configs"]}
    assert {"namespace", "pod", "__address__", "__metrics_path__"} <= targets
