"""The operator as a user runs it (`moorage run`), against the real control plane and fake GPU nodes."""

import asyncio
import base64
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gitops import assert_no_gitops_drift
from lightkube import AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.core_v1 import Service
from prometheus_client.parser import text_string_to_metric_families

from moorage.activator.gate import ModelKey
from moorage.activator.kube import KubeCluster
from moorage.api.activation import Hold
from moorage.cli import dump, load_models, render
from moorage.demo import OperatorProcess, install_crd
from moorage.devcluster import ADMIN_USER, Cluster, wait_for
from moorage.devcluster.fakehub import (
    TINY_DATASET,
    TINY_GATED,
    TINY_LORAS,
    TINY_MODEL,
    TINY_REMOTE_CODE,
    FakeHub,
    commit_sha,
    default_hub,
)
from moorage.devcluster.gateway import GatewayCrds
from moorage.devcluster.kwok_stages import CRASH_LOOP_ARG, NEVER_READY_ARG
from moorage.devcluster.tinymodel import model_files
from moorage.plan.config import PlanConfig
from moorage.plan.serving import TEMPLATE_HASH

Obj = dict[str, Any]
TIMEOUT = 60.0


@pytest.fixture(scope="session")
def hub() -> Iterator[FakeHub]:
    with default_hub() as running:
        yield running


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Running:
    """The operator process of the session; a test may restart it. It always serves its metrics."""

    def __init__(self, cluster: Cluster, hub: FakeHub, log: Path) -> None:
        self.cluster, self.hub, self.log_path = cluster, hub, log
        self.metrics_port = free_port()
        self.process = OperatorProcess(cluster, hub.url, log, *self._metrics())

    def _metrics(self) -> tuple[str, ...]:
        return ("--metrics-port", str(self.metrics_port), "--metrics-address", "127.0.0.1")

    def restart(self, *extra: str, **options: Any) -> None:
        """Another `moorage run`, with extra arguments and OperatorProcess options (none: as at start)."""
        self.process.stop()
        self.process = OperatorProcess(
            self.cluster, self.hub.url, self.log_path, *self._metrics(), *extra, **options
        )

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """What a Prometheus scrape of the operator gets: sample name → (labels, value) of each series."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((sample.labels, sample.value))
        return samples


# Module scope: the operator must be gone before test_rbac.py runs one of its own on the same cluster.
@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, hub: FakeHub, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Running]:
    install_crd(cluster)
    running = Running(cluster, hub, tmp_path_factory.mktemp("operator") / "operator.log")
    try:
        yield running
    finally:
        running.process.stop()
        if request.session.testsfailed:
            print(f"\n---- operator log (tail of {running.log_path}) ----\n{running.process.log()[-8000:]}")


def model(name: str, uri: str = f"hf://{TINY_MODEL}", **spec: Any) -> Obj:
    return {
        "apiVersion": "moorage.dev/v1alpha1",
        "kind": "OpenSourceModel",
        "metadata": {"name": name},
        "spec": {"source": {"uri": uri}, **spec},
    }


def get(cluster: Cluster, namespace: str, *what: str) -> Any:
    return cluster.get_json(*what, "-n", namespace)


def condition(cluster: Cluster, namespace: str, name: str, type_: str) -> Obj | None:
    obj = get(cluster, namespace, "osm", name) or {}
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None)


def wait_condition(
    cluster: Cluster,
    namespace: str,
    name: str,
    type_: str,
    status: str = "True",
    reason: str | None = None,
    timeout: float = TIMEOUT,
) -> Obj:
    def check() -> Obj | None:
        found = condition(cluster, namespace, name, type_)
        if found and found["status"] == status and (reason is None or found["reason"] == reason):
            return found
        return None

    return wait_for(check, timeout=timeout, what=f"{name}: {type_}={status} {reason or ''}")


def ready_pods(cluster: Cluster, namespace: str, name: str) -> list[Obj]:
    pods = get(
        cluster, namespace, "pods", "-l", f"moorage.dev/model={name},app.kubernetes.io/component=serving"
    )
    return [
        p
        for p in pods["items"]
        if not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    ]


def test_model_goes_ready(cluster: Cluster, operator: Running, namespace: str) -> None:
    cluster.apply(model("tiny", serving={"replicas": 2}), namespace=namespace)
    wait_condition(cluster, namespace, "tiny", "Ready")

    claims = get(cluster, namespace, "pvc", "-l", "moorage.dev/weights")["items"]
    assert len(claims) == 1 and claims[0]["status"]["phase"] == "Bound"
    jobs = get(cluster, namespace, "jobs", "-l", "moorage.dev/model=tiny")["items"]
    assert [j["status"].get("succeeded") for j in jobs] == [1]
    deployment = get(cluster, namespace, "deployment", "tiny")
    assert deployment["status"]["readyReplicas"] == 2
    pods = ready_pods(cluster, namespace, "tiny")
    assert {p["spec"]["nodeName"] for p in pods} <= set(cluster.gpu_nodes)
    service = get(cluster, namespace, "service", "tiny")
    assert service["spec"]["ports"][0]["port"] == 8000
    budget = get(cluster, namespace, "pdb", "tiny")
    assert budget["spec"]["maxUnavailable"] == 1 and budget["status"]["expectedPods"] == 2

    status = get(cluster, namespace, "osm", "tiny")["status"]
    assert status["readyReplicas"] == 2 and len(status["resolvedRevision"]) == 40
    assert status["endpoint"] == f"http://tiny.{namespace}.svc.cluster.local:8000/v1"
    assert status["weights"]["claim"] == claims[0]["metadata"]["name"]
    waited = cluster.kubectl("wait", "--for=condition=Ready", "osm/tiny", "-n", namespace, "--timeout=10s")
    assert waited.returncode == 0, waited.stderr

    table = cluster.kubectl("get", "osm", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "MODEL", "REVISION", "READY", "REPLICAS", "ENDPOINT", "AGE"]
    assert table[1].split()[:5] == ["tiny", f"hf://{TINY_MODEL}", status["resolvedRevision"], "True", "2"]

    events = get(cluster, namespace, "events", "--field-selector", "involvedObject.name=tiny")["items"]
    assert {"WeightsPulled", "Deploying", "Ready"} <= {e["reason"] for e in events}


def test_scale_subresource(cluster: Cluster, operator: Running, namespace: str) -> None:
    cluster.apply(model("scaled"), namespace=namespace)
    wait_condition(cluster, namespace, "scaled", "Ready")
    assert get(cluster, namespace, "pdb", "scaled") is None, "one replica: no budget to block a drain"
    scaled = cluster.kubectl("scale", "osm/scaled", "--replicas=3", "-n", namespace)
    assert scaled.returncode == 0, scaled.stderr
    wait_for(lambda: len(ready_pods(cluster, namespace, "scaled")) == 3, timeout=TIMEOUT, what="3 ready pods")
    wait_for(
        lambda: get(cluster, namespace, "osm", "scaled")["status"].get("readyReplicas") == 3,
        timeout=TIMEOUT,
        what="status.readyReplicas == 3",
    )
    path = f"/apis/moorage.dev/v1alpha1/namespaces/{namespace}/opensourcemodels/scaled/scale"
    scale = json.loads(cluster.kubectl("get", "--raw", path, check=True).stdout)
    assert scale["status"]["replicas"] == 3
    assert "moorage.dev/model=scaled" in scale["status"]["selector"]
    assert get(cluster, namespace, "pdb", "scaled") is not None
    reasons = {
        e["reason"]
        for e in get(cluster, namespace, "events", "--field-selector", "involvedObject.name=scaled")["items"]
    }
    assert "Scaled" in reasons and "RolloutStarted" not in reasons, reasons
    cluster.kubectl("scale", "osm/scaled", "--replicas=1", "-n", namespace, check=True)
    wait_for(
        lambda: get(cluster, namespace, "pdb", "scaled") is None, timeout=TIMEOUT, what="the budget removed"
    )


def test_spec_change_rolls_the_deployment(cluster: Cluster, operator: Running, namespace: str) -> None:
    cluster.apply(model("rolled", serving={"vllm": {"maxModelLen": 1024}}), namespace=namespace)
    wait_condition(cluster, namespace, "rolled", "Ready")
    before = get(cluster, namespace, "deployment", "rolled")
    cluster.apply(model("rolled", serving={"vllm": {"maxModelLen": 2048}}), namespace=namespace)

    def rolled() -> bool:
        deployment = get(cluster, namespace, "deployment", "rolled")
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        return args[args.index("--max-model-len") + 1] == "2048"

    wait_for(rolled, timeout=TIMEOUT, what="new args in the Deployment")
    after = get(cluster, namespace, "deployment", "rolled")
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    assert after["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    osm = get(cluster, namespace, "osm", "rolled")
    wait_for(
        lambda: (
            (c := condition(cluster, namespace, "rolled", "Ready")) is not None
            and c["status"] == "True"
            and c["observedGeneration"] == osm["metadata"]["generation"]
        ),
        timeout=TIMEOUT,
        what="Ready again",
    )
    events = get(cluster, namespace, "events", "--field-selector", "involvedObject.name=rolled")["items"]
    assert "RolloutStarted" in {e["reason"] for e in events}


def test_delete_removes_every_child(cluster: Cluster, operator: Running, namespace: str) -> None:
    cluster.apply(model("gone"), namespace=namespace)
    wait_condition(cluster, namespace, "gone", "Ready")
    assert cluster.kubectl("delete", "osm", "gone", "-n", namespace, "--wait=true").returncode == 0

    def nothing_left() -> bool:
        found = [
            get(cluster, namespace, kind, "-l", selector)["items"]
            for kind, selector in (
                ("deployments,jobs,services", "moorage.dev/model=gone"),
                ("pvc", "moorage.dev/weights"),
            )
        ]
        return not any(found)

    wait_for(nothing_left, timeout=TIMEOUT, what="garbage collection of the children")


def test_shared_weights_volume(cluster: Cluster, operator: Running, namespace: str) -> None:
    cluster.apply(model("first"), model("second"), namespace=namespace)
    wait_condition(cluster, namespace, "first", "Ready")
    wait_condition(cluster, namespace, "second", "Ready")
    claims = get(cluster, namespace, "pvc", "-l", "moorage.dev/weights")["items"]
    assert len(claims) == 1
    assert {o["name"] for o in claims[0]["metadata"]["ownerReferences"]} == {"first", "second"}
    cluster.kubectl("delete", "osm", "first", "-n", namespace, check=True)

    def owners() -> list[str]:
        (claim,) = get(cluster, namespace, "pvc", "-l", "moorage.dev/weights")["items"]
        return [o["name"] for o in claim["metadata"]["ownerReferences"]]

    wait_for(lambda: owners() == ["second"], timeout=TIMEOUT, what="the garbage collector to drop 'first'")
    cluster.kubectl("delete", "osm", "second", "-n", namespace, check=True)
    wait_for(
        lambda: not get(cluster, namespace, "pvc", "-l", "moorage.dev/weights")["items"],
        timeout=TIMEOUT,
        what="the volume to go with its last owner",
    )


def test_new_revision_rolls_and_releases_the_old_volume(
    cluster: Cluster, operator: Running, namespace: str, hub: FakeHub
) -> None:
    files = model_files()
    hub.add_repo("e2e/moving", files)
    changed = {**files, "generation_config.json": b'{"temperature": 0.2}'}
    newer = hub.add_repo("e2e/moving", changed, revisions={"v2": commit_sha(changed)})
    cluster.apply(model("moving", uri="hf://e2e/moving"), namespace=namespace)
    wait_condition(cluster, namespace, "moving", "Ready")
    first = get(cluster, namespace, "osm", "moving")["status"]
    moved = model("moving", uri="hf://e2e/moving")
    moved["spec"]["source"]["revision"] = "v2"
    cluster.apply(moved, namespace=namespace)

    def switched() -> bool:
        status = get(cluster, namespace, "osm", "moving")["status"]
        ready = condition(cluster, namespace, "moving", "Ready")
        return status.get("servingRevision") == newer and ready is not None and ready["status"] == "True"

    wait_for(switched, timeout=TIMEOUT, what="serving the new revision")
    assert get(cluster, namespace, "osm", "moving")["status"]["weights"]["claim"] != first["weights"]["claim"]
    wait_for(
        lambda: get(cluster, namespace, "pvc", first["weights"]["claim"]) is None,
        timeout=TIMEOUT,
        what="the old volume released",
    )


def test_model_names_that_cannot_name_a_service_are_refused(
    cluster: Cluster, operator: Running, namespace: str
) -> None:
    body = json.dumps(model("7b-chat"))
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=body)
    assert result.returncode != 0 and "metadata.name must be a DNS label" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"source": {"uri": "s3://bucket/model"}}, "must be hf://<org>/<name>"),
        (
            {
                "source": {"uri": f"hf://{TINY_MODEL}"},
                "serving": {"rollout": {"maxSurge": 0, "maxUnavailable": 0}},
            },
            "maxSurge and maxUnavailable must not both be 0",
        ),
        (
            {
                "source": {"uri": f"hf://{TINY_MODEL}"},
                "serving": {"gpus": 2, "vllm": {"tensorParallelSize": 4}},
            },
            "tensorParallelSize cannot exceed gpus",
        ),
        ({"source": {"uri": f"hf://{TINY_MODEL}"}, "serving": {"gpus": -1}}, "spec.serving.gpus"),
        (
            {"source": {"uri": f"hf://{TINY_MODEL}"}, "serving": {"vllm": {"extraArgs": ["--port=9000"]}}},
            "extraArgs must not set --port",
        ),
        (
            {
                "source": {"uri": f"hf://{TINY_MODEL}"},
                "serving": {"vllm": {"extraArgs": ["--enable-prefix-caching", "--served-model-name", "x"]}},
            },
            "use vllm.servedModelName",
        ),
        (
            {"source": {"uri": f"hf://{TINY_MODEL}"}, "serving": {"gpus": 0, "gpuProfile": "nvidia-l4"}},
            "gpuProfile has no meaning with gpus: 0",
        ),
        (
            {"source": {"uri": f"hf://{TINY_MODEL}"}, "fineTune": {"dataset": {"uri": "/data/train.jsonl"}}},
            "spec.fineTune.dataset.uri",
        ),
        (
            {"source": {"uri": f"hf://{TINY_MODEL}"}, "serving": {"replica": 2}},
            'unknown field "spec.serving.replica"',
        ),
        (
            {
                "source": {"uri": f"hf://{TINY_MODEL}"},
                "serving": {"autoscaling": {"minReplicas": 3, "maxReplicas": 2}},
            },
            "minReplicas must not exceed maxReplicas",
        ),
        (
            {
                "source": {"uri": f"hf://{TINY_MODEL}"},
                "gateway": {"route": {"gateway": {"name": "gw"}, "path": "/a//b"}},
            },
            "path must not contain //",
        ),
        (
            {
                "source": {"uri": f"hf://{TINY_MODEL}"},
                "serving": {
                    "autoscaling": {"maxReplicas": 2, "target": {"waitingRequests": 1, "kvCacheUsage": 0.5}}
                },
            },
            "set one target: waitingRequests or kvCacheUsage",
        ),
        (
            {
                "source": {"uri": f"hf://{TINY_MODEL}"},
                "serving": {"autoscaling": {"maxReplicas": 2, "coldStart": {"maxQueued": 5}}},
            },
            "coldStart has a meaning only with minReplicas: 0",
        ),
        (
            {
                "source": {"uri": f"hf://{TINY_MODEL}"},
                "gateway": {"endpointPicker": {"name": "e", "failureMode": "x"}},
            },
            "spec.gateway.endpointPicker.failureMode",
        ),
        (
            {
                "source": {"uri": f"hf://{TINY_MODEL}"},
                "adapters": [{"name": "x", "uri": "pvc://loras/x", "revision": "v1"}],
            },
            "revision is for hf:// adapters",
        ),
        (
            {"source": {"uri": f"hf://{TINY_MODEL}"}, "adapters": [{"name": "x", "uri": "pvc://loras/../x"}]},
            "must stay inside its claim",
        ),
        (
            {"source": {"uri": f"hf://{TINY_MODEL}"}, "adapters": [{"name": "x", "uri": "pvc://loras//x"}]},
            "or pvc://<claim>/<path>",
        ),
        (
            {
                "source": {"uri": f"hf://{TINY_MODEL}"},
                "fineTune": {"dataset": {"uri": f"hf://datasets/{TINY_DATASET}"}},
                "adapters": [{"name": "bad-ft", "uri": f"hf://{TINY_LORAS[0]}"}],
            },
            "spec.adapters must not reuse the name of the fine-tuned adapter",
        ),
    ],
)
def test_invalid_manifests_are_refused(
    cluster: Cluster, operator: Running, namespace: str, spec: Obj, message: str
) -> None:
    body = json.dumps({**model("bad"), "spec": spec})
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=body)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_more_gpus_than_any_node_stays_pending_and_says_why(
    cluster: Cluster, operator: Running, namespace: str
) -> None:
    cluster.apply(model("huge", serving={"gpus": 16}), namespace=namespace)

    def no_node_has_the_gpus() -> Obj | None:
        found = condition(cluster, namespace, "huge", "Ready") or {}
        gpus = found.get("reason") == "Unschedulable" and "nvidia.com/gpu" in found["message"]
        return found if gpus else None

    wait_for(no_node_has_the_gpus, timeout=TIMEOUT, what="huge: Ready=False Unschedulable for its GPUs")
    assert not ready_pods(cluster, namespace, "huge")


def test_gated_model_needs_its_token(cluster: Cluster, operator: Running, namespace: str) -> None:
    cluster.apply(model("gated", uri=f"hf://{TINY_GATED}"), namespace=namespace)
    stalled = wait_condition(cluster, namespace, "gated", "Stalled", reason="AccessDenied")
    assert "tokenSecretRef" in stalled["message"]

    # With a token, the operator (no access to Secrets) has a resolve Job do it, with the token from the
    # Secret through the kubelet. kwok runs no program, so the Job "succeeds" without a report and the model
    # says so; tests/e2e/test_real_serving.py runs it for real.
    with_token = model("gated", uri=f"hf://{TINY_GATED}")
    with_token["spec"]["source"]["tokenSecretRef"] = {"name": "hf"}
    cluster.apply(with_token, namespace=namespace)
    stalled = wait_condition(cluster, namespace, "gated", "Stalled", reason="ResolveFailed")
    assert "without a report" in stalled["message"], stalled
    jobs = get(cluster, namespace, "jobs", "-l", "moorage.dev/model=gated")["items"]
    [job] = [j for j in jobs if j["metadata"]["labels"]["app.kubernetes.io/component"] == "resolve"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}} in container[
        "env"
    ]


def test_adapters_are_pinned_pulled_and_added_without_a_rollout(
    cluster: Cluster, operator: Running, namespace: str
) -> None:
    """On kwok the adapters Job's pod only pretends; the real node runs it and vLLM (test_real_serving)."""
    first, second = ({"name": f"lora-{i}", "uri": f"hf://{repo}"} for i, repo in enumerate(TINY_LORAS))
    cluster.apply(model("multi", adapters=[first]), namespace=namespace)
    wait_condition(cluster, namespace, "multi", "Ready")
    served = get(cluster, namespace, "osm", "multi")["status"]["adapters"]
    assert [(a["name"], a["state"], len(a["revision"])) for a in served] == [("lora-0", "Served", 40)]
    deployment = get(cluster, namespace, "deploy", "multi")

    cluster.apply(model("multi", adapters=[first, second]), namespace=namespace)

    def both_served() -> list[Obj] | None:
        listed = get(cluster, namespace, "osm", "multi")["status"].get("adapters") or []
        return listed if [a["state"] for a in listed] == ["Served", "Served"] else None

    wait_for(both_served, timeout=TIMEOUT, what="both adapters served")
    wait_condition(cluster, namespace, "multi", "Ready")
    after = get(cluster, namespace, "deploy", "multi")
    assert after["metadata"]["generation"] == deployment["metadata"]["generation"], "the pods were rolled"
    jobs = get(
        cluster, namespace, "jobs", "-l", "moorage.dev/model=multi,app.kubernetes.io/component=adapters"
    )
    [job] = jobs["items"]  # the first list's Job went with it
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a.split("@")[0] for a in args if "=hf://" in a] == [
        f"lora-0=hf://{TINY_LORAS[0]}",
        f"lora-1=hf://{TINY_LORAS[1]}",
    ]


def test_a_pvc_adapter_is_read_from_its_claim_by_the_job_alone(
    cluster: Cluster, operator: Running, namespace: str
) -> None:
    """The adapters Job mounts the claim read-only; the serving pods never do. A claim that is not there
    stalls the model naming the field (kwok runs no program: the copy itself is test_adapters_program's)."""
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "team-loras"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    cluster.apply(claim, namespace=namespace)
    hub_lora = {"name": "lora-0", "uri": f"hf://{TINY_LORAS[0]}"}
    legal = {"name": "legal", "uri": "pvc://team-loras/legal/v3"}
    cluster.apply(model("claimed", adapters=[hub_lora, legal]), namespace=namespace)
    wait_condition(cluster, namespace, "claimed", "Ready")
    listed = get(cluster, namespace, "osm", "claimed")["status"]["adapters"]
    assert [(a["name"], a["uri"], a["state"], "revision" in a) for a in listed] == [
        ("lora-0", f"hf://{TINY_LORAS[0]}", "Served", True),
        ("legal", "pvc://team-loras/legal/v3", "Served", False),
    ]
    [job] = get(
        cluster, namespace, "jobs", "-l", "moorage.dev/model=claimed,app.kubernetes.io/component=adapters"
    )["items"]
    pod = job["spec"]["template"]["spec"]
    [volume] = [
        v for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == "team-loras"
    ]
    assert volume["persistentVolumeClaim"]["readOnly"] is True
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    assert (mount["mountPath"], mount["readOnly"]) == ("/claims/team-loras", True)
    assert "legal=pvc://team-loras/legal/v3" in pod["containers"][0]["args"]
    serving = get(cluster, namespace, "deploy", "claimed")["spec"]["template"]["spec"]
    claims = [
        v["persistentVolumeClaim"]["claimName"] for v in serving["volumes"] if "persistentVolumeClaim" in v
    ]
    assert "team-loras" not in claims

    missing = {"name": "legal", "uri": "pvc://no-such-claim/legal"}
    cluster.apply(model("unclaimed", adapters=[hub_lora, missing]), namespace=namespace)
    stalled = wait_condition(cluster, namespace, "unclaimed", "Stalled", reason="AdapterNotFound")
    assert stalled["message"].startswith(
        f"spec.adapters[1].uri: PersistentVolumeClaim 'no-such-claim' not found in namespace '{namespace}'"
    ), stalled
    jobs = get(cluster, namespace, "jobs", "-l", "moorage.dev/model=unclaimed")["items"]
    assert not [j for j in jobs if j["metadata"]["labels"]["app.kubernetes.io/component"] == "adapters"]


def test_fine_tune_then_serve_the_adapter(cluster: Cluster, operator: Running, namespace: str) -> None:
    tuned = model("tuned", fineTune={"dataset": {"uri": f"hf://datasets/{TINY_DATASET}"}, "lora": {"r": 8}})
    cluster.apply(tuned, namespace=namespace)
    wait_condition(cluster, namespace, "tuned", "FineTuned")
    wait_condition(cluster, namespace, "tuned", "Ready")
    jobs = {
        j["metadata"]["labels"]["app.kubernetes.io/component"]
        for j in get(cluster, namespace, "jobs", "-l", "moorage.dev/model=tuned")["items"]
    }
    assert jobs == {"weights", "finetune"}
    args = get(cluster, namespace, "deployment", "tuned")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--enable-lora" in args
    status = get(cluster, namespace, "osm", "tuned")["status"]
    assert args[args.index("--lora-modules") + 1] == f"tuned-ft={status['fineTune']['path']}"
    assert status["fineTune"]["servedModelName"] == "tuned-ft"
    [listed] = status["adapters"]  # the fine-tuned adapter is one more entry, though spec.adapters is unset
    assert (listed["name"], listed["fineTune"], listed["digest"]) == (
        "tuned-ft",
        True,
        status["fineTune"]["adapter"],
    )
    assert listed["uri"] == f"pvc://{status['weights']['claim']}/adapters/{status['fineTune']['adapter']}"
    wait_for(
        lambda: get(cluster, namespace, "osm", "tuned")["status"]["adapters"][0]["state"] == "Served",
        timeout=TIMEOUT,
        what="the fine-tuned adapter Served",
    )


def test_restart_resumes_without_duplicates(cluster: Cluster, operator: Running, namespace: str) -> None:
    cluster.apply(model("resumed", serving={"replicas": 2}), namespace=namespace)
    wait_for(
        lambda: get(cluster, namespace, "jobs", "-l", "moorage.dev/model=resumed")["items"],
        timeout=TIMEOUT,
        what="the pull Job",
    )
    operator.restart()
    wait_condition(cluster, namespace, "resumed", "Ready")
    assert len(get(cluster, namespace, "jobs", "-l", "moorage.dev/model=resumed")["items"]) == 1
    assert len(get(cluster, namespace, "deployments", "-l", "moorage.dev/model=resumed")["items"]) == 1
    assert len(get(cluster, namespace, "replicasets", "-l", "moorage.dev/model=resumed")["items"]) == 1
    assert len(get(cluster, namespace, "pvc", "-l", "moorage.dev/weights")["items"]) == 1


def _requests_since(
    cluster: Cluster,
    since: float,
    namespace: str,
    verbs: tuple[str, ...] = ("create", "update", "patch", "delete"),
) -> list[Obj]:
    """Writes (or other verbs) by the operator into one namespace (other tests' namespaces are being torn
    down); the test's own kubectl runs as the same user, its user agent tells them apart."""
    writes = []
    for line in cluster.audit_log.read_text().splitlines():
        event = json.loads(line)
        stamp = (
            time.mktime(time.strptime(event["requestReceivedTimestamp"][:19], "%Y-%m-%dT%H:%M:%S"))
            - time.timezone
        )
        if (
            stamp >= since
            and event.get("objectRef", {}).get("namespace") == namespace
            and event["user"]["username"] == ADMIN_USER
            and not event.get("userAgent", "").startswith("kubectl")
            and event["verb"] in verbs
        ):
            writes.append(event)
    return writes


def test_idle_operator_makes_no_writes_nor_reads(cluster: Cluster, operator: Running, namespace: str) -> None:
    cluster.apply(model("idle", serving={"replicas": 2}), namespace=namespace)
    wait_condition(cluster, namespace, "idle", "Ready")
    time.sleep(3)  # let the last events of the rollout drain
    start = time.time() + 1
    time.sleep(12)
    writes = _requests_since(cluster, start, namespace)
    assert writes == [], [f"{w['verb']} {w['requestURI']}" for w in writes]
    # Nor reads: the reconcile reads from the watches' stores (the watches themselves stay open).
    reads = _requests_since(cluster, start, namespace, verbs=("get", "list"))
    assert reads == [], [f"{r['verb']} {r['requestURI']}" for r in reads]


def test_autoscaling_without_keda_keeps_min_replicas_and_says_so(
    cluster: Cluster, operator: Running, namespace: str
) -> None:
    if cluster.kubectl("get", "crd", "scaledobjects.keda.sh").returncode == 0:
        # An earlier test installed it: this one is about a cluster without KEDA.
        cluster.kubectl("delete", "crd", "scaledobjects.keda.sh", "--wait=true", check=True)
    scaling = {"minReplicas": 2, "maxReplicas": 4}
    cluster.apply(model("floor", serving={"autoscaling": scaling}), namespace=namespace)
    found = wait_condition(
        cluster,
        namespace,
        "floor",
        "Autoscaling",
        status="False",
        reason="KedaNotInstalled",
        timeout=2 * TIMEOUT,
    )
    assert "install KEDA" in found["message"] and "2 replica(s)" in found["message"], "minReplicas: 2"
    wait_condition(cluster, namespace, "floor", "Ready")  # serving does not wait for the scaler
    assert get(cluster, namespace, "deployment", "floor")["spec"]["replicas"] == 2


@pytest.mark.parametrize(
    "example", sorted((Path(__file__).parents[2] / "examples").glob("*.yaml")), ids=lambda p: p.stem
)
def test_rendered_children_pass_the_api_server(
    cluster: Cluster, example: Path, gateway_crds: GatewayCrds, keda_crd: str
) -> None:
    """`moorage render` output is valid Kubernetes: the real API server's validation, without persisting.
    InferencePools meet our stand-in for the Inference Extension's CRD (INFERENCE_POOL_CRD), HTTPRoutes the
    Gateway API's own."""
    gateway_crds.install()
    cluster.kubectl("create", "namespace", "ml")  # the examples' namespace; fine if it exists already
    rendered = render(load_models(str(example)), PlanConfig(), resolve=False)
    result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=dump(rendered))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(rendered)


@pytest.mark.parametrize(
    ("uri", "spec", "reason", "words"),
    [
        ("hf://nobody/no-such-model", {}, "RepoNotFound", "nobody/no-such-model"),
        (f"hf://{TINY_REMOTE_CODE}", {}, "RemoteCodeNotTrusted", "trustRemoteCode"),
        (
            f"hf://{TINY_MODEL}",
            {"serving": {"gpuProfile": "nvidia-b9000"}},
            "UnknownGPUProfile",
            "spec.serving.gpuProfile",
        ),
        (f"hf://{TINY_MODEL}", {"cache": {"size": "1Ki"}}, "CacheTooSmall", "spec.cache.size"),
        (
            f"hf://{TINY_MODEL}",
            {"fineTune": {"dataset": {"uri": "pvc://no-such-claim/train.jsonl"}}},
            "DatasetClaimNotFound",
            "spec.fineTune.dataset.uri: PersistentVolumeClaim 'no-such-claim' not found",
        ),
        (
            f"hf://{TINY_MODEL}",
            {"serving": {"gpus": 0, "resources": {"memory": "1Mi"}}},
            "InsufficientMemory",
            "spec.serving.resources.memory: 1Mi cannot serve",
        ),
    ],
    ids=["missing-repo", "remote-code", "unknown-gpu", "small-cache", "missing-dataset-claim", "cpu-memory"],
)
def test_user_errors_stall_and_take_no_gpu(
    cluster: Cluster, operator: Running, namespace: str, uri: str, spec: Obj, reason: str, words: str
) -> None:
    cluster.apply(model("wrong", uri=uri, **spec), namespace=namespace)
    stalled = wait_condition(cluster, namespace, "wrong", "Stalled", reason=reason)
    assert words in stalled["message"]
    assert condition(cluster, namespace, "wrong", "Ready")["status"] == "False"  # type: ignore[index]
    assert not get(cluster, namespace, "deployments,jobs", "-l", "moorage.dev/model=wrong")["items"]
    assert not get(cluster, namespace, "pvc", "-l", "moorage.dev/weights")["items"]
    events = get(cluster, namespace, "events", "--field-selector", "involvedObject.name=wrong")["items"]
    assert any(e["type"] == "Warning" and e["reason"] == reason for e in events)


def _uid(cluster: Cluster, namespace: str, *what: str) -> str:
    return str(get(cluster, namespace, *what)["metadata"]["uid"])


def test_operator_upgrade_keeps_finished_jobs_and_applies_edits(
    cluster: Cluster, operator: Running, namespace: str
) -> None:
    """A new operator image (helm upgrade) changes the desired pull Job; the finished one stands, and the
    model still follows its spec. The new operator runs as a uid with no passwd entry and no USER."""
    cluster.apply(model("upgraded"), namespace=namespace)
    wait_condition(cluster, namespace, "upgraded", "Ready")
    (job,) = get(cluster, namespace, "jobs", "-l", "moorage.dev/model=upgraded")["items"]
    try:
        operator.restart(
            "--operator-image=registry.example/moorage:2.0",
            wrapper=["unshare", "--user", "--map-user=65533", "--map-group=65533"],
            env={"USER": None, "LOGNAME": None, "LNAME": None, "USERNAME": None},
        )
        cluster.kubectl("scale", "osm/upgraded", "--replicas=2", "-n", namespace, check=True)
        generation = get(cluster, namespace, "osm", "upgraded")["metadata"]["generation"]
        ready = wait_condition(cluster, namespace, "upgraded", "Ready")
        wait_for(
            lambda: condition(cluster, namespace, "upgraded", "Ready")["observedGeneration"] == generation,
            timeout=TIMEOUT,
            what="Ready for the scaled generation",
        )
        assert ready["status"] == "True"
        assert get(cluster, namespace, "deployment", "upgraded")["spec"]["replicas"] == 2
        assert _uid(cluster, namespace, "job", job["metadata"]["name"]) == job["metadata"]["uid"]
        assert operator.process.process.poll() is None, operator.process.log()[-2000:]
        assert "getpwuid" not in operator.process.log()
    finally:
        operator.restart()


def test_drift_on_children_is_reverted(cluster: Cluster, operator: Running, namespace: str) -> None:
    cluster.apply(model("drifty"), namespace=namespace)
    wait_condition(cluster, namespace, "drifty", "Ready")
    cluster.kubectl("scale", "deploy/drifty", "--replicas=5", "-n", namespace, check=True)
    wait_for(
        lambda: get(cluster, namespace, "deployment", "drifty")["spec"]["replicas"] == 1,
        timeout=15,
        what="the Deployment's replicas restored",
    )
    cluster.kubectl(
        "set", "image", "deploy/drifty", "vllm=registry.example/evil:1", "-n", namespace, check=True
    )

    def image() -> str:
        return str(
            get(cluster, namespace, "deployment", "drifty")["spec"]["template"]["spec"]["containers"][0][
                "image"
            ]
        )

    wait_for(lambda: image() == PlanConfig().vllm_image, timeout=15, what="the Deployment's image restored")
    wait_condition(cluster, namespace, "drifty", "Ready")
    reasons = [
        e["reason"]
        for e in get(cluster, namespace, "events", "--field-selector", "involvedObject.name=drifty")["items"]
    ]
    assert reasons.count("DriftReverted") >= 2, reasons


def test_scale_subresource_without_replicas_and_no_gitops_drift(
    cluster: Cluster, operator: Running, namespace: str, tmp_path: Path
) -> None:
    manifest = model("unscaled")  # no spec.serving at all, as most manifests and the chart's NOTES
    cluster.apply(manifest, namespace=namespace)
    wait_condition(cluster, namespace, "unscaled", "Ready")
    path = f"/apis/moorage.dev/v1alpha1/namespaces/{namespace}/opensourcemodels/unscaled/scale"
    scale = json.loads(cluster.kubectl("get", "--raw", path, check=True).stdout)
    assert scale["spec"]["replicas"] == 1 and scale["status"]["replicas"] == 1

    assert_no_gitops_drift(cluster, namespace, manifest, tmp_path)


def test_hub_outage_at_restart_keeps_ready_models_ready_and_stalled_ones_stalled(
    cluster: Cluster, operator: Running, hub: FakeHub, namespace: str
) -> None:
    cluster.apply(model("steady"), model("missing", uri="hf://moorage/no-such-model"), namespace=namespace)
    wait_condition(cluster, namespace, "steady", "Ready")
    wait_condition(cluster, namespace, "missing", "Stalled", reason="RepoNotFound")
    hub.fail(503, times=None)  # every API call, from now on
    try:
        operator.restart()
        wait_for(
            lambda: "the pinned" in operator.process.log(),
            timeout=TIMEOUT,
            what="the operator to meet the outage",
        )
        cluster.kubectl("scale", "osm/steady", "--replicas=2", "-n", namespace, check=True)
        wait_for(
            lambda: len(ready_pods(cluster, namespace, "steady")) == 2,
            timeout=TIMEOUT,
            what="scaled in the outage",
        )
        ready = wait_condition(cluster, namespace, "steady", "Ready")
        weights = wait_condition(cluster, namespace, "steady", "WeightsReady")
        assert "cannot be reached" in weights["message"], weights
        assert (
            ready["observedGeneration"] == get(cluster, namespace, "osm", "steady")["metadata"]["generation"]
        )
        stalled = condition(cluster, namespace, "missing", "Stalled")
        assert stalled is not None and (stalled["status"], stalled["reason"]) == ("True", "RepoNotFound")
    finally:
        hub.clear_faults()


def _compact_etcd(cluster: Cluster) -> None:
    """Compact etcd at its current revision: every older resourceVersion is gone (watches get 410)."""

    def call(path: str, body: Obj) -> Obj:
        request = urllib.request.Request(
            cluster.etcd_url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.loads(response.read()))

    revision = int(call("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})["header"]["revision"])
    call("/v3/kv/compaction", {"revision": revision, "physical": True})


def test_control_plane_restarts_and_expired_watches_lose_no_change(
    cluster: Cluster, operator: Running, namespace: str
) -> None:
    """The API server restarts over a compacted etcd (kopf's watches resume at a resourceVersion that is
    gone: 410), then etcd and the API server restart together, while models pull and roll out. Changes
    made while the operator reconnects are all seen, and nothing is created twice."""
    cluster.apply(model("steady"), namespace=namespace)
    wait_condition(cluster, namespace, "steady", "Ready")

    cluster.apply(model("pulling"), namespace=namespace)
    cluster.kubectl("scale", "osm/steady", "--replicas=2", "-n", namespace, check=True)
    first = cluster.restart("kube-apiserver", while_down=lambda: _compact_etcd(cluster))
    cluster.apply(model("after-expiry"), namespace=namespace)
    cluster.kubectl("scale", "osm/pulling", "--replicas=2", "-n", namespace, check=True)

    second = cluster.restart("kube-apiserver", "etcd")
    changed = time.monotonic()
    cluster.apply(model("after-restart"), namespace=namespace)
    cluster.kubectl("scale", "osm/after-expiry", "--replicas=2", "-n", namespace, check=True)

    expected = {"steady": 2, "pulling": 2, "after-expiry": 2, "after-restart": 1}
    for name, replicas in expected.items():
        wait_for(
            lambda name=name, replicas=replicas: (  # type: ignore[misc]
                (condition(cluster, namespace, name, "Ready") or {}).get("status") == "True"
                and get(cluster, namespace, "osm", name)["status"].get("readyReplicas") == replicas
            ),
            timeout=120,
            what=f"{name} Ready with {replicas} replica(s) after the restarts",
        )
    recovered = time.monotonic() - changed
    print(
        f"\napiserver back in {first:.1f}s, etcd+apiserver in {second:.1f}s; "
        f"every change seen {recovered:.1f}s after"
    )
    for name in expected:
        replica_sets = get(cluster, namespace, "replicasets", "-l", f"moorage.dev/model={name}")["items"]
        assert len(replica_sets) == 1, [r["metadata"]["name"] for r in replica_sets]
    claims = get(cluster, namespace, "pvc", "-l", "moorage.dev/weights")["items"]
    assert len(claims) == 1, "the four models share one weights volume"
    pulls = get(cluster, namespace, "jobs", "-l", "moorage.dev/weights")["items"]
    assert len(pulls) == 1, ("and its one pull", [j["metadata"]["name"] for j in pulls])


def test_a_model_on_weights_already_pulled_deploys_without_a_job(
    cluster: Cluster, operator: Running, namespace: str
) -> None:
    cluster.apply(model("pioneer"), namespace=namespace)
    wait_condition(cluster, namespace, "pioneer", "Ready")
    (claim,) = get(cluster, namespace, "pvc", "-l", "moorage.dev/weights")["items"]
    sha = get(cluster, namespace, "osm", "pioneer")["status"]["resolvedRevision"]
    marks = {k: v for k, v in claim["metadata"]["annotations"].items() if k.startswith("pulled.moorage.dev/")}
    assert list(marks.values()) == [sha], claim["metadata"]["annotations"]

    applied = time.monotonic()
    cluster.apply(model("follower"), namespace=namespace)
    wait_for(
        lambda: get(cluster, namespace, "deployment", "follower") is not None,
        timeout=TIMEOUT,
        interval=0.05,
        what="the follower's Deployment",
    )
    took = time.monotonic() - applied
    print(f"\napply → Deployment of a model on weights already pulled: {took:.2f}s")
    assert took < 2.0
    assert not get(cluster, namespace, "jobs", "-l", "moorage.dev/model=follower")["items"]
    assert len(get(cluster, namespace, "jobs", "-l", "moorage.dev/weights")["items"]) == 1
    weights = wait_condition(cluster, namespace, "follower", "WeightsReady")
    assert "verified on the cache volume" in weights["message"]
    wait_condition(cluster, namespace, "follower", "Ready")


def test_operator_serves_metrics(cluster: Cluster, operator: Running, namespace: str) -> None:
    cluster.apply(model("watched", serving={"replicas": 2}), namespace=namespace)
    wait_condition(cluster, namespace, "watched", "Ready")
    revision = get(cluster, namespace, "osm", "watched")["status"]["servingRevision"]
    template = get(cluster, namespace, "deployment", "watched")["metadata"]["annotations"][
        "moorage.dev/template-hash"
    ]
    ours = {"namespace": namespace, "model": "watched"}

    def of_model(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> list[float]:
        return [v for labels, v in samples.get(name, []) if ours.items() <= labels.items()]

    def scraped() -> dict[str, list[tuple[dict[str, str], float]]] | None:
        samples = operator.metrics()
        return samples if of_model(samples, "moorage_model_ready_replicas") == [2] else None

    started = time.monotonic()
    samples = wait_for(scraped, timeout=TIMEOUT, what="the operator's metrics to show 2 ready replicas")
    assert time.monotonic() - started < TIMEOUT
    assert of_model(samples, "moorage_model_replicas") == [2]
    info = [labels for labels, _ in samples["moorage_model_info"] if ours.items() <= labels.items()]
    assert info == [{**ours, "revision": revision, "template_hash": template}]
    ready = {
        (labels["reason"], value)
        for labels, value in samples["moorage_models"]
        if labels["condition"] == "Ready" and labels["status"] == "True"
    }
    assert any(reason == "Serving" and count >= 1 for reason, count in ready), ready
    assert "namespace" not in samples["moorage_models"][0][0], "counts by condition carry no model label"
    successes = [v for labels, v in samples["moorage_reconciles_total"] if labels["result"] == "success"]
    assert successes and successes[0] >= 1
    assert samples["moorage_reconcile_duration_seconds_count"][0][1] >= successes[0]
    assert [v for _, v in samples["moorage_workqueue_depth"]] and samples["moorage_workqueue_in_progress"]

    # A model that goes takes its series with it.
    cluster.kubectl("delete", "osm", "watched", "-n", namespace, check=True)
    wait_for(
        lambda: not of_model(operator.metrics(), "moorage_model_info"),
        timeout=TIMEOUT,
        what="the deleted model's series gone",
    )


HANDOVER = "moorage-handover-to-autoscaler"


def _replica_owners(cluster: Cluster, namespace: str, name: str) -> set[str]:
    """The field managers that own the Deployment's spec.replicas."""
    deployment = get(cluster, namespace, "deployment", name, "--show-managed-fields")
    return {
        entry["manager"]
        for entry in deployment["metadata"].get("managedFields", [])
        if "f:replicas" in entry.get("fieldsV1", {}).get("f:spec", {})
    }


def test_autoscaled_model_leaves_replicas_to_the_scaler_with_no_drift(
    cluster: Cluster, operator: Running, namespace: str, keda_crd: str, tmp_path: Path
) -> None:
    fixed = model("elastic", serving={"replicas": 2})
    cluster.apply(fixed, namespace=namespace)
    wait_condition(cluster, namespace, "elastic", "Ready")
    assert _replica_owners(cluster, namespace, "elastic") == {"moorage"}

    # Autoscaling on, serving.replicas left in the manifest as Git has it: the scaler's now.
    scaling = {"minReplicas": 1, "maxReplicas": 5, "target": {"waitingRequests": 3}}
    scaled = model("elastic", serving={"replicas": 2, "autoscaling": scaling})
    cluster.apply(scaled, namespace=namespace)
    # Within the operator's API discovery cache and its look again at models waiting for KEDA.
    scaled_object = wait_for(
        lambda: get(cluster, namespace, "scaledobject", "elastic"),
        timeout=2 * TIMEOUT,
        what="the ScaledObject",
    )
    spec = scaled_object["spec"]  # accepted by the API server against KEDA's own schema
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 5)
    assert spec["scaleTargetRef"]["name"] == "elastic"
    assert spec["triggers"][0]["metadata"]["query"] == (
        f'sum(vllm:num_requests_waiting{{namespace="{namespace}",model_name="elastic"}})'
    )
    assert spec["triggers"][0]["metadata"]["threshold"] == "3"
    wait_for(
        lambda: _replica_owners(cluster, namespace, "elastic") == {HANDOVER},
        timeout=TIMEOUT,
        what="the operator's apply without replicas, after the handover",
    )
    assert get(cluster, namespace, "deployment", "elastic")["spec"]["replicas"] == 2, "capacity kept"
    wait_condition(cluster, namespace, "elastic", "Autoscaling", status="False", reason="ScalerPending")
    wait_condition(cluster, namespace, "elastic", "Ready")

    # The scaler (KEDA's HPA, played by kubectl) changes the count through the scale subresource.
    cluster.kubectl("scale", "deploy/elastic", "--replicas=4", "-n", namespace, check=True)
    wait_for(
        lambda: get(cluster, namespace, "osm", "elastic")["status"].get("readyReplicas") == 4,
        timeout=TIMEOUT,
        what="4 ready replicas in the model's status (reconciled after the scaler's change)",
    )
    deployment = get(cluster, namespace, "deployment", "elastic")
    assert deployment["spec"]["replicas"] == 4, "the operator never reverts the scaler"
    assert "moorage" not in _replica_owners(cluster, namespace, "elastic")
    events = get(cluster, namespace, "events", "--field-selector", "involvedObject.name=elastic")["items"]
    assert "DriftReverted" not in {e["reason"] for e in events}

    assert_no_gitops_drift(cluster, namespace, scaled, tmp_path)

    # KEDA says the ScaledObject is ready: so does the model.
    ready = {
        "conditions": [{"type": "Ready", "status": "True", "reason": "ScaledObjectReady", "message": "ok"}]
    }
    cluster.kubectl(
        "patch", "scaledobject", "elastic", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": ready}), check=True,
    )  # fmt: skip
    scaling_condition = wait_condition(cluster, namespace, "elastic", "Autoscaling", reason="Scaling")
    assert "1 to 5 replicas on vllm:num_requests_waiting" in scaling_condition["message"]

    # Autoscaling off: the ScaledObject goes and the spec's replicas are the operator's again.
    cluster.apply(fixed, namespace=namespace)
    wait_for(
        lambda: get(cluster, namespace, "scaledobject", "elastic") is None,
        timeout=TIMEOUT,
        what="ScaledObject gone",
    )
    wait_for(
        lambda: get(cluster, namespace, "deployment", "elastic")["spec"]["replicas"] == 2,
        timeout=TIMEOUT,
        what="the spec's 2 replicas back",
    )
    assert condition(cluster, namespace, "elastic", "Autoscaling") is None


def test_a_new_autoscaled_model_starts_at_min_replicas(
    cluster: Cluster, operator: Running, namespace: str, keda_crd: str
) -> None:
    scaling = {"minReplicas": 2, "maxReplicas": 3}
    cluster.apply(model("born-scaled", serving={"autoscaling": scaling}), namespace=namespace)
    wait_for(
        lambda: get(cluster, namespace, "scaledobject", "born-scaled"),
        timeout=2 * TIMEOUT,
        what="ScaledObject",
    )
    wait_condition(cluster, namespace, "born-scaled", "Ready")
    assert get(cluster, namespace, "deployment", "born-scaled")["spec"]["replicas"] == 2
    assert _replica_owners(cluster, namespace, "born-scaled") == {HANDOVER}


def test_gateway_objects_follow_the_crds_and_the_spec(
    cluster: Cluster, operator: Running, namespace: str, gateway_crds: GatewayCrds
) -> None:
    """Without the CRDs the model serves and says what is missing; once they are installed it gets its
    InferencePool and HTTPRoute (the route passing the real Gateway API CRD's validation), with no edit of
    the model; a change outside moorage is put back; removing the spec removes them."""
    gateway_crds.remove()
    picker = {"endpointPicker": {"name": "routed-epp", "failureMode": "FailOpen"}}
    route = {
        "gateway": {"name": "inference-gateway", "sectionName": "http"},
        "hostnames": ["models.example.com"],
    }
    cluster.apply(model("routed", gateway={**picker, "route": route}), namespace=namespace)
    wait_condition(cluster, namespace, "routed", "Ready")
    skipped = wait_condition(
        cluster, namespace, "routed", "GatewayReady", "False", "InferencePoolCRDNotInstalled"
    )
    assert "inferencepools.inference.networking.k8s.io" in skipped["message"]

    gateway_crds.install()
    started = time.monotonic()
    wait_condition(cluster, namespace, "routed", "GatewayReady", "True", "Applied")
    print(f"gateway objects in place {time.monotonic() - started:.1f}s after the CRDs were installed")
    pool = get(cluster, namespace, "inferencepools.inference.networking.k8s.io", "routed")
    assert pool["spec"]["selector"]["matchLabels"] == {
        "moorage.dev/model": "routed",
        "app.kubernetes.io/component": "serving",
    }
    assert pool["spec"]["targetPorts"] == [{"number": 8000}]
    # The API server's defaults filled in: kind Service, core group.
    assert pool["spec"]["endpointPickerRef"] == {
        "group": "",
        "kind": "Service",
        "name": "routed-epp",
        "port": {"number": 9002},
        "failureMode": "FailOpen",
    }
    assert pool["metadata"]["ownerReferences"][0]["name"] == "routed"
    http_route = get(cluster, namespace, "httproutes.gateway.networking.k8s.io", "routed")
    assert http_route["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "inference-gateway",
            "sectionName": "http",
        }
    ]
    assert http_route["spec"]["hostnames"] == ["models.example.com"]
    (rule,) = http_route["spec"]["rules"]
    assert [(b["group"], b["kind"], b["name"]) for b in rule["backendRefs"]] == [
        ("inference.networking.k8s.io", "InferencePool", "routed")
    ]
    assert rule["matches"][0]["path"] == {"type": "PathPrefix", "value": "/"}
    assert condition(cluster, namespace, "routed", "Ready")["status"] == "True"  # type: ignore[index]

    cluster.kubectl(
        "patch",
        "inferencepool",
        "routed",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"targetPorts": [{"number": 9000}]}}),
        check=True,
    )
    wait_for(
        lambda: (
            get(cluster, namespace, "inferencepool", "routed")["spec"]["targetPorts"] == [{"number": 8000}]
        ),
        timeout=15,
        what="the pool's targetPorts restored",
    )

    cluster.apply(model("routed", gateway=picker), namespace=namespace)
    wait_for(lambda: get(cluster, namespace, "httproute", "routed") is None, timeout=30, what="route removed")
    assert get(cluster, namespace, "inferencepool", "routed") is not None
    cluster.apply(model("routed"), namespace=namespace)
    wait_for(
        lambda: get(cluster, namespace, "inferencepool", "routed") is None, timeout=30, what="pool removed"
    )
    wait_for(
        lambda: condition(cluster, namespace, "routed", "GatewayReady") is None,
        timeout=15,
        what="condition gone",
    )
    assert condition(cluster, namespace, "routed", "Ready")["status"] == "True"  # type: ignore[index]


# ---- automatic rollback (kwok plays the broken pods: see moorage.devcluster.kwok_stages)


class Capacity:
    """Samples the ready serving pods of a model in the background: the fewest seen is the capacity floor."""

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.cluster, self.namespace, self.name = cluster, namespace, name
        self.fewest: int | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Capacity":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            ready = len(ready_pods(self.cluster, self.namespace, self.name))
            self.fewest = ready if self.fewest is None else min(self.fewest, ready)
            self.samples += 1
            time.sleep(0.2)


def _template_hash(cluster: Cluster, namespace: str, name: str) -> str:
    return str(get(cluster, namespace, "deployment", name)["metadata"]["annotations"][TEMPLATE_HASH])


def _argocd_health(obj: Obj) -> Obj:
    lupa = pytest.importorskip("lupa", reason="pip install lupa to run the Argo CD health check (Lua)")
    lua = lupa.LuaRuntime()
    script = (Path(__file__).parents[2] / "charts" / "moorage" / "argocd" / "health.lua").read_text()
    return dict(lua.eval(f"function(obj)\n{script}\nend")(lua.table_from(obj, recursive=True)))


def _rolled_back(cluster: Cluster, namespace: str, name: str, since: float) -> Obj:
    stalled = wait_condition(cluster, namespace, name, "Stalled", reason="RolledBack", timeout=150)
    print(f"\n{name}: rolled back {time.monotonic() - since:.1f}s after the broken spec was applied")
    return stalled


def test_a_crash_looping_revision_rolls_back_on_its_own_at_four_replicas(
    cluster: Cluster, operator: Running, namespace: str
) -> None:
    cluster.apply(model("undo", serving={"replicas": 4}), namespace=namespace)
    wait_condition(cluster, namespace, "undo", "Ready")
    good = _template_hash(cluster, namespace, "undo")
    with Capacity(cluster, namespace, "undo") as capacity:
        started = time.monotonic()
        broken = {"replicas": 4, "vllm": {"extraArgs": [CRASH_LOOP_ARG]}}
        cluster.apply(model("undo", serving=broken), namespace=namespace)
        stalled = _rolled_back(cluster, namespace, "undo", started)
        wait_for(
            lambda: (
                _template_hash(cluster, namespace, "undo") == good
                and len(ready_pods(cluster, namespace, "undo")) == 4
                and get(cluster, namespace, "deployment", "undo")["status"].get("replicas") == 4
            ),
            timeout=TIMEOUT,
            what="the good revision's 4 replicas alone",
        )
    assert capacity.samples >= 2 and capacity.fewest == 4, (capacity.fewest, capacity.samples)

    osm = get(cluster, namespace, "osm", "undo")
    status = osm["status"]
    failed = status["failedRevision"]
    assert failed["templateHash"] != good and failed["reason"] == "CrashLoopBackOff"
    assert "exit with code 1" in failed["message"] and "exit with code 1" in stalled["message"]
    assert status["lastReadyRevision"]["templateHash"] == good == status["revision"]["templateHash"]
    assert [(r["templateHash"], r["state"]) for r in status["revisionHistory"]] == [
        (good, "Ready"),
        (failed["templateHash"], "RolledBack"),
    ]
    assert condition(cluster, namespace, "undo", "Ready")["reason"] == "RolledBack"  # type: ignore[index]
    assert condition(cluster, namespace, "undo", "Available")["status"] == "True"  # type: ignore[index]
    assert _argocd_health(osm)["status"] == "Degraded"
    replica_sets = get(cluster, namespace, "replicasets", "-l", "moorage.dev/model=undo")["items"]
    assert len(replica_sets) == 2, "the good revision's ReplicaSet came back; no third one was made"
    events = get(cluster, namespace, "events", "--field-selector", "involvedObject.name=undo")["items"]
    rolled = [e for e in events if e["reason"] == "RolledBack"]
    assert len(rolled) == 1 and rolled[0]["type"] == "Warning", [e["reason"] for e in events]

    # Not tried again: not by a restarted operator, not by a scale; the status is not rewritten.
    time.sleep(2)  # the last status write of the rollback settles
    generation = get(cluster, namespace, "deployment", "undo")["metadata"]["generation"]
    settled = get(cluster, namespace, "osm", "undo")["status"]
    operator.restart()
    time.sleep(8)
    assert get(cluster, namespace, "deployment", "undo")["metadata"]["generation"] == generation
    assert get(cluster, namespace, "osm", "undo")["status"] == settled, "a restart rewrites nothing"
    cluster.kubectl("scale", "osm/undo", "--replicas=5", "-n", namespace, check=True)
    wait_for(lambda: len(ready_pods(cluster, namespace, "undo")) == 5, timeout=TIMEOUT, what="5 ready pods")
    assert _template_hash(cluster, namespace, "undo") == good

    # A new spec is tried, and the failure record goes.
    fixed = {"replicas": 5, "vllm": {"maxModelLen": 1024}}
    cluster.apply(model("undo", serving=fixed), namespace=namespace)
    wait_for(
        lambda: (
            (c := condition(cluster, namespace, "undo", "Ready")) is not None
            and c["status"] == "True"
            and c["observedGeneration"] == get(cluster, namespace, "osm", "undo")["metadata"]["generation"]
        ),
        timeout=TIMEOUT,
        what="Ready on the fixed spec",
    )
    status = get(cluster, namespace, "osm", "undo")["status"]
    assert "failedRevision" not in status and status["lastReadyRevision"]["templateHash"] not in (
        good,
        failed["templateHash"],
    )


def test_a_revision_never_ready_rolls_back_at_its_deadline_keeping_capacity(
    cluster: Cluster, operator: Running, namespace: str
) -> None:
    rollout = {"maxSurge": 1, "maxUnavailable": 1, "progressDeadlineSeconds": 60}
    cluster.apply(model("late", serving={"replicas": 3, "rollout": rollout}), namespace=namespace)
    wait_condition(cluster, namespace, "late", "Ready")
    good = _template_hash(cluster, namespace, "late")
    with Capacity(cluster, namespace, "late") as capacity:
        started = time.monotonic()
        broken = {"replicas": 3, "rollout": rollout, "vllm": {"extraArgs": [NEVER_READY_ARG]}}
        cluster.apply(model("late", serving=broken), namespace=namespace)
        wait_for(
            lambda: len(ready_pods(cluster, namespace, "late")) == 2,
            timeout=TIMEOUT,
            what="the rollout taking one good replica away (maxUnavailable 1)",
        )
        _rolled_back(cluster, namespace, "late", started)
        wait_for(
            lambda: (
                _template_hash(cluster, namespace, "late") == good
                and len(ready_pods(cluster, namespace, "late")) == 3
            ),
            timeout=TIMEOUT,
            what="the good revision's 3 replicas back",
        )
    assert capacity.fewest == 3 - 1, capacity.fewest
    assert time.monotonic() - started >= 60, "not before the deadline: the pods said nothing sooner"
    failed = get(cluster, namespace, "osm", "late")["status"]["failedRevision"]
    assert failed["reason"] == "ProgressDeadlineExceeded" and "60s" in failed["message"]


def test_opting_out_of_rollback_leaves_the_broken_revision(
    cluster: Cluster, operator: Running, namespace: str
) -> None:
    serving: Obj = {"replicas": 2, "rollout": {"autoRollback": False}}
    cluster.apply(model("kept", serving=serving), namespace=namespace)
    wait_condition(cluster, namespace, "kept", "Ready")
    broken = {**serving, "vllm": {"extraArgs": [CRASH_LOOP_ARG]}}
    cluster.apply(model("kept", serving=broken), namespace=namespace)
    wait_condition(cluster, namespace, "kept", "Ready", status="False", reason="CrashLoopBackOff")
    time.sleep(5)
    deployment = get(cluster, namespace, "deployment", "kept")
    assert CRASH_LOOP_ARG in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "failedRevision" not in get(cluster, namespace, "osm", "kept")["status"]
    assert len(ready_pods(cluster, namespace, "kept")) == 2, "the old replicas keep serving"


def _activator_slice(cluster: Cluster, namespace: str, name: str) -> list[str] | None:
    found = get(cluster, namespace, "endpointslice", f"{name}-activator")
    return None if found is None else [a for e in found.get("endpoints") or [] for a in e["addresses"]]


def _fake_activator(cluster: Cluster, namespace: str, ips: list[str]) -> None:
    """The activator's Service as the chart makes it, and its EndpointSlice as Kubernetes keeps it (by hand:
    no pod needed to test the operator's side)."""
    labels = {"moorage.dev/activator": "true"}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "moorage-activator", "labels": labels},
        "spec": {"ports": [{"name": "http", "port": 8080}]},
    }
    endpoints = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "moorage-activator-abcde",
            "labels": {
                **labels,
                "kubernetes.io/service-name": "moorage-activator",
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }
    cluster.apply(service, endpoints, namespace=namespace)


def test_scale_to_zero_points_the_service_at_the_activator_while_no_replica_is_ready(
    cluster: Cluster, operator: Running, namespace: str, keda_crd: str, tmp_path: Path
) -> None:
    """The operator's side of scale to zero on a real API server (kwok pods): the activator slice comes
    when the scaler takes the model to zero, follows the activator's addresses, and goes when a replica is
    ready; the operator never reverts the scale and GitOps sees no drift."""
    system = f"{namespace}-sys"
    cluster.kubectl("create", "namespace", system, check=True)
    try:
        _fake_activator(cluster, system, ["10.244.9.9"])
        operator.restart(f"--activator=moorage-activator.{system}")
        scaling = {"minReplicas": 0, "maxReplicas": 2, "coldStart": {"holdTimeoutSeconds": 120}}
        idle = model("idle", serving={"autoscaling": scaling})
        cluster.apply(idle, namespace=namespace)
        wait_condition(cluster, namespace, "idle", "Ready")
        wait_for(
            lambda: _activator_slice(cluster, namespace, "idle") is None, timeout=TIMEOUT, what="no slice"
        )
        scaled = wait_for(
            lambda: get(cluster, namespace, "scaledobject", "idle"), timeout=TIMEOUT, what="KEDA"
        )
        assert scaled["spec"]["minReplicaCount"] == 0
        assert scaled["spec"]["triggers"][-1]["metadata"]["url"] == (
            f"http://moorage-activator.{system}.svc.cluster.local:9090/held/{namespace}/idle"
        )

        # KEDA takes the idle model to zero: its Service also routes to the activator.
        cluster.kubectl("scale", "deploy/idle", "--replicas=0", "-n", namespace, check=True)
        wait_for(
            lambda: _activator_slice(cluster, namespace, "idle") == ["10.244.9.9"],
            timeout=TIMEOUT,
            what="the activator slice",
        )
        found = get(cluster, namespace, "endpointslice", "idle-activator")
        assert found["metadata"]["labels"]["kubernetes.io/service-name"] == "idle"
        assert found["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}]
        ready = wait_condition(cluster, namespace, "idle", "Ready", reason="ScaledToZero")
        assert "held" in ready["message"]

        # The activator moved: the slice follows (the operator watches the activator's slices).
        _fake_activator(cluster, system, ["10.244.9.10"])
        wait_for(
            lambda: _activator_slice(cluster, namespace, "idle") == ["10.244.9.10"],
            timeout=TIMEOUT,
            what="the slice following the activator",
        )

        # The activator's own reads and its wake (the scale subresource), against the API server.
        cold = asyncio.run(_activator_sees(cluster, ModelKey(namespace, "idle")))
        assert cold["hold"] == Hold(120, 100) and cold["endpoints"] == []
        assert cold["by_ip"] == ModelKey(namespace, "idle") and cold["woke"] == (True, False)
        wait_for(
            lambda: asyncio.run(_activator_sees(cluster, ModelKey(namespace, "idle"), wake=False))[
                "endpoints"
            ],
            timeout=TIMEOUT,
            what="a ready replica in the model's EndpointSlice, as the activator reads it",
        )
        # Once a replica is ready, the activator steps out of the path.
        wait_for(
            lambda: _activator_slice(cluster, namespace, "idle") is None,
            timeout=TIMEOUT,
            what="the activator slice deleted",
        )
        assert get(cluster, namespace, "deployment", "idle")["spec"]["replicas"] == 1
        events = get(cluster, namespace, "events", "--field-selector", "involvedObject.name=idle")["items"]
        assert "DriftReverted" not in {e["reason"] for e in events}
        assert_no_gitops_drift(cluster, namespace, idle, tmp_path)
    finally:
        operator.restart()
        cluster.kubectl("delete", "namespace", system, "--wait=false")


async def _activator_sees(cluster: Cluster, key: ModelKey, *, wake: bool = True) -> dict[str, Any]:
    """What `moorage activator` reads of a model, and its wake twice (the second finds replicas)."""
    client = AsyncClient(config=KubeConfig.from_file(str(cluster.kubeconfig)))
    try:
        kube = KubeCluster(client, [key.namespace])
        ip = (await client.get(Service, key.name, namespace=key.namespace)).spec.clusterIP
        seen: dict[str, Any] = {
            "hold": await kube.hold_settings(key),
            "endpoints": await kube.ready_endpoints(key),
            "by_ip": await kube.find(ip),
        }
        if wake:
            seen["woke"] = (await kube.wake(key), await kube.wake(key))
        return seen
    finally:
        await client.close()
