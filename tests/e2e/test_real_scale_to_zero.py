"""Scale to zero and back on the real node: a model served by vLLM's CPU build with autoscaling.minReplicas 0,
the chart's activator, KEDA's real ScaledObject CRD (KEDA's controllers are played by the test: it scales the
Deployment to zero through the scale subresource, as KEDA does when the model is idle). A chat completion
sent to the model's Service at zero is held by the activator, which wakes the model, and answered; one that
waits longer than coldStart.holdTimeoutSeconds gets a clear 503.

Images come from images/build.sh ($MOORAGE_IMAGES, see test_real_serving.py). The tests run in order.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from gitops import assert_no_gitops_drift
from test_real_serving import installed_product

from moorage.devcluster import Cluster, wait_for
from moorage.devcluster.fakehub import TINY_SERVABLE, FakeHub

NAMESPACE = "cold"
SYSTEM = "moorage-system"
MODEL = "tiny-cold"
SLICE = f"{MODEL}-activator"
HOLD_S = 420
SHORT_HOLD_S = 5
Obj = dict[str, Any]


def manifest(
    hold_s: int = HOLD_S,
    *,
    name: str = MODEL,
    namespace: str = NAMESPACE,
    scale_down_s: int | None = None,
) -> Obj:
    """A tiny model on CPU that scales to zero, held at most `hold_s` while it wakes up."""
    autoscaling: Obj = {
        "minReplicas": 0,
        "maxReplicas": 1,
        "coldStart": {"holdTimeoutSeconds": hold_s, "maxQueued": 10},
    }
    if scale_down_s is not None:
        autoscaling["scaleDownWindowSeconds"] = scale_down_s
    return {
        "apiVersion": "moorage.dev/v1alpha1",
        "kind": "OpenSourceModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "source": {"uri": f"hf://{TINY_SERVABLE}"},
            "serving": {
                "gpus": 0,
                "resources": {"cpu": "500m"},
                "vllm": {"maxModelLen": 128, "extraArgs": ["--enforce-eager"]},
                "autoscaling": autoscaling,
            },
        },
    }


@dataclass
class Product:
    cluster: Cluster
    hub: FakeHub
    timings: dict[str, float] = field(default_factory=dict)

    def get(self, *what: str, namespace: str = NAMESPACE) -> Any:
        return self.cluster.get_json(*what, "-n", namespace)

    def condition(self, type_: str) -> Obj:
        obj = self.get("osm", MODEL) or {}
        return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {})

    def service(self) -> str:
        return f"http://{self.get('svc', MODEL)['spec']['clusterIP']}:8000"

    def activator_ips(self) -> set[str]:
        pods = self.get("pods", "-l", "app.kubernetes.io/name=moorage-activator", namespace=SYSTEM)["items"]
        return {p["status"].get("podIP") for p in pods if p["status"].get("podIP")}

    def serving_pods(self) -> list[Obj]:
        pods = self.get("pods", "-l", f"moorage.dev/model={MODEL},app.kubernetes.io/component=serving")[
            "items"
        ]
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")]

    def scale_to_zero(self) -> None:
        """What KEDA does when the model has been idle for cooldownPeriod: the scale subresource to 0."""
        self.cluster.kubectl("scale", f"deploy/{MODEL}", "--replicas=0", "-n", NAMESPACE, check=True)
        wait_for(lambda: not self.serving_pods(), timeout=180, interval=1, what="the serving pods gone")
        wait_for(
            lambda: (
                {
                    a
                    for e in (self.get("endpointslice", SLICE) or {}).get("endpoints") or []
                    for a in e["addresses"]
                }
                == self.activator_ips()
            ),
            timeout=60,
            interval=0.5,
            what="the model's Service pointed at the activator",
        )
        time.sleep(2)  # kube-proxy programs the new endpoints (iptables sync)

    def logs(self) -> str:
        operator = self.cluster.kubectl("logs", "-n", SYSTEM, "deploy/moorage", "--tail=100").stdout
        activator = self.cluster.kubectl(
            "logs", "-n", SYSTEM, "deploy/moorage-activator", "--tail=100"
        ).stdout
        return f"---- operator ----\n{operator}\n---- activator ----\n{activator}"


@pytest.fixture(scope="module")
def product(real_cluster: Cluster, real_keda_crd: str, helm: str) -> Iterator[Product]:
    with installed_product(real_cluster, helm, namespace=NAMESPACE, activator=True) as installed:
        running = Product(real_cluster, installed.hub)
        try:
            yield running
        finally:
            print(f"\nscale-to-zero timings: {json.dumps(running.timings)}")
            print(running.logs()[-8000:])


def chat(base: str, timeout: float, model: str = MODEL) -> tuple[int, Obj, dict[str, str]]:
    """One short chat request to `model` at `base`: the status, the answer and the headers."""
    body = {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "w4 w5"}]}
    request = urllib.request.Request(
        f"{base}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}"), dict(error.headers)


def _start_phases(pod: Obj) -> dict[str, float]:
    """Where a cold start went, from the pod's own timestamps (whole seconds): from the pod's creation to
    its container running (scheduling, container start), and from there to Ready (vLLM's start, probes)."""

    def at(stamp: str) -> datetime:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    created = at(pod["metadata"]["creationTimestamp"])
    running = at(pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"])
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    return {
        "pod_created_to_running_s": (running - created).total_seconds(),
        "running_to_ready_s": (at(ready["lastTransitionTime"]) - running).total_seconds(),
    }


def test_a_model_that_scales_to_zero_comes_up_and_leaves_replicas_to_the_scaler(product: Product) -> None:
    started = time.monotonic()
    product.cluster.apply(manifest(), namespace=NAMESPACE)
    wait_for(
        lambda: product.condition("Ready").get("status") == "True",
        timeout=900,
        interval=2,
        what=f"{MODEL} Ready (now: {product.condition('Ready')})\n{product.logs()}",
    )
    product.timings["first_ready_s"] = round(time.monotonic() - started, 1)
    scaled = product.get("scaledobject", MODEL)
    assert scaled["spec"]["minReplicaCount"] == 0
    assert [t["name"] for t in scaled["spec"]["triggers"]] == ["num-requests-waiting", "in-use", "held"]
    held = scaled["spec"]["triggers"][2]["metadata"]["url"]
    assert held == f"http://moorage-activator.{SYSTEM}.svc.cluster.local:9090/held/{NAMESPACE}/{MODEL}"
    deployment = product.get("deploy", MODEL)
    assert deployment["metadata"]["annotations"]["moorage.dev/replicas-owner"] == "autoscaler"
    # A replica is ready: the activator is out of the path.
    wait_for(lambda: product.get("endpointslice", SLICE) is None, timeout=60, what="no activator slice")
    status, answer, _ = chat(product.service(), timeout=60)
    assert status == 200 and answer["model"] == MODEL


def test_a_request_at_zero_is_held_and_answered(product: Product, tmp_path: Path) -> None:
    product.scale_to_zero()
    sent = time.monotonic()
    status, answer, _ = chat(product.service(), timeout=HOLD_S + 30)
    product.timings["cold_start_s"] = round(time.monotonic() - sent, 1)
    assert status == 200, f"{answer}\n{product.logs()}"
    assert answer["model"] == MODEL and answer["choices"][0]["message"]["role"] == "assistant"
    assert product.get("deploy", MODEL)["spec"]["replicas"] == 1, "woken through the scale subresource"
    product.timings |= _start_phases(product.serving_pods()[0])
    # The activator steps out of the data path once the replica is ready.
    wait_for(lambda: product.get("endpointslice", SLICE) is None, timeout=60, what="activator slice deleted")
    status, _, _ = chat(product.service(), timeout=60)
    assert status == 200
    activator_log = product.cluster.kubectl("logs", "-n", SYSTEM, "deploy/moorage-activator").stdout
    assert f"{NAMESPACE}/{MODEL}: scaled 0 -> 1 replica" in activator_log
    events = product.get("events", "--field-selector", f"involvedObject.name={MODEL}")["items"]
    assert "DriftReverted" not in {e["reason"] for e in events}, "the operator never fought the wake"
    assert_no_gitops_drift(product.cluster, NAMESPACE, manifest(), tmp_path)


def test_a_request_past_the_hold_timeout_gets_a_clear_503(product: Product) -> None:
    product.cluster.apply(manifest(SHORT_HOLD_S), namespace=NAMESPACE)
    wait_for(
        lambda: (
            f'"holdTimeoutSeconds": {SHORT_HOLD_S}'
            in product.get("deploy", MODEL)["metadata"]["annotations"].get("moorage.dev/cold-start", "")
        ),
        timeout=60,
        what="the new coldStart on the Deployment",
    )
    product.scale_to_zero()
    time.sleep(10)  # the activator rereads a model's settings every 10 s
    sent = time.monotonic()
    status, answer, headers = chat(product.service(), timeout=60)
    waited = time.monotonic() - sent
    assert status == 503, f"{answer}\n{product.logs()}"
    assert answer["error"]["type"] == "model_not_ready" and "holdTimeoutSeconds" in answer["error"]["message"]
    assert headers.get("Retry-After") == "30"
    assert SHORT_HOLD_S <= waited < SHORT_HOLD_S + 10
    # The request woke the model all the same: it comes back and serves.
    wait_for(
        lambda: (
            product.condition("Ready").get("status") == "True" and product.get("endpointslice", SLICE) is None
        ),
        timeout=600,
        interval=2,
        what="the model back after the timed-out request",
    )
