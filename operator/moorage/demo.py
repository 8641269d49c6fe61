"""`moorage demo`: the whole product on a laptop with no GPU.

A local control plane (built from Go modules on first use), a local hub serving a tiny model, the CRD, the
operator as a user runs it, and a model going Ready. As root on Linux the model runs for real: our images
(built with buildah) on a real node, pulled, and served on CPU by vLLM, which answers a chat completion.
Elsewhere the nodes are fake (kwok) and the demo says why.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from moorage.api.crd import crd
from moorage.devcluster import Cluster, build, wait_for
from moorage.devcluster.fakehub import TINY_MODEL, TINY_SERVABLE, FakeHub, default_hub
from moorage.devcluster.images import parse_build_listing

IMAGES_SCRIPT = Path(__file__).resolve().parents[2] / "images" / "build.sh"
"""Builds the operator, fine-tune and vLLM CPU images (a moorage checkout has it)."""
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
REAL_MODEL = {
    "apiVersion": "moorage.dev/v1alpha1",
    "kind": "OpenSourceModel",
    "metadata": {"name": "tiny-llama", "namespace": DEMO_NAMESPACE},
    "spec": {
        "source": {"uri": f"hf://{TINY_SERVABLE}"},
        "serving": {"gpus": 0, "vllm": {"maxModelLen": 128, "extraArgs": ["--enforce-eager"]}},
    },
}
"""On the real node: served on CPU by vLLM, really."""


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


def main(workdir: Path | None = None, keep: bool = True, real: bool | None = None) -> int:
    """real: True for the real node, False for fake nodes only, None to use the real node where it can."""
    try:
        if workdir is None:  # a throwaway directory, gone with the cluster
            with tempfile.TemporaryDirectory(prefix="moorage-demo-") as tmp:
                return _demo(Path(tmp), keep, real)
        workdir.mkdir(parents=True, exist_ok=True)
        return _demo(workdir, keep, real)
    except OperatorDiedError as error:
        print(f"moorage demo: {error}", file=sys.stderr)
        return 1


def _demo(workdir: Path, keep: bool, real: bool | None) -> int:
    why_not = real_node_unavailable()
    if real and why_not:
        print(f"moorage demo: no real node here: {why_not}", file=sys.stderr)
        return 1
    if real is None and why_not:
        print(f"moorage demo: the model will not really answer ({why_not}); fake nodes only")
    print(
        "moorage demo: building the test cluster (the first run compiles Kubernetes; later runs take seconds)"
    )
    build()
    if real is False or why_not:
        return _demo_fake(workdir, keep)
    return _demo_real(workdir, keep)


def _demo_fake(workdir: Path, keep: bool) -> int:
    print(f"moorage demo: starting etcd, kube-apiserver, controller-manager, scheduler and kwok in {workdir}")
    with stack(workdir) as (cluster, hub, operator):
        if not _apply_and_watch(cluster, hub, operator, DEMO_MODEL, timeout=180):
            return 1
        _stay(cluster, operator, keep)
    return 0


def _apply_and_watch(
    cluster: Cluster, hub: FakeHub, operator: OperatorProcess, model: dict[str, Any], timeout: float
) -> bool:
    """Applies the demo's model and shows it going Ready, then its children; False (and the operator's log)
    when it does not."""
    cluster.kubectl("create", "namespace", DEMO_NAMESPACE, check=True)
    cluster.apply(model)
    uri = model["spec"]["source"]["uri"]
    print(f"moorage demo: applied {DEMO_NAMESPACE}/tiny-llama, {uri} served by {hub.url}")
    if not _watch(cluster, "tiny-llama", timeout=timeout, operator=operator):
        print(f"moorage demo: the model did not become Ready; operator log:\n{operator.log()[-4000:]}")
        return False
    print(cluster.kubectl("get", "osm,deploy,svc,pvc,jobs,pods", "-n", DEMO_NAMESPACE, "-o", "wide").stdout)
    return True


def real_node_unavailable() -> str | None:
    """Why this machine cannot run the demo on a real node, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "a real node needs Linux"
    if os.geteuid() != 0:
        return "a real node (containerd, kubelet, iptables) needs root"
    if not IMAGES_SCRIPT.is_file():
        return f"{IMAGES_SCRIPT} is missing: run the demo from a moorage checkout"
    return None


def build_images() -> dict[str, tuple[str, Path]]:
    """images/build.sh (cached by content): name → (image reference, OCI archive)."""
    built = subprocess.run([str(IMAGES_SCRIPT)], capture_output=True, text=True, check=False)
    if built.returncode != 0:
        raise OperatorDiedError(f"images/build.sh failed:\n{built.stderr[-4000:]}")
    return parse_build_listing(built.stdout)


def _demo_real(workdir: Path, keep: bool) -> int:
    print("moorage demo: building our images with buildah (the first run takes about 15 minutes)")
    images = build_images()
    refs = {name: ref for name, (ref, _) in images.items()}
    print(f"moorage demo: starting the control plane, a real node and kwok GPU nodes in {workdir}")
    with Cluster.start(workdir / "cluster", gpu_nodes=1, real_node=True) as cluster:
        for ref, archive in images.values():
            print(f"moorage demo: loading {ref} into the node")
            cluster.load_image(archive)
        install_crd(cluster)
        with default_hub(host=cluster.host_address) as hub:
            operator = OperatorProcess(
                cluster,
                hub.url,
                workdir / "operator.log",
                f"--operator-image={refs['operator']}",
                f"--finetune-image={refs['finetune']}",
                f"--vllm-cpu-image={refs['vllm-cpu']}",
            )
            try:
                return _serve_for_real(cluster, hub, operator, keep)
            finally:
                operator.stop()


def _serve_for_real(cluster: Cluster, hub: FakeHub, operator: OperatorProcess, keep: bool) -> int:
    if not _apply_and_watch(cluster, hub, operator, REAL_MODEL, timeout=900):
        return 1
    with cluster.port_forward(DEMO_NAMESPACE, "svc/tiny-llama", 8000) as port:
        answer = chat(f"http://127.0.0.1:{port}", "tiny-llama", "Hello!")
        print(f"moorage demo: a real chat completion from vLLM through the model's Service:\n{answer}\n")
        print(
            "Ask it yourself (a random tiny model: expect nonsense, fast):\n"
            f"  export KUBECONFIG={cluster.kubeconfig}\n"
            f"  kubectl -n {DEMO_NAMESPACE} port-forward svc/tiny-llama 8000:8000 &\n"
            f"  curl -s localhost:8000/v1/chat/completions -H 'content-type: application/json' \\\n"
            """    -d '{"model": "tiny-llama", "messages": [{"role": "user", "content": "Hello!"}]}'\n"""
        )
    _stay(cluster, operator, keep)
    return 0


def chat(base: str, model: str, content: str) -> str:
    """One chat completion, as JSON text."""
    body = {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": content}]}
    request = urllib.request.Request(  # noqa: S310 - http to the demo's own port-forward
        f"{base}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
        return json.dumps(json.loads(response.read()), indent=2)


def _stay(cluster: Cluster, operator: OperatorProcess, keep: bool) -> None:
    if not keep:
        print("moorage demo: Ready; stopping (--exit).")
        return
    print(
        f"moorage demo: Ready. The cluster stays up until Ctrl-C:\n"
        f"  export KUBECONFIG={cluster.kubeconfig}\n  kubectl get osm -A\n"
        f"Operator log: {operator.log_path}",
        flush=True,
    )
    _wait_for_interrupt(operator)


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
