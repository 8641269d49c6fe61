"""A real Kubernetes control plane on 127.0.0.1 with fake (kwok) GPU nodes.

``Cluster.start(workdir)`` runs etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok as child processes (binaries from tests/cluster, see
:mod:`moorage.devcluster.build`), creates the fake nodes, a default
StorageClass ``standard`` served by an in-process hostPath provisioner, and
returns once the cluster can run pods.  ``stop()`` (or leaving the ``with``
block) ends every process; an ``atexit`` hook and ``PR_SET_PDEATHSIG`` are the
backstops should the caller forget or die.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import yaml

from moorage.devcluster import kwok_stages, pki
from moorage.devcluster.api import JSON, ApiClient, ApiError
from moorage.devcluster.build import build

#: The default StorageClass the launcher's provisioner serves.
STORAGE_CLASS = "standard"
PROVISIONER_NAME = "devcluster.moorage.dev/hostpath"
PROVISIONED_LABEL = "devcluster.moorage.dev/provisioned"

GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT: JSON = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
GPU_MEMORY_MIB = "81559"
GPU_INSTANCE_TYPE = "p5.48xlarge"
CPU_INSTANCE_TYPE = "m7i.8xlarge"

#: User names (client certificate CNs) the components authenticate as; all
#: but the controller-manager and scheduler are in ``system:masters``.
ADMIN_USER = "devcluster-admin"
KWOK_USER = "devcluster-kwok"
PROVISIONER_USER = "devcluster-provisioner"

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"

T = TypeVar("T")

_KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
_LEASE_SECONDS = 120
_PORT_ATTEMPTS = 3
_AUDIT_POLICY: JSON = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        {"level": "None"},
    ],
}

_PR_SET_PDEATHSIG = 1
try:
    _prctl: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _prctl = None


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: die when the launching thread dies."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


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


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class _Component:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]


@dataclass(frozen=True)
class NodeSpec:
    """A fake node the launcher creates."""

    name: str
    labels: dict[str, str]
    capacity: dict[str, str]
    taints: tuple[JSON, ...]
    internal_ip: str


def gpu_node_specs(count: int, gpus_per_node: int) -> list[NodeSpec]:
    """The fake GPU nodes (tainted ``nvidia.com/gpu=present:NoSchedule``)."""
    specs = []
    for i in range(count):
        name = f"gpu-node-{i}"
        specs.append(
            NodeSpec(
                name=name,
                labels={
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node.kubernetes.io/instance-type": GPU_INSTANCE_TYPE,
                    "nvidia.com/gpu.present": "true",
                    "nvidia.com/gpu.product": GPU_PRODUCT,
                    "nvidia.com/gpu.memory": GPU_MEMORY_MIB,
                    "nvidia.com/gpu.count": str(gpus_per_node),
                    "type": "kwok",
                },
                capacity={
                    "cpu": "64",
                    "memory": "512Gi",
                    "pods": "110",
                    "ephemeral-storage": "2Ti",
                    GPU_RESOURCE: str(gpus_per_node),
                },
                taints=(GPU_TAINT,),
                internal_ip=f"10.1.0.{10 + i}",
            )
        )
    return specs


def cpu_node_spec() -> NodeSpec:
    """The single untainted CPU-only node."""
    name = "cpu-node-0"
    return NodeSpec(
        name=name,
        labels={
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": CPU_INSTANCE_TYPE,
            "type": "kwok",
        },
        capacity={"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "1Ti"},
        taints=(),
        internal_ip="10.1.0.2",
    )


def _node_object(spec: NodeSpec, kubelet_version: str) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec.name,
            "labels": spec.labels,
            "annotations": {_KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": list(spec.taints)} if spec.taints else {},
        "status": {
            "capacity": spec.capacity,
            "allocatable": spec.capacity,
            "addresses": [
                {"type": "InternalIP", "address": spec.internal_ip},
                {"type": "Hostname", "address": spec.name},
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "kwok",
                "kernelVersion": "kwok",
                "kubeletVersion": kubelet_version,
                "kubeProxyVersion": kubelet_version,
                "containerRuntimeVersion": "kwok://devcluster",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    }


def _kubeconfig(server: str, ca: Path, user: str, client: pki.CertKey) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "devcluster", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [
            {
                "name": user,
                "user": {"client-certificate": str(client.cert), "client-key": str(client.key)},
            }
        ],
        "contexts": [{"name": "devcluster", "context": {"cluster": "devcluster", "user": user}}],
        "current-context": "devcluster",
    }


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

    def __init__(self, workdir: Path, bin_dir: Path) -> None:
        self.workdir = workdir.resolve()
        self.bin_dir = bin_dir
        self.logs_dir = self.workdir / "logs"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.audit_log = self.logs_dir / "audit.log"
        self.server = ""
        self.gpu_nodes = []
        self.cpu_nodes = []
        self._components: list[_Component] = []
        self._provisioner: _Provisioner | None = None
        self._lock = threading.Lock()
        self._stopped = False

    # -- public API ------------------------------------------------------

    @classmethod
    def start(
        cls,
        workdir: Path,
        gpu_nodes: int = 2,
        gpus_per_node: int = 8,
        *,
        bin_dir: Path | None = None,
        timeout: float = 180.0,
    ) -> Cluster:
        """Build if needed, start everything in ``workdir`` and wait until it is usable.

        Child processes are tied to the calling thread (``PR_SET_PDEATHSIG``):
        call this from the main thread or from one that outlives the cluster.
        """
        workdir.mkdir(parents=True, exist_ok=True)
        binaries = bin_dir if bin_dir is not None else build()
        deadline = time.monotonic() + timeout
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            cluster = cls(workdir, binaries)
            atexit.register(cluster.stop)
            try:
                cluster._boot(gpu_nodes, gpus_per_node, deadline)
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
        for component in reversed(self._components):
            self._terminate(component)
        self._components.clear()

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
        return {c.name: c.log_path for c in self._components}

    def running(self) -> bool:
        """Whether every component process is still alive."""
        return bool(self._components) and all(c.proc.poll() is None for c in self._components)

    # -- boot ------------------------------------------------------------

    def _boot(self, gpu_nodes: int, gpus_per_node: int, deadline: float) -> None:
        for sub in ("pki", "logs", "etcd", "pv"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        self.server = f"https://127.0.0.1:{api_port}"

        certs = pki.generate(
            self.workdir / "pki",
            {
                "admin": (ADMIN_USER, ("system:masters",)),
                "controller-manager": ("system:kube-controller-manager", ()),
                "scheduler": ("system:kube-scheduler", ()),
                "kwok": (KWOK_USER, ("system:masters",)),
                "provisioner": (PROVISIONER_USER, ("system:masters",)),
            },
            service_ip="10.96.0.1",
        )
        kubeconfigs = {}
        for stem, user in (
            ("admin", ADMIN_USER),
            ("controller-manager", "system:kube-controller-manager"),
            ("scheduler", "system:kube-scheduler"),
            ("kwok", KWOK_USER),
        ):
            path = self.kubeconfig if stem == "admin" else self.workdir / f"{stem}.kubeconfig"
            path.write_text(
                yaml.safe_dump(_kubeconfig(self.server, certs.ca.cert, user, certs.clients[stem]))
            )
            path.chmod(0o600)
            kubeconfigs[stem] = path

        etcd_url = f"http://127.0.0.1:{etcd_port}"
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
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                "--endpoint-reconciler-type=none",
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
                "--profiling=false",
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
                f"--node-monitor-grace-period={_LEASE_SECONDS + 60}s",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [f"--kubeconfig={kubeconfigs['scheduler']}", "--secure-port=0", "--leader-elect=false"],
        )
        stages = self.workdir / "kwok.yaml"
        stages.write_text(kwok_stages.render())
        self._spawn(
            "kwok",
            [
                f"--kubeconfig={kubeconfigs['kwok']}",
                f"--config={stages}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={_KWOK_NODE_ANNOTATION}=fake",
                f"--cidr={POD_CIDR}",
                "--node-ip=10.1.0.1",
                f"--node-lease-duration-seconds={_LEASE_SECONDS}",
            ],
        )

        self.api.create(
            "/apis/storage.k8s.io/v1/storageclasses",
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {
                    "name": STORAGE_CLASS,
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                },
                "provisioner": PROVISIONER_NAME,
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
            },
        )
        specs = [*gpu_node_specs(gpu_nodes, gpus_per_node), cpu_node_spec()]
        for spec in specs:
            self.api.create("/api/v1/nodes", _node_object(spec, version))
        self.gpu_nodes = [s.name for s in specs if s.taints]
        self.cpu_nodes = [s.name for s in specs if not s.taints]

        provisioner_certs = certs.clients["provisioner"]
        self._provisioner = _Provisioner(
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

    # -- processes -------------------------------------------------------

    def _spawn(self, name: str, args: Sequence[str]) -> None:
        log_path = self.logs_dir / f"{name}.log"
        log_file = log_path.open("ab")
        proc = subprocess.Popen(
            [str(self.bin_dir / name), *args],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only calls prctl
        )
        self._components.append(_Component(name, proc, log_path, log_file))

    @staticmethod
    def _terminate(component: _Component) -> None:
        proc = component.proc
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
        # Anything left in the group (the component's own children, if any).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        component.log_file.close()

    def _wait(self, name: str, deadline: float, ready: Callable[[], bool]) -> None:
        """Poll ``ready`` until true; fail early if any component died."""
        delay = 0.05
        while True:
            for component in self._components:
                code = component.proc.poll()
                if code is not None:
                    raise ClusterError(
                        f"{component.name} exited with code {code} while waiting for {name}; "
                        f"last lines of {component.log_path}:\n{_tail(component.log_path)}"
                    )
            try:
                if ready():
                    return
            except (OSError, ApiError, ValueError):
                pass
            if time.monotonic() > deadline:
                log = self.logs_dir / f"{name}.log"
                raise ClusterError(f"timed out waiting for {name}; last lines of {log}:\n{_tail(log)}")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

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


class _Provisioner:
    """Binds Pending PVCs of the default class to new hostPath PVs, and deletes released ones."""

    def __init__(self, api: ApiClient, root: Path, interval: float = 0.5) -> None:
        self._api = api
        self._root = root
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="devcluster-provisioner", daemon=True)
        self.errors: list[str] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.sync()
            except (OSError, ApiError, ValueError, KeyError) as exc:
                self.errors = [*self.errors[-9:], repr(exc)]

    def sync(self) -> None:
        pvs = self._api.get("/api/v1/persistentvolumes").get("items", [])
        existing = {pv["metadata"]["name"] for pv in pvs}
        for pv in pvs:
            self._maybe_delete(pv)
        for pvc in self._api.get("/api/v1/persistentvolumeclaims").get("items", []):
            spec = pvc.get("spec", {})
            if pvc.get("status", {}).get("phase") != "Pending" or spec.get("volumeName"):
                continue
            if spec.get("storageClassName") != STORAGE_CLASS or "deletionTimestamp" in pvc["metadata"]:
                continue
            name = f"pvc-{pvc['metadata']['uid']}"
            if name not in existing:
                self._provision(name, pvc)

    def _provision(self, name: str, pvc: JSON) -> None:
        meta, spec = pvc["metadata"], pvc["spec"]
        path = self._root / name
        path.mkdir(parents=True, exist_ok=True)
        storage = spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")
        body: JSON = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": name,
                "labels": {PROVISIONED_LABEL: "true"},
                "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER_NAME},
            },
            "spec": {
                "capacity": {"storage": storage},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": STORAGE_CLASS,
                "volumeMode": spec.get("volumeMode", "Filesystem"),
                "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        try:
            self._api.create("/api/v1/persistentvolumes", body)
        except ApiError as exc:
            if exc.status != 409:
                raise

    def _maybe_delete(self, pv: JSON) -> None:
        meta = pv["metadata"]
        if meta.get("labels", {}).get(PROVISIONED_LABEL) != "true" or "deletionTimestamp" in meta:
            return
        if pv.get("spec", {}).get("persistentVolumeReclaimPolicy") != "Delete":
            return
        if pv.get("status", {}).get("phase") not in ("Released", "Failed"):
            return
        try:
            self._api.delete(f"/api/v1/persistentvolumes/{meta['name']}")
        except ApiError as exc:
            if exc.status != 404:
                raise
        shutil.rmtree(self._root / meta["name"], ignore_errors=True)


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
