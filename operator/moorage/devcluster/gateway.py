"""The gateway CRDs on a dev cluster: Gateway API's from its Go module, and a stand-in for the Inference
Extension's InferencePool (its Go module is not served here)."""

from pathlib import Path

import yaml

from moorage.devcluster.build import find_cluster_dir, gateway_api_crds
from moorage.devcluster.cluster import Cluster, KubectlError

INFERENCE_POOL_CRD = find_cluster_dir().parent / "crds" / "inferencepools.inference.networking.k8s.io.yaml"
"""tests/crds: our stand-in for the Inference Extension's v1 CRD, faithful to its published schema. The
real config/crd/bases/inference.networking.k8s.io_inferencepools.yaml drops in here unchanged."""
GATEWAY_API_KINDS = ("gatewayclasses", "gateways", "httproutes", "referencegrants")
"""The Gateway API CRDs (standard channel) a route needs."""


class GatewayCrds:
    """Installs and removes the gateway CRDs. They are cluster-scoped: on a cluster shared by tests, a test
    that needs them present or absent says so, and none assumes either."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        crd_dir = gateway_api_crds()
        self.route_files = [crd_dir / f"gateway.networking.k8s.io_{kind}.yaml" for kind in GATEWAY_API_KINDS]

    def _files(self, pool: bool, route: bool) -> list[Path]:
        return ([INFERENCE_POOL_CRD] if pool else []) + (self.route_files if route else [])

    def install(self, *, pool: bool = True, route: bool = True) -> None:
        files = self._files(pool, route)
        for path in files:
            self._kubectl("apply", "--server-side", "-f", str(path))
        for path in files:
            name = yaml.safe_load(path.read_text())["metadata"]["name"]
            self._kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")

    def remove(self, *, pool: bool = True, route: bool = True) -> None:
        for path in self._files(pool, route):
            self._kubectl("delete", "--ignore-not-found", "--wait=true", "-f", str(path))

    def _kubectl(self, *args: str) -> None:
        result = self.cluster.kubectl(*args)
        if result.returncode != 0:
            raise KubectlError(result)
