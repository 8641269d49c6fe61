"""Fixtures for tests against the real dev control plane (moorage.devcluster).

The session-scoped ``cluster`` fixture builds (cached) and starts the cluster
once per run. Set MOORAGE_SKIP_CLUSTER=1 to skip these tests; otherwise any
failure to build or start the cluster fails them. Tests that use ``cluster``
are marked ``cluster`` automatically; on failure the report gets a
"devcluster diagnostics" section (events, pods, nodes, component log tails).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from moorage.devcluster import Cluster, dump_diagnostics, wait_for
from moorage.devcluster.gateway import GatewayCrds


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster with a real node (containerd, kubelet, kube-proxy, CoreDNS) next to a kwok GPU node, shared
    by every test that runs real pods. Needs root on Linux and skips otherwise; anywhere else a failure to
    start fails the tests. At the end it fails if anything the node set up on the host is left behind."""
    if os.environ.get("MOORAGE_SKIP_CLUSTER") == "1":
        pytest.skip("MOORAGE_SKIP_CLUSTER=1: not starting the dev cluster (tests/cluster)")
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("the real node (containerd, kubelet, iptables) needs root on Linux")
    workdir = tmp_path_factory.mktemp("real-devcluster")
    started = time.monotonic()
    running = Cluster.start(workdir, gpu_nodes=1, real_node=True)
    node = running.node
    assert node is not None
    print(
        f"\nreal devcluster up in {time.monotonic() - started:.1f}s "
        f"(node start {node.timings['node_start_s']:.1f}s, pause image load "
        f"{node.timings['pause_image_load_s']:.2f}s) at {running.server}"
    )
    try:
        yield running
    finally:
        running.stop()
        left = node.leftovers()
        assert not left, f"the real node left state behind after stop: {left}"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if os.environ.get("MOORAGE_SKIP_CLUSTER") == "1":
        pytest.skip("MOORAGE_SKIP_CLUSTER=1: not starting the dev cluster (tests/cluster)")
    workdir = tmp_path_factory.mktemp("devcluster")
    started = time.monotonic()
    running = Cluster.start(workdir)
    print(f"devcluster up in {time.monotonic() - started:.1f}s at {running.server} ({workdir})")
    try:
        yield running
    finally:
        running.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"cluster", "real_cluster"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    running = funcargs.get("cluster") or funcargs.get("real_cluster")
    if isinstance(running, Cluster) and running.running():
        report.sections.append(("devcluster diagnostics", dump_diagnostics(running)))


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace whose default ServiceAccount exists; deleted afterwards (not awaited)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name, check=True)
    wait_for(
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name).returncode == 0,
        what=f"default serviceaccount in {name}",
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="session")
def gateway_crds(cluster: Cluster) -> GatewayCrds:
    return GatewayCrds(cluster)


KEDA_MODULE = "github.com/kedacore/keda/v2@v2.21.0"
"""KEDA's Go module, for its ScaledObject CRD as KEDA's release installs it (go mod download caches it)."""
KEDA_CRD = "scaledobjects.keda.sh"


def keda_crd_manifest(tmp: Path) -> dict[str, Any]:
    go = os.environ.get("MOORAGE_GO") or shutil.which("go") or "/usr/local/go/bin/go"
    # Outside any module, so nothing of ours is resolved or changed; only the module cache is filled.
    result = subprocess.run(
        [go, "mod", "download", "-json", KEDA_MODULE],
        cwd=tmp,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env={**os.environ, "GOFLAGS": "-mod=mod"},
    )
    assert result.returncode == 0, f"go mod download {KEDA_MODULE}: {result.stdout}{result.stderr}"
    source = (
        Path(json.loads(result.stdout)["Dir"]) / "config" / "crd" / "bases" / "keda.sh_scaledobjects.yaml"
    )
    crd: dict[str, Any] = yaml.safe_load(source.read_text())
    return crd


def install_keda_crd(cluster: Cluster, tmp: Path) -> str:
    """KEDA's real ScaledObject CRD installed (not KEDA's controllers: the tests play the scaler)."""
    if cluster.kubectl("get", "crd", KEDA_CRD, "-o", "name").returncode != 0:
        crd = keda_crd_manifest(tmp)
        result = cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(crd))
        assert result.returncode == 0, result.stderr
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{KEDA_CRD}", "--timeout=60s", check=True)
        wait_for(
            lambda: cluster.kubectl("get", "scaledobjects", "-A").returncode == 0, what="ScaledObjects served"
        )
    return KEDA_CRD


@pytest.fixture
def keda_crd(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    return install_keda_crd(cluster, tmp_path_factory.mktemp("keda"))


@pytest.fixture(scope="module")
def real_keda_crd(real_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same CRD on the real-node cluster."""
    return install_keda_crd(real_cluster, tmp_path_factory.mktemp("keda"))
