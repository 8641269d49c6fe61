"""`moorage demo`: the whole product on a laptop with no GPU.

A local control plane with fake GPU nodes (built from Go modules on first use), a local hub serving a tiny
model, the CRD, the operator as a user runs it, and an example model going Ready.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from moorage.api.crd import crd
from moorage.devcluster import Cluster, build, wait_for
from moorage.devcluster.fakehub import TINY_MODEL, FakeHub, default_hub

DEMO_NAMESPACE = "demo"
DEMO_MODEL = {
    "apiVersion": "moorage.dev/v1alpha1",
    "kind": "OpenSourceModel",
    "metadata": {"name": "tiny-llama", "namespace": DEMO_NAMESPACE},
    "spec": {
        "source": {"uri": f"hf://{TINY_MODEL}", "revision": "main"},
        "serving": {"replicas": 2, "gpus": 1, "vllm": {"maxModelLen": 2048}},
    },
}


class OperatorProcess:
    """`moorage run` in a child process, as a user runs it, its log in a file.

    It talks to the cluster as admin unless `kubeconfig` names another (e.g. a ServiceAccount's token).
    """

    def __init__(
        self,
        cluster: Cluster,
        hub_url: str,
        log_path: Path,
        *extra: str,
        kubeconfig: Path | None = None,
        wrapper: Sequence[str] = (),
        env: Mapping[str, str | None] | None = None,
    ) -> None:
        """`wrapper` goes before the command (e.g. to run it as another user); `env` adds to, or with
        None removes from, the cluster's environment."""
        self.log_path = log_path
        self._log = log_path.open("ab")
        command = [*wrapper, sys.executable, "-m", "moorage.cli", "run", "--hf-endpoint", hub_url, *extra]
        changes = {"PYTHONUNBUFFERED": "1", **(env or {})}
        env_ = {k: v for k, v in {**cluster.env(), **changes}.items() if v is not None}
        if kubeconfig is not None:
            env_["KUBECONFIG"] = str(kubeconfig)
        package_root = str(Path(__file__).parents[1])
        env_["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env_.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(command, env=env_, stdout=self._log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def install_crd(cluster: Cluster) -> None:
    cluster.apply(crd())
    wait_for(
        lambda: (
            cluster.kubectl("get", "crd", "opensourcemodels.moorage.dev", "-o", "name").returncode == 0
            and cluster.kubectl("get", "osm", "-A").returncode == 0
        ),
        what="the CRD to be served",
    )


@contextmanager
def stack(workdir: Path, gpu_nodes: int = 2) -> Iterator[tuple[Cluster, FakeHub, OperatorProcess]]:
    """Cluster, hub and operator, stopped in reverse order whatever happens."""
    with Cluster.start(workdir / "cluster", gpu_nodes=gpu_nodes) as cluster, default_hub() as hub:
        install_crd(cluster)
        operator = OperatorProcess(cluster, hub.url, workdir / "operator.log")
        try:
            yield cluster, hub, operator
        finally:
            operator.stop()


class OperatorDiedError(Exception):
    """The demo's operator process ended: the demo cannot go on."""


def _check_alive(operator: OperatorProcess) -> None:
    code = operator.process.poll()
    if code is not None:
        raise OperatorDiedError(f"the operator exited with status {code}; its log:\n{operator.log()[-4000:]}")


def _watch(cluster: Cluster, name: str, timeout: float, operator: OperatorProcess) -> bool:
    """Prints `kubectl get osm` lines as they change until the model is Ready; False on timeout."""
    last = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check_alive(operator)
        table = cluster.kubectl("get", "osm", name, "-n", DEMO_NAMESPACE, "-o", "wide").stdout.strip()
        lines = table.splitlines()
        if lines and table != last:
            print(lines[-1] if last else table, flush=True)
            last = table
        ready = cluster.kubectl(
            "get",
            "osm",
            name,
            "-n",
            DEMO_NAMESPACE,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        ).stdout
        if ready == "True":
            return True
        time.sleep(1)
    return False


def main(workdir: Path | None = None, keep: bool = True) -> int:
    try:
        if workdir is None:  # a throwaway directory, gone with the cluster
            with tempfile.TemporaryDirectory(prefix="moorage-demo-") as tmp:
                return _demo(Path(tmp), keep)
        workdir.mkdir(parents=True, exist_ok=True)
        return _demo(workdir, keep)
    except OperatorDiedError as error:
        print(f"moorage demo: {error}", file=sys.stderr)
        return 1


def _demo(workdir: Path, keep: bool) -> int:
    print(
        "moorage demo: building the test cluster (the first run compiles Kubernetes; later runs take seconds)"
    )
    build()
    print(f"moorage demo: starting etcd, kube-apiserver, controller-manager, scheduler and kwok in {workdir}")
    with stack(workdir) as (cluster, hub, operator):
        cluster.kubectl("create", "namespace", DEMO_NAMESPACE, check=True)
        cluster.apply(DEMO_MODEL)
        print(f"moorage demo: applied {DEMO_NAMESPACE}/tiny-llama, hf://{TINY_MODEL} served by {hub.url}")
        if not _watch(cluster, "tiny-llama", timeout=180, operator=operator):
            print(f"moorage demo: the model did not become Ready; operator log:\n{operator.log()[-4000:]}")
            return 1
        print(cluster.kubectl("get", "osm,deploy,svc,pvc,jobs,pods", "-n", DEMO_NAMESPACE).stdout)
        if keep:
            print(
                f"moorage demo: Ready. The cluster stays up until Ctrl-C:\n"
                f"  export KUBECONFIG={cluster.kubeconfig}\n  kubectl get osm -A\n"
                f"Operator log: {operator.log_path}",
                flush=True,
            )
            _wait_for_interrupt(operator)
        else:
            print("moorage demo: Ready; stopping (--exit).")
    return 0


def _wait_for_interrupt(operator: OperatorProcess) -> None:
    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Set SIGINT too: a demo started in the background inherits it ignored, and Ctrl-C must still work.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while True:
            _check_alive(operator)
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nmoorage demo: stopping")
