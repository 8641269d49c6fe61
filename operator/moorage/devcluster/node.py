"""One real node for the dev cluster: containerd, kubelet, kube-proxy and CoreDNS on this machine.

Next to the kwok GPU nodes, the real node runs pods for real: containerd v2
with runc and the CNI bridge (see ``hostnet.py``), a kubelet and kube-proxy
from the same Kubernetes build as the control plane, and CoreDNS serving
``cluster.local`` behind the usual ``kube-dns`` Service at 10.96.0.10. Its
images come from archives (:meth:`RealNode.load_image`); its own pause image
is written here.

Only one real node can run on a machine (fixed kubelet ports, the shared pod
cgroup, the bridge): :meth:`RealNode.prepare` takes a lock and fails clearly
otherwise. It also cleans up after a run that died without stopping, whose
node directory is named in the lock's state file.

Lifecycle: ``prepare()`` (lock, network: before the API server, which listens
on the host address) → ``start(...)`` (once the control plane is up) →
``stop()`` (also undoes ``prepare``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml

from moorage.devcluster import hostnet, images, nodeclean, nodeconfig
from moorage.devcluster.api import ApiClient, ApiError
from moorage.devcluster.pki import CertKey, write_kubeconfig
from moorage.devcluster.processes import Processes, free_port, wait_until

NODE_NAME = "real-node-0"
NODE_KIND_LABEL = "moorage.dev/node-kind"
INSTANCE_TYPE = "devcluster-cpu"

#: Where the lock and the state a crashed run needs for its cleanup live.
STATE_DIR = Path("/run/moorage")
_LOCK = "real-node.lock"
_STATE = "real-node.json"
_SYSCTLS = "real-node-sysctls.json"
_HOST_PATHS = "real-node-host-paths.json"


def default_image_store() -> Path:
    """containerd's root (images, unpacked layers) shared by the runs on this machine.

    Importing a multi-GB image takes minutes; kept here, it is imported once.
    Only one real node runs at a time (see :meth:`RealNode.prepare`), so one
    store is enough.
    """
    cache = os.environ.get("MOORAGE_CACHE_DIR") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "moorage"
    )
    return Path(cache) / "containerd"


class NodeError(RuntimeError):
    """The real node cannot run here, or failed to start."""


@dataclass(frozen=True)
class NodeCerts:
    """The certificates the node's components present to the API server."""

    ca: Path
    kubelet: CertKey
    kube_proxy: CertKey
    coredns: CertKey


def _ctr_available(ctr: list[str]) -> bool:
    return subprocess.run([*ctr, "version"], capture_output=True, timeout=10, check=False).returncode == 0


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - our own loopback endpoint
        return bool(resp.status == 200)


class RealNode:
    """The real node's processes and host state; see the module docstring for the lifecycle."""

    def __init__(
        self,
        node_dir: Path,
        logs_dir: Path,
        bin_dir: Path,
        node_bin_dir: Path,
        image_store: Path | None = None,
    ) -> None:
        self.dir = node_dir
        self.image_store = image_store if image_store is not None else node_dir / "containerd" / "root"
        self.logs_dir = logs_dir
        self.bin_dir = bin_dir
        self.node_bin_dir = node_bin_dir
        self.name = NODE_NAME
        self.host_address = hostnet.HOST_ADDRESS
        self.socket = node_dir / "containerd" / "containerd.sock"
        self.processes = Processes(logs_dir, node_dir)
        self.host_paths_before: dict[str, bool] = {}
        self.timings: dict[str, float] = {}
        self._lock_file: IO[str] | None = None
        self._prepared = False

    @property
    def ctr(self) -> list[str]:
        """The ``ctr`` command line that talks to this node's containerd."""
        return [str(self.node_bin_dir / "ctr"), "--address", str(self.socket)]

    # -- lifecycle ---------------------------------------------------------

    def prepare(self) -> None:
        """Take the machine-wide lock, clean up after a crashed run, set up the host network."""
        if os.geteuid() != 0:
            raise NodeError("the real node needs root (containerd, the kubelet, iptables)")
        self._lock_file = _lock()
        _recover()
        self.dir.mkdir(parents=True, exist_ok=True)
        (STATE_DIR / _STATE).write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "dir": str(self.dir),
                    "socket": str(self.socket),
                    "image_store": str(self.image_store),
                }
            )
        )
        self.host_paths_before = nodeclean.record_host_paths(STATE_DIR / _HOST_PATHS)
        self._prepared = True
        hostnet.setup(STATE_DIR / _SYSCTLS)

    def start(self, server: str, certs: NodeCerts, api: ApiClient, deadline: float) -> None:
        """Start containerd, the kubelet, kube-proxy and CoreDNS; return once the node runs pods."""
        started = time.monotonic()
        self._start_containerd(deadline)
        load = self.load_image(self._pause_archive())
        self.timings["pause_image_load_s"] = load.seconds
        self._start_kubelet(server, certs, deadline)
        self._start_kube_proxy(server, certs)
        dns_ready = self._start_dns(server, certs, api)
        self._wait("node Ready", deadline, lambda: self._node_ready(api), "kubelet")
        self._wait(
            "kube-proxy",
            deadline,
            lambda: _http_ok(f"http://{nodeconfig.KUBE_PROXY_HEALTHZ}/healthz"),
            "kube-proxy",
        )
        self._wait("CoreDNS", deadline, lambda: _http_ok(dns_ready), "coredns")
        self.timings["node_start_s"] = time.monotonic() - started

    def stop(self) -> None:
        """Stop every process, remove the node's traces from the host, release the lock. Idempotent."""
        for name in ("coredns", "kube-proxy", "kubelet"):
            self.processes.stop(name)
        if self._prepared:
            # Containers outlive the kubelet and containerd: kill them and
            # their shims first, so that containerd has nothing to restart,
            # then drop them from the image store, which the next run reuses.
            nodeclean.kill_containers(self.socket)
            if any(c.name == "containerd" for c in self.processes.components):
                nodeclean.forget_containers(self.ctr)
        self.processes.stop()
        if self._prepared:
            nodeclean.clean(self.dir, self.socket, STATE_DIR / _HOST_PATHS)
            nodeclean.unmount_all(self.image_store)
            hostnet.teardown(STATE_DIR / _SYSCTLS)
            with contextlib.suppress(FileNotFoundError):
                (STATE_DIR / _STATE).unlink()
            self._prepared = False
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def leftovers(self) -> list[str]:
        """Host state a stopped node should not have left (empty when its stop cleaned up)."""
        return nodeclean.leftovers(self.dir, self.socket, self.host_paths_before) + hostnet.leftovers()

    def load_image(self, archive: Path) -> images.LoadResult:
        """Import an OCI or docker archive into the node's containerd (``k8s.io``), unless already there."""
        return images.load_image(self.ctr, archive)

    # -- the components ------------------------------------------------------

    def _start_containerd(self, deadline: float) -> None:
        root = self.dir / "containerd"
        root.mkdir(parents=True, exist_ok=True)
        cni_dir = self.dir / "cni"
        (cni_dir / "net.d").mkdir(parents=True, exist_ok=True)
        (cni_dir / "net.d" / "10-moorage.conflist").write_text(
            json.dumps(hostnet.cni_config(cni_dir / "ipam"), indent=1)
        )
        config = root / "config.toml"
        config.write_text(
            nodeconfig.containerd(
                image_store=self.image_store,
                state=root / "state",
                opt=root / "opt",
                socket=self.socket,
                cni_conf_dir=cni_dir / "net.d",
            )
        )
        # The shim is found on PATH.
        env = {**os.environ, "PATH": f"{self.node_bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        self.processes.spawn(
            "containerd", [str(self.node_bin_dir / "containerd"), "--config", str(config)], env=env
        )
        self._wait("containerd", deadline, lambda: _ctr_available(self.ctr), "containerd")

    def _pause_archive(self) -> Path:
        return images.write_scratch_image(
            self.dir / "images" / "pause.tar",
            images.PAUSE_IMAGE,
            self.node_bin_dir / "pause",
            entrypoint=["/pause"],
        )

    def probe_archive(self) -> Path:
        """An OCI archive of :data:`images.PROBE_IMAGE` (``/probe``: serve, resolve, get, echo, sleep)."""
        return images.write_scratch_image(
            self.dir / "images" / "probe.tar",
            images.PROBE_IMAGE,
            self.node_bin_dir / "probe",
            entrypoint=["/probe"],
            cmd=["serve"],
        )

    def _start_kubelet(self, server: str, certs: NodeCerts, deadline: float) -> None:
        root = self.dir / "kubelet"
        root.mkdir(parents=True, exist_ok=True)
        kubeconfig = write_kubeconfig(
            self.dir / "kubelet.kubeconfig", server, certs.ca, f"system:node:{self.name}", certs.kubelet
        )
        # Pods' DNS comes from the cluster DNS only: the host's resolvers are
        # not theirs to use (nothing outside this machine is).
        resolv = self.dir / "resolv.conf"
        resolv.write_text("")
        config = self.dir / "kubelet.yaml"
        settings = nodeconfig.kubelet(
            address=self.host_address,
            socket=self.socket,
            ca=certs.ca,
            resolv_conf=resolv,
            pod_logs=self.dir / "pod-logs",
        )
        config.write_text(yaml.safe_dump(settings))
        labels = {
            NODE_KIND_LABEL: "cpu",
            "node.kubernetes.io/instance-type": INSTANCE_TYPE,
        }
        self.processes.spawn(
            "kubelet",
            [
                str(self.bin_dir / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={root}",
                f"--cert-dir={self.dir / 'kubelet-pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.host_address}",
                # Not a KubeletConfiguration field; the default is under /usr/libexec.
                f"--volume-plugin-dir={self.dir / 'volume-plugins'}",
                "--node-labels=" + ",".join(f"{k}={v}" for k, v in labels.items()),
                "--v=1",
            ],
        )

    def _start_kube_proxy(self, server: str, certs: NodeCerts) -> None:
        kubeconfig = write_kubeconfig(
            self.dir / "kube-proxy.kubeconfig", server, certs.ca, "system:kube-proxy", certs.kube_proxy
        )
        config = self.dir / "kube-proxy.yaml"
        settings = nodeconfig.kube_proxy(
            node_name=self.name, kubeconfig=kubeconfig, address=self.host_address
        )
        config.write_text(yaml.safe_dump(settings))
        self.processes.spawn("kube-proxy", [str(self.bin_dir / "kube-proxy"), f"--config={config}"])

    def _start_dns(self, server: str, certs: NodeCerts, api: ApiClient) -> str:
        """Start CoreDNS on the host address, point the ``kube-dns`` Service at it; return its ready URL."""
        kubeconfig = write_kubeconfig(
            self.dir / "coredns.kubeconfig", server, certs.ca, "devcluster-coredns", certs.coredns
        )
        ready_port = free_port()
        corefile = self.dir / "Corefile"
        corefile.write_text(
            nodeconfig.corefile(address=self.host_address, ready_port=ready_port, kubeconfig=kubeconfig)
        )
        self.processes.spawn("coredns", [str(self.node_bin_dir / "coredns"), "-conf", str(corefile)])
        self._create_dns_service(api)
        return f"http://127.0.0.1:{ready_port}/ready"

    def _create_dns_service(self, api: ApiClient) -> None:
        for path, body in nodeconfig.dns_objects(self.host_address):
            try:
                api.create(path, body)
            except ApiError as exc:
                if exc.status != 409:
                    raise

    # -- helpers ---------------------------------------------------------------

    def _wait(self, what: str, deadline: float, ready: Callable[[], bool], log_name: str) -> None:
        try:
            wait_until(
                ready,
                deadline=deadline,
                what=what,
                alive=self.processes.check_alive,
                log=self.logs_dir / f"{log_name}.log",
                errors=(OSError, ValueError, ApiError, subprocess.SubprocessError),
            )
        except TimeoutError as exc:
            raise NodeError(str(exc)) from exc

    def _node_ready(self, api: ApiClient) -> bool:
        node = api.get(f"/api/v1/nodes/{self.name}")
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in node.get("status", {}).get("conditions", [])
        )


def _holder() -> str:
    with contextlib.suppress(OSError, ValueError):
        state = json.loads((STATE_DIR / _STATE).read_text())
        return f"pid {state.get('pid')}, node directory {state.get('dir')}"
    return f"see {STATE_DIR / _LOCK}"


def _lock() -> IO[str]:
    """Take the machine-wide real node lock (held until the file is closed or the process ends)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    lock = (STATE_DIR / _LOCK).open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise NodeError(f"another real node runs on this machine: {_holder()}; stop it first") from None
    return lock


def _recover() -> bool:
    """Clean up after a run that died holding the node (its state file is still there); True if one did."""
    state_file = STATE_DIR / _STATE
    if not state_file.exists():
        return False
    with contextlib.suppress(OSError, ValueError, KeyError):
        state = json.loads(state_file.read_text())
        nodeclean.clean(Path(state["dir"]), Path(state["socket"]), STATE_DIR / _HOST_PATHS)
        nodeclean.unmount_all(Path(state["image_store"]))
    hostnet.teardown(STATE_DIR / _SYSCTLS)
    state_file.unlink()
    return True


def clean_after_crash() -> bool:
    """Remove what a real node that died without stopping left on this machine (its containers keep
    running until then); False if there was nothing to clean. NodeError while a real node runs."""
    if os.geteuid() != 0:
        raise NodeError("cleaning up after the real node needs root")
    lock = _lock()
    try:
        return _recover()
    finally:
        lock.close()
