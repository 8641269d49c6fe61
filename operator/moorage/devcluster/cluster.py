"""A real Kubernetes control plane on 127.0.0.1 with fake (kwok) GPU nodes, and optionally one real node.

``Cluster.start(workdir)`` runs etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok as child processes (binaries from tests/cluster, see
:mod:`moorage.devcluster.build`), creates the fake nodes, a default
StorageClass ``standard`` served by an in-process hostPath provisioner, and
returns once the cluster can run pods.  ``stop()`` (or leaving the ``with``
block) ends every process; an ``atexit`` hook and ``PR_SET_PDEATHSIG`` are the
backstops should the caller forget or die.

With ``real_node=True`` (Linux, root) the kwok CPU node is replaced by a real
one (:mod:`moorage.devcluster.node`): containers really run, with cluster
DNS and Services, and the API server listens on the node's host address
(:attr:`Cluster.host_address`) instead of 127.0.0.1 so that pods reach it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import yaml

from moorage.devcluster import hostnet, kwok_stages, pki
from moorage.devcluster.api import JSON, ApiClient, ApiError
from moorage.devcluster.build import build, build_node
from moorage.devcluster.fakenodes import (
    GPU_RESOURCE,
    GPU_TAINT,
    KWOK_NODE_ANNOTATION,
    NodeSpec,
    cpu_node_spec,
    gpu_node_specs,
    node_object,
)
from moorage.devcluster.images import LoadResult
from moorage.devcluster.node import NodeCerts, NodeError, RealNode, default_image_store
from moorage.devcluster.processes import ComponentExitedError, Processes, free_port, wait_until
from moorage.devcluster.provisioner import STORAGE_CLASS, Provisioner, storage_class

#: User names (client certificate CNs) the components authenticate as; all
#: but the controller-manager and scheduler are in ``system:masters``.
ADMIN_USER = "devcluster-admin"
KWOK_USER = "devcluster-kwok"
PROVISIONER_USER = "devcluster-provisioner"

SERVICE_CIDR = hostnet.SERVICE_CIDR
#: kwok's fake pod addresses (the real node's pods use hostnet.NODE_POD_CIDR).
POD_CIDR = "10.244.0.0/16"

T = TypeVar("T")

_LEASE_SECONDS = 120
_PORT_ATTEMPTS = 3
_CONTROLLER_THROUGHPUT = ("--kube-api-qps=500", "--kube-api-burst=1000")
_AUDIT_POLICY: JSON = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        # Reads too for the admin user (tests, benchmarks and the operator they run): an idle operator
        # must neither write nor read beyond its watches, and the audit log is where that shows.
        {"level": "Metadata", "users": [ADMIN_USER]},
        {"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        {"level": "None"},
    ],
}


class KubectlError(RuntimeError):
    """A kubectl command run by :meth:`Cluster.apply` or :meth:`Cluster.get_json` failed."""

    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(
            f"{' '.join(map(str, result.args))}: exit {result.returncode}: {result.stderr.strip()}"
        )
        self.result = result


def wait_for(check: Callable[[], T], *, timeout: float = 60.0, interval: float = 0.2, what: str = "") -> T:
    """Poll ``check`` until it returns something truthy and return that; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(interval)


class ClusterError(RuntimeError):
    """The cluster failed to start (the message includes the relevant log tail)."""


class Cluster:
    """A running dev cluster; use :meth:`start`, then :meth:`stop` (or ``with``)."""

    workdir: Path
    bin_dir: Path
    kubeconfig: Path
    server: str
    audit_log: Path
    logs_dir: Path
    gpu_nodes: list[str]
    cpu_nodes: list[str]
    api: ApiClient
    node: RealNode | None
    """The real node, when started with ``real_node=True``."""

    def __init__(
        self,
        workdir: Path,
        bin_dir: Path,
        node_bin_dir: Path | None = None,
        image_store: Path | None = None,
    ) -> None:
        self.workdir = workdir.resolve()
        self.bin_dir = bin_dir
        self.logs_dir = self.workdir / "logs"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.audit_log = self.logs_dir / "audit.log"
        self.server = ""
        self.etcd_url = ""
        """etcd's client URL (plain HTTP on loopback)."""
        self.gpu_nodes = []
        self.cpu_nodes = []
        self._processes = Processes(self.logs_dir, self.workdir)
        self.node = (
            RealNode(self.workdir / "node", self.logs_dir, bin_dir, node_bin_dir, image_store)
            if node_bin_dir is not None
            else None
        )
        self._provisioner: Provisioner | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self.profiling = False

    # -- public API ------------------------------------------------------

    @classmethod
    def start(
        cls,
        workdir: Path,
        gpu_nodes: int = 2,
        gpus_per_node: int = 8,
        *,
        real_node: bool = False,
        bin_dir: Path | None = None,
        node_bin_dir: Path | None = None,
        image_store: Path | None = None,
        timeout: float = 180.0,
        profiling: bool = False,
    ) -> Cluster:
        """Build if needed, start everything in ``workdir`` and wait until it is usable.

        ``real_node``: replace the kwok CPU node by a real one (needs root on
        Linux, one per machine; see :mod:`moorage.devcluster.node`).
        ``image_store``: the real node's containerd root, where loaded images
        stay; default :func:`~moorage.devcluster.node.default_image_store`,
        shared by the runs on this machine so that an image is imported once.
        ``profiling``: the API server serves Go's pprof at ``/debug/pprof`` (benchmarks).

        Child processes are tied to the calling thread (``PR_SET_PDEATHSIG``):
        call this from the main thread or from one that outlives the cluster.
        """
        workdir.mkdir(parents=True, exist_ok=True)
        binaries = bin_dir if bin_dir is not None else build()
        node_binaries = (node_bin_dir if node_bin_dir is not None else build_node()) if real_node else None
        deadline = time.monotonic() + timeout
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            store = image_store if image_store is not None else default_image_store()
            cluster = cls(workdir, binaries, node_binaries, store if real_node else None)
            cluster.profiling = profiling
            atexit.register(cluster.stop)
            try:
                cluster._boot(gpu_nodes, gpus_per_node, deadline)
            except (NodeError, ComponentExitedError, TimeoutError) as exc:
                cluster.stop()
                raise ClusterError(str(exc)) from exc
            except ClusterError as exc:
                cluster.stop()
                # Ports are picked free, then bound by the child: another
                # process may take one in between. Start over on fresh ports.
                if "address already in use" not in str(exc) or attempt == _PORT_ATTEMPTS:
                    raise
                for sub in ("etcd", "pki", "pv"):
                    shutil.rmtree(workdir / sub, ignore_errors=True)
                continue
            except BaseException:
                cluster.stop()
                raise
            return cluster
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop every component (SIGTERM, then SIGKILL after 10 s). Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        atexit.unregister(self.stop)
        if self._provisioner is not None:
            self._provisioner.stop()
        if self.node is not None:
            self.node.stop()
        self._processes.stop()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def kubectl(
        self,
        *args: str,
        check: bool = False,
        input: str | None = None,
        timeout: float | None = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl (``$MOORAGE_KUBECTL`` or from ``PATH``) against this cluster as admin."""
        kubectl = os.environ.get("MOORAGE_KUBECTL") or shutil.which("kubectl") or "kubectl"
        return subprocess.run(
            [kubectl, "--kubeconfig", str(self.kubeconfig), *args],
            check=check,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def apply(self, *objects: JSON, namespace: str | None = None) -> None:
        """``kubectl apply`` the given objects (raises :class:`KubectlError` on failure)."""
        args = ["apply", "-f", "-"]
        if namespace:
            args += ["-n", namespace]
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
        result = self.kubectl(*args, input=body)
        if result.returncode != 0:
            raise KubectlError(result)

    def get_json(self, *args: str) -> Any:
        """``kubectl get ARGS -o json``, parsed; ``None`` when the object does not exist."""
        result = self.kubectl("get", *args, "-o", "json")
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise KubectlError(result)
        return json.loads(result.stdout)

    def env(self) -> dict[str, str]:
        """``os.environ`` plus ``KUBECONFIG`` pointing at this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def logs(self) -> dict[str, Path]:
        """Log file of each component, by name."""
        node_logs = self.node.processes.logs() if self.node is not None else {}
        return {**self._processes.logs(), **node_logs}

    def running(self) -> bool:
        """Whether every component process is still alive."""
        node_ok = self.node is None or self.node.processes.running()
        return self._processes.running() and node_ok

    def pids(self) -> dict[str, int]:
        """The process id of each control-plane component (etcd, kube-apiserver, ...), by name."""
        return {c.name: c.proc.pid for c in self._processes.components}

    @property
    def host_address(self) -> str:
        """The address on this machine that pods reach (the real node's bridge); 127.0.0.1 without one.

        Serve something to pods (the local hub, say) by listening here.
        """
        return self.node.host_address if self.node is not None else "127.0.0.1"

    def load_image(self, archive: Path) -> LoadResult:
        """Import an OCI or docker image archive into the real node's containerd (skipped if there)."""
        if self.node is None:
            raise ClusterError("load_image needs a real node: Cluster.start(..., real_node=True)")
        return self.node.load_image(archive)

    @contextmanager
    def port_forward(self, namespace: str, target: str, port: int) -> Iterator[int]:
        """``kubectl port-forward`` of ``target`` (e.g. ``svc/tiny``) port ``port`` to a free local port,
        yielded once it answers TCP; stopped on exit."""
        local = free_port()
        kubectl = os.environ.get("MOORAGE_KUBECTL") or shutil.which("kubectl") or "kubectl"
        command = [kubectl, "--kubeconfig", str(self.kubeconfig), "port-forward", "-n", namespace, target]
        process = subprocess.Popen(
            [*command, f"{local}:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

        def listening() -> bool:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", local), timeout=1):
                return True
            return False

        try:
            wait_for(listening, timeout=30, what=f"kubectl port-forward {target}")
            yield local
        finally:
            process.terminate()
            process.wait(10)

    # -- boot ------------------------------------------------------------

    def _boot(self, gpu_nodes: int, gpus_per_node: int, deadline: float) -> None:
        for sub in ("pki", "logs", "etcd", "pv"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        if self.node is not None:
            # The API server listens on the node's bridge address: set it up first.
            self.node.prepare()
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        self.server = f"https://{self.host_address}:{api_port}"

        clients = {
            "admin": (ADMIN_USER, ("system:masters",)),
            "controller-manager": ("system:kube-controller-manager", ()),
            "scheduler": ("system:kube-scheduler", ()),
            "kwok": (KWOK_USER, ("system:masters",)),
            "provisioner": (PROVISIONER_USER, ("system:masters",)),
        }
        if self.node is not None:
            clients |= {
                "kubelet": (f"system:node:{self.node.name}", ("system:nodes",)),
                "kube-proxy": ("system:kube-proxy", ()),
                "coredns": ("devcluster-coredns", ("system:masters",)),
                # The API server's identity towards kubelets (logs, exec, port-forward).
                "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ("system:masters",)),
            }
        certs = pki.generate(
            self.workdir / "pki",
            clients,
            service_ip="10.96.0.1",
            apiserver_ips=(self.host_address,) if self.node is not None else (),
        )
        kubeconfigs = {}
        for stem, user in (
            ("admin", ADMIN_USER),
            ("controller-manager", "system:kube-controller-manager"),
            ("scheduler", "system:kube-scheduler"),
            ("kwok", KWOK_USER),
        ):
            path = self.kubeconfig if stem == "admin" else self.workdir / f"{stem}.kubeconfig"
            kubeconfigs[stem] = pki.write_kubeconfig(
                path, self.server, certs.ca.cert, user, certs.clients[stem]
            )

        etcd_url = self.etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._spawn(
            "etcd",
            [
                "--name=devcluster",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=devcluster={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", deadline, lambda: self._etcd_healthy(etcd_url))

        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(_AUDIT_POLICY))
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                f"--bind-address={self.host_address}",
                f"--advertise-address={self.host_address}",
                f"--secure-port={api_port}",
                *self._node_apiserver_flags(certs),
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--client-ca-file={certs.ca.cert}",
                f"--tls-cert-file={certs.apiserver.cert}",
                f"--tls-private-key-file={certs.apiserver.key}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={certs.service_account_pub}",
                f"--service-account-signing-key-file={certs.service_account_key}",
                "--allow-privileged=true",
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
                f"--requestheader-client-ca-file={certs.front_proxy_ca.cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={certs.front_proxy_client.cert}",
                f"--proxy-client-key-file={certs.front_proxy_client.key}",
                f"--profiling={str(self.profiling).lower()}",
                "--event-ttl=1h",
            ],
        )
        self.api = ApiClient(
            self.server, certs.ca.cert, certs.clients["admin"].cert, certs.clients["admin"].key
        )
        self._wait("kube-apiserver", deadline, self._apiserver_ready)
        version = str(self.api.get("/version").get("gitVersion", "v0.0.0"))

        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={kubeconfigs['controller-manager']}",
                "--secure-port=0",
                "--leader-elect=false",
                "--controllers=*",
                f"--service-account-private-key-file={certs.service_account_key}",
                f"--root-ca-file={certs.ca.cert}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={certs.ca.cert}",
                f"--cluster-signing-key-file={certs.ca.key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--cluster-name=devcluster",
                # At its defaults (20 requests/s, 5 objects of a kind at once) the controller-manager
                # alone needs minutes for the Jobs, ReplicaSets and pods of a thousand models (about ten
                # writes each): a benchmark would measure it, not the operator. Clusters that run that
                # many are sized for it too.
                *_CONTROLLER_THROUGHPUT,
                "--concurrent-job-syncs=20",
                "--concurrent-deployment-syncs=20",
                "--concurrent-replicaset-syncs=20",
                f"--node-monitor-grace-period={_LEASE_SECONDS + 60}s",
                # Autoscaling tests wait for the HPA (KEDA's): it looks at its metrics every 5 s, not 15.
                "--horizontal-pod-autoscaler-sync-period=5s",
                # Its default is under /usr/libexec, which it would create.
                f"--flex-volume-plugin-dir={self.workdir / 'flexvolume'}",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                f"--kubeconfig={kubeconfigs['scheduler']}",
                "--secure-port=0",
                "--leader-elect=false",
                *_CONTROLLER_THROUGHPUT,
            ],
        )
        stages = self.workdir / "kwok.yaml"
        stages.write_text(kwok_stages.render())
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={kubeconfigs['kwok']}",
                f"--config={stages}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                f"--cidr={POD_CIDR}",
                "--node-ip=10.1.0.1",
                f"--node-lease-duration-seconds={_LEASE_SECONDS}",
            ],
        )

        self.api.create("/apis/storage.k8s.io/v1/storageclasses", storage_class())
        # The real node, when there is one, is the CPU node.
        specs = [*gpu_node_specs(gpu_nodes, gpus_per_node), *([cpu_node_spec()] if self.node is None else [])]
        for spec in specs:
            self.api.create("/api/v1/nodes", node_object(spec, version))
        self.gpu_nodes = [s.name for s in specs if s.taints]
        self.cpu_nodes = [s.name for s in specs if not s.taints]

        provisioner_certs = certs.clients["provisioner"]
        self._provisioner = Provisioner(
            ApiClient(self.server, certs.ca.cert, provisioner_certs.cert, provisioner_certs.key),
            self.workdir / "pv",
        )
        self._provisioner.start()

        names = {s.name for s in specs}
        self._wait("kwok", deadline, lambda: self._nodes_ready(names))
        self._wait(
            "kube-controller-manager",
            deadline,
            lambda: self._exists("/api/v1/namespaces/default/serviceaccounts/default"),
        )
        if self.node is not None:
            node_certs = NodeCerts(
                ca=certs.ca.cert,
                kubelet=certs.clients["kubelet"],
                kube_proxy=certs.clients["kube-proxy"],
                coredns=certs.clients["coredns"],
            )
            self.node.start(self.server, node_certs, self.api, deadline)
            self.cpu_nodes = [self.node.name]

    def _node_apiserver_flags(self, certs: pki.ClusterPKI) -> list[str]:
        if self.node is None:
            # On 127.0.0.1 the `kubernetes` Service could not have endpoints anyway.
            return ["--endpoint-reconciler-type=none"]
        kubelet_client = certs.clients["apiserver-kubelet-client"]
        return [
            # Pods reach the API server through the `kubernetes` Service: its
            # endpoint is the advertised host address.
            "--endpoint-reconciler-type=lease",
            f"--kubelet-client-certificate={kubelet_client.cert}",
            f"--kubelet-client-key={kubelet_client.key}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
        ]

    def restart(self, *names: str, while_down: Callable[[], None] | None = None) -> float:
        """Stop the named control-plane components in that order, call ``while_down``, start them again
        as they were, in reverse order, and wait until each serves. For tests of control-plane faults;
        returns the seconds from the first start to all serving."""
        started = {name: self._processes.find(name) for name in names}
        for name in names:
            self._processes.stop(name)
        if while_down is not None:
            while_down()
        begin = time.monotonic()
        probes = {"etcd": lambda: self._etcd_healthy(self.etcd_url), "kube-apiserver": self._apiserver_ready}
        for name in reversed(names):
            self._processes.spawn(name, started[name].argv, env=started[name].env)
            if name in probes:
                self._wait(name, time.monotonic() + 60, probes[name])
        return time.monotonic() - begin

    # -- host processes beside the control plane --------------------------

    def spawn(self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> None:
        """Run a program on this machine beside the control plane (KEDA and Prometheus, say: see
        :mod:`moorage.devcluster.autoscaling`): logged to ``logs/<name>.log``, tied to the calling thread
        like the control plane, stopped by :meth:`stop_process` or with the cluster."""
        self._processes.spawn(name, argv, env=env)

    def wait_ready(self, name: str, ready: Callable[[], bool], *, timeout: float = 60.0) -> None:
        """Poll ``ready`` until true; :class:`ClusterError` with the tail of ``name``'s log when it times
        out or when any process of the cluster exits meanwhile."""
        self._wait(name, time.monotonic() + timeout, ready)

    def stop_process(self, name: str) -> None:
        """Stop a process started by :meth:`spawn` (SIGTERM, then SIGKILL after 10 s)."""
        self._processes.stop(name)

    # -- processes -------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> None:
        self._processes.spawn(name, [str(self.bin_dir / name), *args])

    def _wait(self, name: str, deadline: float, ready: Callable[[], bool]) -> None:
        """Poll ``ready`` until true; fail early if any component died."""
        try:
            wait_until(
                ready,
                deadline=deadline,
                what=name,
                alive=self._processes.check_alive,
                log=self.logs_dir / f"{name}.log",
                errors=(OSError, ApiError, ValueError),
            )
        except ComponentExitedError as exc:
            raise ClusterError(str(exc)) from exc
        except TimeoutError as exc:
            raise ClusterError(str(exc)) from exc

    # -- readiness probes --------------------------------------------------

    @staticmethod
    def _etcd_healthy(url: str) -> bool:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:  # noqa: S310
                return bool(json.loads(resp.read()).get("health") == "true")
        except urllib.error.HTTPError:
            return False

    def _apiserver_ready(self) -> bool:
        return self.api.text("/readyz").strip() == "ok"

    def _nodes_ready(self, names: set[str]) -> bool:
        ready = set()
        for node in self.api.get("/api/v1/nodes").get("items", []):
            for cond in node.get("status", {}).get("conditions", []):
                if cond.get("type") == "Ready" and cond.get("status") == "True":
                    ready.add(node["metadata"]["name"])
        return names <= ready

    def _exists(self, path: str) -> bool:
        try:
            self.api.get(path)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True


__all__ = [
    "ADMIN_USER",
    "GPU_RESOURCE",
    "GPU_TAINT",
    "KWOK_USER",
    "PROVISIONER_USER",
    "STORAGE_CLASS",
    "Cluster",
    "ClusterError",
    "KubectlError",
    "NodeSpec",
    "free_port",
    "wait_for",
]
