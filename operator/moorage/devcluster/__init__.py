"""A throwaway Kubernetes control plane with fake GPU nodes, for tests and local runs.

Stands alone: imports nothing from the rest of moorage.

    from moorage.devcluster import Cluster

    with Cluster.start(tmp_path) as cluster:
        cluster.kubectl("get", "nodes", check=True)

With ``real_node=True`` (root on Linux) one real node runs pods next to the
fake GPU nodes; ``cluster.load_image(archive)`` loads images into it and pods
reach this machine at ``cluster.host_address``.

From a shell: ``python -m moorage.devcluster up [--workdir DIR] [--real-node]``.
"""

from moorage.devcluster.build import BuildError, build
from moorage.devcluster.cluster import (
    ADMIN_USER,
    GPU_RESOURCE,
    GPU_TAINT,
    KWOK_USER,
    PROVISIONER_USER,
    STORAGE_CLASS,
    Cluster,
    ClusterError,
    KubectlError,
    wait_for,
)
from moorage.devcluster.diagnostics import dump_diagnostics
from moorage.devcluster.kwok_stages import OUTCOME_ANNOTATION

__all__ = [
    "ADMIN_USER",
    "GPU_RESOURCE",
    "GPU_TAINT",
    "KWOK_USER",
    "OUTCOME_ANNOTATION",
    "PROVISIONER_USER",
    "STORAGE_CLASS",
    "BuildError",
    "Cluster",
    "ClusterError",
    "KubectlError",
    "build",
    "dump_diagnostics",
    "wait_for",
]
