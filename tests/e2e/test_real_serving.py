"""The product for real, on the dev cluster's real node: the chart installs our operator image, a model on
the local hub is pulled by `moorage pull` in a container, an adapter is trained by `moorage finetune` on CPU,
and vLLM's CPU build serves base and adapter behind the model's Service, through a rollout under traffic,
a broken revision that rolls back on its own, and a delete.

Images come from images/build.sh: $MOORAGE_IMAGES names a file holding its output (scripts/test.sh makes
it). The tests run in order, each on what the one before left: one model's life.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from moorage.api.layout import ADAPTER_FILES
from moorage.devcluster import Cluster, tinymodel, wait_for
from moorage.devcluster.fakehub import (
    DEMO_TOKEN,
    SERVABLE_SHAPE,
    TINY_DATASET,
    TINY_GATED,
    TINY_LORAS,
    TINY_SERVABLE,
    FakeHub,
    default_hub,
)
from moorage.devcluster.images import parse_build_listing
from moorage.plan.serving import TEMPLATE_HASH

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "serving"
SYSTEM = "moorage-system"
MODEL = "tiny"
ADAPTER = "tiny-support"
HUB_ADAPTERS = dict(zip(("tiny-hub-a", "tiny-hub-b"), TINY_LORAS, strict=True))
FIRST_HUB_ADAPTER = "tiny-hub-a"
"""LoRA adapters on the local hub, by the name each is served under (spec.adapters)."""
CLAIM_ADAPTER = "tiny-claim"
LORA_CLAIM, LORA_DIR = "team-loras", "tiny/v1"
"""An adapter on a PersistentVolumeClaim of the user's (spec.adapters: pvc://<claim>/<dir>)."""
ADAPTER_URIS = {name: f"hf://{repo}" for name, repo in HUB_ADAPTERS.items()} | {
    CLAIM_ADAPTER: f"pvc://{LORA_CLAIM}/{LORA_DIR}"
}
CHAT_SCRIPT = """
import json, sys, urllib.request as u
body = {"model": sys.argv[2], "max_tokens": 4, "messages": [{"role": "user", "content": "w4 w5"}]}
headers = {"Content-Type": "application/json"}
r = u.Request(sys.argv[1] + "/v1/chat/completions", json.dumps(body).encode(), headers)
print(u.urlopen(r, timeout=60).read().decode())
"""
Obj = dict[str, Any]


def _images() -> dict[str, tuple[str, Path]]:
    listing = os.environ.get("MOORAGE_IMAGES")
    if not listing:
        pytest.skip("set MOORAGE_IMAGES to a file holding images/build.sh's output (scripts/test.sh does)")
    images = parse_build_listing(Path(listing).read_text())
    missing = {"operator", "finetune", "vllm-cpu"} - set(images)
    if missing:
        pytest.fail(f"$MOORAGE_IMAGES lacks {sorted(missing)}: run images/build.sh")
    return images


@dataclass
class Product:
    cluster: Cluster
    hub: FakeHub
    images: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def get(self, *what: str, namespace: str = NAMESPACE) -> Any:
        return self.cluster.get_json(*what, "-n", namespace)

    def condition(self, type_: str) -> Obj:
        obj = self.get("osm", MODEL) or {}
        return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {})

    def apply_model(self, adapters: tuple[str, ...] = (FIRST_HUB_ADAPTER,), **serving: Any) -> None:
        self.cluster.apply(model_manifest(self.hub, adapters, **serving), namespace=NAMESPACE)

    def adapter_state(self, name: str) -> str | None:
        listed = (self.get("osm", MODEL).get("status") or {}).get("adapters") or []
        return next((a["state"] for a in listed if a["name"] == name), None)


def model_manifest(hub: FakeHub, adapters: tuple[str, ...], **serving: Any) -> Obj:
    vllm = {"maxModelLen": 128, "extraArgs": ["--enforce-eager", *serving.pop("extra", [])]}
    return {
        "apiVersion": "moorage.dev/v1alpha1",
        "kind": "OpenSourceModel",
        "metadata": {"name": MODEL},
        "spec": {
            "source": {"uri": f"hf://{TINY_SERVABLE}"},
            "serving": {"gpus": 0, "resources": {"cpu": "500m"}, "vllm": vllm, **serving},
            "fineTune": {
                "dataset": {"uri": f"hf://datasets/{TINY_DATASET}"},
                "adapterName": ADAPTER,
                "lora": {"r": 8},
                "training": {"maxSteps": 4, "batchSize": 2, "maxSeqLength": 64},
                "resources": {"gpus": 0, "cpu": "1", "memory": "3Gi"},
            },
            "adapters": [{"name": name, "uri": ADAPTER_URIS[name]} for name in adapters],
        },
    }


@pytest.fixture(scope="module")
def product(real_cluster: Cluster, helm: str) -> Iterator[Product]:
    with installed_product(real_cluster, helm) as running:
        yield running


@contextmanager
def installed_product(
    cluster: Cluster, helm: str, *, namespace: str = NAMESPACE, activator: bool = False, **operator: str
) -> Iterator[Product]:
    """Our images loaded into the real node, the local hub, the chart installed with them (``operator``:
    more of the chart's operator values; ``activator``: the chart's activator for scale to zero) and
    ``namespace`` created; all removed afterwards."""
    images = _images()
    started = time.monotonic()
    for _ref, archive in images.values():
        cluster.load_image(archive)
    timings = {"image_load_s": round(time.monotonic() - started, 1)}
    if cluster.node is not None:
        timings["node_start_s"] = round(cluster.node.timings["node_start_s"], 1)
    refs = {name: ref for name, (ref, _archive) in images.items()}
    with default_hub(host=cluster.host_address) as hub:
        repository, tag = refs["operator"].rsplit(":", 1)
        values = {
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "operator": {
                "finetuneImage": refs["finetune"],
                "vllmCpuImage": refs["vllm-cpu"],
                "hfEndpoint": hub.url,
                "logFormat": "plain",
                **operator,
            },
            "activator": {"enabled": activator},
        }
        values_file = cluster.workdir / "moorage-values.json"
        values_file.write_text(json.dumps(values))
        install = subprocess.run(
            [helm, "install", "moorage", str(REPO / "charts" / "moorage"), "-n", SYSTEM,
             "--create-namespace", "-f", str(values_file), "--kubeconfig", str(cluster.kubeconfig),
             "--wait", "--timeout", "3m"],
            capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip
        assert install.returncode == 0, install.stderr + _operator_log(cluster)
        cluster.kubectl("create", "namespace", namespace, check=True)
        running = Product(cluster, hub, refs, timings)
        try:
            yield running
        finally:
            print(f"\nreal serving timings: {json.dumps(running.timings)}")
            print(f"---- operator log (tail) ----\n{_operator_log(cluster)[-6000:]}")
            # The models go while their operator runs (it holds their finalizers); a model left for the
            # next install's operator would be reconciled, and counted, by it.
            cluster.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=180s", timeout=200)
            subprocess.run(
                # --wait: the next install in this cluster must not meet this one's pods still stopping.
                [helm, "uninstall", "moorage", "-n", SYSTEM, "--wait",
                 "--kubeconfig", str(cluster.kubeconfig)],
                capture_output=True, timeout=180, check=False,
            )  # fmt: skip


def _operator_log(cluster: Cluster) -> str:
    return cluster.kubectl("logs", "-n", SYSTEM, "deploy/moorage", "--tail=200").stdout


def test_the_operator_runs_from_the_chart_on_the_real_node(product: Product) -> None:
    (pod,) = product.get("pods", "-l", "app.kubernetes.io/name=moorage", namespace=SYSTEM)["items"]
    assert pod["spec"]["nodeName"] == product.cluster.cpu_nodes[0]
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["containers"][0]["image"] == product.images["operator"]
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0, _operator_log(product.cluster)


def test_pulls_trains_and_serves_on_cpu(product: Product) -> None:
    started = time.monotonic()
    product.apply_model()
    marks = {"WeightsReady": "pull_s", "FineTuned": "train_s", "Ready": "ready_s"}
    for type_, key in marks.items():
        wait_for(
            lambda type_=type_: product.condition(type_).get("status") == "True",  # type: ignore[misc]
            timeout=900,
            interval=2,
            what=f"{MODEL} {type_} (now: {product.condition('Ready')})",
        )
        product.timings[key] = round(time.monotonic() - started, 1)
    status = product.get("osm", MODEL)["status"]
    assert status["fineTune"]["servedModelName"] == ADAPTER
    pods = _serving_pods(product)
    assert [p["spec"]["nodeName"] for p in pods] == product.cluster.cpu_nodes
    container = pods[0]["spec"]["containers"][0]
    assert container["image"] == product.images["vllm-cpu"]
    assert "nvidia.com/gpu" not in container["resources"].get("requests", {})
    jobs = {j["metadata"]["labels"]["app.kubernetes.io/component"]: j for j in product.get("jobs")["items"]}
    assert jobs["weights"]["status"]["succeeded"] == 1 and jobs["finetune"]["status"]["succeeded"] == 1


def test_base_and_adapter_answer_through_the_service(product: Product) -> None:
    service = f"http://{MODEL}.{NAMESPACE}.svc.cluster.local:8000"
    pod = _serving_pods(product)[0]["metadata"]["name"]
    for name in (MODEL, ADAPTER):
        # From inside the cluster: a pod (the vLLM pod's own Python) through the Service's DNS name.
        result = product.cluster.kubectl(
            "exec", "-n", NAMESPACE, pod, "--", "python3", "-c", CHAT_SCRIPT, service, name, timeout=120
        )
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert answer["model"] == name and answer["choices"][0]["message"]["role"] == "assistant"

    with product.cluster.port_forward(NAMESPACE, f"svc/{MODEL}", 8000) as port:
        models = json.loads(_get(f"http://127.0.0.1:{port}/v1/models"))
        assert {MODEL, ADAPTER} <= {m["id"] for m in models["data"]}
        answer = _chat(f"http://127.0.0.1:{port}", ADAPTER)
        assert answer["model"] == ADAPTER


def _scrape(product: Product, namespace: str, service: str, port: int) -> dict[str, list[tuple[Obj, float]]]:
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    with product.cluster.port_forward(namespace, f"svc/{service}", port) as local:
        text = _get(f"http://127.0.0.1:{local}/metrics")
    samples: dict[str, list[tuple[Obj, float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_metrics_of_the_operator_and_of_vllm(product: Product) -> None:
    """The chart's metrics Service serves what the operator read of the real pull and training; the real
    vLLM serves every metric the dashboard and the autoscaler ask for."""
    ours = _scrape(product, SYSTEM, "moorage-metrics", 8081)
    model = {"namespace": NAMESPACE, "model": MODEL}
    assert [v for labels, v in ours["moorage_pulls_total"] if labels["result"] == "success"] == [1.0]
    assert ours["moorage_pull_bytes_total"][0][1] > 0
    assert ours["moorage_pull_rate_bytes_per_second_count"][0][1] == 1
    [loss] = [v for labels, v in ours["moorage_finetune_final_loss"] if labels == model]
    assert loss == product.get("osm", MODEL)["status"]["fineTune"]["finalLoss"]
    assert [v for labels, v in ours["moorage_model_ready_replicas"] if labels == model] == [1.0]
    product.timings["pull_bytes"] = ours["moorage_pull_bytes_total"][0][1]

    vllm = _scrape(product, NAMESPACE, MODEL, 8000)
    dashboard = json.loads((REPO / "charts" / "moorage" / "dashboards" / "moorage-model.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    wanted = {name for name in re.findall(r"vllm:[a-z_:]+", exprs)}
    assert wanted and wanted <= set(vllm), sorted(wanted - set(vllm))
    # The autoscaler's query selects vLLM's series by the served model name.
    assert any(labels.get("model_name") == MODEL for labels, _ in vllm["vllm:num_requests_waiting"])


def _put_lora_on_a_claim(product: Product) -> None:
    """The user's side: a claim with a PEFT LoRA directory on it, written by a Job of their own."""
    files = tinymodel.lora_files(SERVABLE_SHAPE, TINY_SERVABLE, seed=3)
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "tiny-lora-files"},
        "binaryData": {name: base64.b64encode(files[name]).decode() for name in ADAPTER_FILES},
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": LORA_CLAIM},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}},
    }
    writer = {
        "name": "put",
        "image": product.images["operator"],
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", f"mkdir -p /claim/{LORA_DIR} && cp /files/* /claim/{LORA_DIR}/"],
        "volumeMounts": [{"name": "claim", "mountPath": "/claim"}, {"name": "files", "mountPath": "/files"}],
    }
    volumes = [
        {"name": "claim", "persistentVolumeClaim": {"claimName": LORA_CLAIM}},
        {"name": "files", "configMap": {"name": "tiny-lora-files"}},
    ]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "put-lora"},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "containers": [writer], "volumes": volumes}},
        },
    }
    product.cluster.apply(configmap, claim, job, namespace=NAMESPACE)
    wait_for(
        lambda: (product.get("job", "put-lora").get("status") or {}).get("succeeded") == 1,
        timeout=180,
        interval=1,
        what="the LoRA files written onto the claim",
    )


def test_adapters_come_and_go_without_a_restart(product: Product) -> None:
    """spec.adapters: one pulled from the hub answers beside the trained one; a second from the hub and a
    third from a claim are added and answer, the first removed stops answering, and no serving pod
    restarted or was replaced."""
    first, second = HUB_ADAPTERS
    base = _service_address(product)
    before = _pod_lives(product)
    assert product.adapter_state(first) == "Served"
    assert _chat(base, first)["model"] == first
    _put_lora_on_a_claim(product)

    started = time.monotonic()
    product.apply_model(adapters=(first, second, CLAIM_ADAPTER))
    for added in (second, CLAIM_ADAPTER):
        wait_for(
            lambda added=added: product.adapter_state(added) == "Served",  # type: ignore[misc]
            timeout=300,
            interval=1,
            what=f"{added} served",
        )
    assert _chat(base, second)["model"] == second
    assert _chat(base, CLAIM_ADAPTER)["model"] == CLAIM_ADAPTER
    product.timings["adapter_added_to_first_answer_s"] = round(time.monotonic() - started, 1)
    listed = {a["name"]: a for a in product.get("osm", MODEL)["status"]["adapters"]}
    assert re.fullmatch("[0-9a-f]{64}", listed[CLAIM_ADAPTER]["digest"]), listed
    assert "revision" not in listed[CLAIM_ADAPTER]
    assert (listed[ADAPTER]["fineTune"], listed[ADAPTER]["state"]) == (True, "Served")
    serving = _serving_pods(product)[0]["spec"]["volumes"]
    assert LORA_CLAIM not in {v.get("persistentVolumeClaim", {}).get("claimName") for v in serving}

    product.apply_model(adapters=(second, CLAIM_ADAPTER))
    wait_for(lambda: product.adapter_state(first) is None, timeout=300, interval=1, what=f"{first} unloaded")
    with pytest.raises(urllib.error.HTTPError) as refused:
        _chat(base, first)
    assert refused.value.code == 404, refused.value.read()
    assert _chat(base, second)["model"] == second
    assert _chat(base, CLAIM_ADAPTER)["model"] == CLAIM_ADAPTER
    assert _chat(base, ADAPTER)["model"] == ADAPTER
    assert _pod_lives(product) == before, "an adapter change restarted or replaced a serving pod"


def test_a_spec_change_rolls_out_under_traffic_without_failed_requests(product: Product) -> None:
    address = _service_address(product)
    traffic = Traffic(address)
    traffic.start()
    try:
        wait_for(lambda: traffic.ok >= 3, timeout=60, what="traffic flowing before the rollout")
        started = time.monotonic()
        product.apply_model(extra=["--max-num-seqs", "8"])
        wait_for(lambda: _rolled_out(product, "--max-num-seqs"), timeout=600, interval=2, what="the rollout")
        product.timings["rollout_s"] = round(time.monotonic() - started, 1)
    finally:
        traffic.stop()
    product.timings["rollout_requests_ok"] = traffic.ok
    product.timings["rollout_requests_failed"] = len(traffic.failures)
    print(f"\nrollout under traffic: {traffic.ok} requests answered, {len(traffic.failures)} failed")
    assert traffic.failures == [], traffic.failures[:5]


def test_a_broken_revision_rolls_back_on_its_own_under_traffic(product: Product) -> None:
    """vLLM refuses an unknown flag: the new pod crash-loops, the operator restores the last Ready revision
    by itself while the old replica keeps answering, and says why."""
    address = _service_address(product)
    good = product.get("deploy", MODEL)["metadata"]["annotations"][TEMPLATE_HASH]
    traffic = Traffic(address)
    traffic.start()
    try:
        wait_for(lambda: traffic.ok >= 3, timeout=60, what="traffic flowing before the broken rollout")
        started = time.monotonic()
        product.apply_model(extra=["--max-num-seqs", "8", "--no-such-vllm-flag"])

        def rolled_back() -> Obj | None:
            stalled = product.condition("Stalled")
            return stalled if stalled.get("reason") == "RolledBack" else None

        stalled = wait_for(rolled_back, timeout=600, interval=1, what="the model to roll back on its own")
        product.timings["rollback_decided_s"] = round(time.monotonic() - started, 1)

        def restored() -> bool:
            pods = _serving_pods(product)
            hashes = {p["metadata"]["annotations"].get(TEMPLATE_HASH) for p in pods}
            deployment = product.get("deploy", MODEL)["metadata"]["annotations"][TEMPLATE_HASH]
            return deployment == good and hashes == {good}

        wait_for(restored, timeout=300, interval=1, what="only the good revision's pod left")
        product.timings["rollback_s"] = round(time.monotonic() - started, 1)
        ok = traffic.ok
        wait_for(lambda: traffic.ok >= ok + 3, timeout=60, what="traffic still answered after the rollback")
    finally:
        traffic.stop()
    product.timings["rollback_requests_ok"] = traffic.ok
    product.timings["rollback_requests_failed"] = len(traffic.failures)
    timings = product.timings
    print(
        f"\nrollback under traffic: decided after {timings['rollback_decided_s']}s, the old revision alone "
        f"after {timings['rollback_s']}s; {traffic.ok} requests answered, {len(traffic.failures)} failed"
    )
    assert "no-such-vllm-flag" in stalled["message"] or "exited with code" in stalled["message"], stalled
    status = product.get("osm", MODEL)["status"]
    assert status["failedRevision"]["reason"] == "CrashLoopBackOff"
    assert status["lastReadyRevision"]["templateHash"] == good == status["revision"]["templateHash"]
    assert product.condition("Available").get("status") == "True", "the old replica kept serving"
    assert traffic.failures == [], traffic.failures[:5]


def test_a_gated_model_resolves_and_pulls_with_its_token_in_jobs(product: Product) -> None:
    """The operator cannot read Secrets: the resolve and pull Jobs get the token through the kubelet. It
    serves on the kwok GPU node beside the real one (no vLLM needed to prove the hub part)."""
    name, job_env = "gated", "HF_TOKEN"
    gated = {
        "apiVersion": "moorage.dev/v1alpha1",
        "kind": "OpenSourceModel",
        "metadata": {"name": name},
        "spec": {"source": {"uri": f"hf://{TINY_GATED}", "tokenSecretRef": {"name": "hf"}}},
    }

    def condition(type_: str) -> Obj:
        obj = product.get("osm", name) or {}
        return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {})

    def reason(type_: str, wanted: str) -> Obj | None:
        found = condition(type_)
        return found if found.get("reason") == wanted and found.get("status") in {"True", "False"} else None

    product.cluster.apply(gated, namespace=NAMESPACE)
    missing = wait_for(
        lambda: reason("Ready", "TokenSecretNotFound"), timeout=120, what="TokenSecretNotFound"
    )
    assert (
        missing["message"] == f"spec.source.tokenSecretRef: Secret 'hf' not found in namespace {NAMESPACE!r}"
    )

    def secret(token: str) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "hf"},
            "stringData": {"token": token},
        }

    product.cluster.apply(secret("hf_not_granted"), namespace=NAMESPACE)
    denied = wait_for(lambda: reason("Stalled", "AccessDenied"), timeout=120, what="AccessDenied")
    assert "kubectl delete job" in denied["message"], denied
    # Access granted: the documented way to resolve again.
    product.cluster.apply(secret(DEMO_TOKEN), namespace=NAMESPACE)
    (job,) = [
        j["metadata"]["name"]
        for j in product.get("jobs", "-l", f"moorage.dev/model={name}")["items"]
        if j["metadata"]["labels"]["app.kubernetes.io/component"] == "resolve"
    ]
    product.cluster.kubectl("delete", "job", job, "-n", NAMESPACE, check=True)
    wait_for(lambda: condition("Ready").get("status") == "True", timeout=300, interval=2,
             what=f"{name} Ready (now: {condition('Ready')})")  # fmt: skip
    status = product.get("osm", name)["status"]
    assert len(status["resolvedRevision"]) == 40 and status["weights"]["bytes"] > 0
    everything = product.cluster.kubectl(
        "get", "osm,deploy,jobs,events,pods", "-n", NAMESPACE, "-o", "yaml", check=True
    ).stdout
    assert DEMO_TOKEN not in everything and job_env in everything
    assert DEMO_TOKEN not in _operator_log(product.cluster)
    product.cluster.kubectl("delete", "osm", name, "-n", NAMESPACE, "--wait=true", check=True, timeout=120)


def test_delete_removes_every_child(product: Product) -> None:
    product.cluster.kubectl("delete", "osm", MODEL, "-n", NAMESPACE, "--wait=true", check=True, timeout=120)

    def gone() -> bool:
        left = product.get("deploy,svc,jobs,pvc,pods", "-l", f"moorage.dev/model={MODEL}")["items"]
        claims = product.get("pvc", "-l", "moorage.dev/weights")["items"]
        return not left and not claims

    wait_for(gone, timeout=180, interval=2, what="every child of the model gone")


# ---- helpers


def _serving_pods(product: Product) -> list[Obj]:
    selector = f"moorage.dev/model={MODEL},app.kubernetes.io/component=serving"
    pods = product.get("pods", "-l", selector)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def _pod_lives(product: Product) -> dict[str, int]:
    """Each serving pod's uid and its containers' restarts: equal before and after, nothing restarted."""
    return {
        p["metadata"]["uid"]: sum(c.get("restartCount", 0) for c in p["status"].get("containerStatuses", []))
        for p in _serving_pods(product)
    }


def _rolled_out(product: Product, flag: str) -> bool:
    deployment = product.get("deploy", MODEL)
    pods = _serving_pods(product)
    return (
        product.condition("Ready").get("status") == "True"
        and flag in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        and len(pods) == 1
        and flag in pods[0]["spec"]["containers"][0]["args"]
    )


def _service_address(product: Product) -> str:
    service = product.get("svc", MODEL)
    return f"http://{service['spec']['clusterIP']}:8000"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return str(response.read().decode())


def _chat(base: str, model: str, timeout: float = 60) -> Obj:
    body = {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "w4 w5"}]}
    request = urllib.request.Request(
        f"{base}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return dict(json.loads(response.read()))


class Traffic:
    """One client sending chat completions back to back through the Service, counting what fails."""

    def __init__(self, base: str, limit_s: float = 900) -> None:
        self.base, self.deadline = base, time.monotonic() + limit_s
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(90)

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            try:
                _chat(self.base, MODEL)
                self.ok += 1
            except (OSError, urllib.error.URLError, ValueError) as error:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {type(error).__name__}: {error}")
            time.sleep(0.2)
