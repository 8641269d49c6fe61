"""Autoscaling for real: KEDA and Prometheus, built from their Go modules, run beside the dev cluster
(moorage.devcluster.autoscaling); the chart's operator renders a model's spec.serving.autoscaling as a
ScaledObject, and vLLM's CPU build on the real node reports its queue. A bounded client makes the queue grow
and the model scales out; idleness scales it in; `kubectl scale` and the operator never fight the HPA.

Images come from images/build.sh ($MOORAGE_IMAGES, as for test_real_serving). The tests run in order,
each on what the one before left. The measured numbers are printed at the end.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from test_real_scale_to_zero import chat, manifest
from test_real_serving import Product, installed_product

from moorage.devcluster import Cluster, wait_for
from moorage.devcluster.api import ApiError
from moorage.devcluster.autoscaling import Autoscaling
from moorage.devcluster.fakehub import TINY_SERVABLE

NAMESPACE = "autoscaling"
MODEL = "tiny-scaled"
CLIENTS = 4
"""Clients sending back to back."""
CHOICES = 4
"""Choices (`n`) per request: vLLM schedules each as a sequence of its own, so with one sequence at a time per
replica (--max-num-seqs 1) the rest wait in vLLM's queue. Requests of one choice are answered about as fast as
the client and vLLM's HTTP side turn them around (half a second on 2 cores): the queue, sampled every 5 s,
is then mostly empty and the HPA goes back and forth. Four choices keep it full while the load lasts."""
MAX_TOKENS = 96
"""Tokens of each choice (ignore_eos), within the tiny model's 128 positions."""
SCALE_DOWN_WINDOW_S = 60
BURST_S, PERIOD_S = 8, 20
"""Once the HPA asked for a second replica the load comes in bursts: a queue that is never empty keeps the
one replica's vLLM busy on both cores, and the second could not start. A burst every 20 s is seen by a
scrape (every 5 s), and the HPA keeps the highest count it computed over the scale-down window."""
HPA = f"keda-hpa-{MODEL}"
OPERATOR_USER = "system:serviceaccount:moorage-system:moorage"
HPA_USER = "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
Obj = dict[str, Any]


ZERO_MODEL = "tiny-zero"
ZERO_COOLDOWN_S = 20
"""KEDA's cooldownPeriod (the model's scaleDownWindowSeconds): idle this long, the model goes to zero."""


def model_manifest() -> Obj:
    return {
        "apiVersion": "moorage.dev/v1alpha1",
        "kind": "OpenSourceModel",
        "metadata": {"name": MODEL},
        "spec": {
            "source": {"uri": f"hf://{TINY_SERVABLE}"},
            "serving": {
                "gpus": 0,
                "resources": {"cpu": "500m"},
                "vllm": {"maxModelLen": 128, "extraArgs": ["--enforce-eager", "--max-num-seqs", "1"]},
                "autoscaling": {
                    "minReplicas": 1,
                    "maxReplicas": 2,
                    "target": {"waitingRequests": 1},
                    "scaleDownWindowSeconds": SCALE_DOWN_WINDOW_S,
                },
            },
        },
    }


@pytest.fixture(scope="module")
def stack(real_cluster: Cluster) -> Iterator[Autoscaling]:
    started = time.monotonic()
    with Autoscaling.start(real_cluster) as running:
        up = time.monotonic() - started
        print(f"\nKEDA and Prometheus up in {up:.1f}s, Prometheus at {running.prometheus_url}")
        yield running


@pytest.fixture(scope="module")
def product(real_cluster: Cluster, helm: str, stack: Autoscaling) -> Iterator[Product]:
    with installed_product(
        real_cluster, helm, namespace=NAMESPACE, activator=True, prometheusAddress=stack.prometheus_url
    ) as running:
        yield running


def test_keda_takes_the_model_and_prometheus_scrapes_its_queue(product: Product, stack: Autoscaling) -> None:
    started = time.monotonic()
    product.cluster.apply(model_manifest(), namespace=NAMESPACE)
    wait_for(lambda: _condition(product, "Ready").get("status") == "True", timeout=600, interval=2,
             what=f"{MODEL} Ready (now: {_condition(product, 'Ready')})")  # fmt: skip
    product.timings["ready_s"] = round(time.monotonic() - started, 1)

    def scaling() -> Obj | None:
        found = _condition(product, "Autoscaling")
        return found if found.get("status") == "True" else None

    taken = wait_for(
        scaling, timeout=120, interval=2, what=f"Autoscaling True ({_condition(product, 'Autoscaling')})"
    )
    assert taken["reason"] == "Scaling", taken
    hpa = _get(product, "hpa", HPA)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 2)
    query = product.get("scaledobject", MODEL, namespace=NAMESPACE)["spec"]["triggers"][0]["metadata"][
        "query"
    ]
    # The ScaledObject's own query answers from the real pod's scrape (0 waiting while idle).
    answer = wait_for(
        lambda: stack.query(query), timeout=60, interval=2, what=f"Prometheus answering {query}"
    )
    assert float(answer[0]["value"][1]) == 0
    assert _deployment(product)["spec"]["replicas"] == 1


def test_load_scales_out_and_idleness_scales_in(product: Product, stack: Autoscaling) -> None:
    """The queue grows under load: KEDA's HPA adds a replica; the load stops: after the scale-down window
    it removes it. The Deployment's replicas change exactly twice, each time by the HPA, never by the
    operator."""
    watch = ReplicaWatch(product)
    generation = _deployment(product)["metadata"]["generation"]
    since = _audit_mark(product)
    load = Load(_service_address(product), CLIENTS)
    watch.start()
    load.start()
    try:
        try:
            wait_for(
                lambda: watch.desired == 2, timeout=180, interval=0.5, what="the HPA asking for 2 replicas"
            )
            product.timings["load_to_scale_out_decided_s"] = round(time.monotonic() - load.started, 1)
            load.pace(BURST_S, PERIOD_S)
            wait_for(lambda: watch.ready == 2, timeout=400, interval=1, what="2 replicas ready")
            product.timings["load_to_two_ready_s"] = round(time.monotonic() - load.started, 1)
            # The second replica takes its share (the Service spreads the clients over both): both pods
            # have answered, in Prometheus's scrape of each.
            answered = (
                f'count(sum by (pod) (vllm:time_to_first_token_seconds_count{{namespace="{NAMESPACE}",'
                f'model_name="{MODEL}"}}) > 0)'
            )
            wait_for(lambda: (r := stack.query(answered)) and r[0]["value"][1] == "2", timeout=120,
                     interval=2, what="answers from both replicas")  # fmt: skip
        finally:
            load.stop()
        idle = time.monotonic()
        wait_for(lambda: watch.desired == 1 and watch.ready == 1, timeout=180, interval=0.5,
                 what="scaled back in to 1 replica")  # fmt: skip
        product.timings["idle_to_scale_in_s"] = round(time.monotonic() - idle, 1)
    finally:
        watch.stop()
        print(f"\nload: {load.summary()}")
        print(f"replicas over time (s since load, spec.replicas, ready): {watch.history}")
        print(f"vLLM's queue as Prometheus saw it: {_queue_history(stack, watch.started)}")
    product.timings["load_requests_ok"] = load.ok
    product.timings["load_requests_failed"] = len(load.failures)
    assert load.failures == [], load.failures[:5]
    # Every change of the replicas was the HPA's, through the scale subresource: never the operator's.
    assert _writers(product, since) == {(HPA_USER, "scale")}, _writers(product, since)
    changes = watch.changes()
    # Out to 2 and back to 1. On two shared cores the queue vLLM reports can read empty at the scrapes
    # that follow the decision, and the HPA may go 1, 2, 1, 2, 1: its own choice, on its own signal.
    assert changes[0] == 1 and 2 in changes and changes[-1] == 1 and max(changes) == 2, watch.history
    # No write went unseen between two looks: one change of the Deployment's spec per change seen.
    assert _deployment(product)["metadata"]["generation"] == generation + len(changes) - 1
    _assert_replicas_left_to_the_hpa(product)


def test_kubectl_scale_does_not_fight_the_autoscaler(product: Product) -> None:
    """`kubectl scale osm` only changes serving.replicas, which autoscaling does not use; `kubectl scale
    deploy` is the HPA's to correct, not the operator's: it goes back to the HPA's count once, with no
    DriftReverted and no write by the operator."""
    since = _audit_mark(product)
    product.cluster.kubectl("scale", "osm", MODEL, "-n", NAMESPACE, "--replicas=2", check=True)
    time.sleep(12)  # two syncs of the HPA and of the operator
    assert _deployment(product)["spec"]["replicas"] == 1
    assert _writers(product, since) == set(), _writers(product, since)

    watch = ReplicaWatch(product)
    watch.start()
    try:
        product.cluster.kubectl("scale", "deploy", MODEL, "-n", NAMESPACE, "--replicas=2", check=True)
        wait_for(
            lambda: watch.changes() == [1, 2, 1], timeout=120, interval=0.5, what="the HPA's count again"
        )
        time.sleep(10)  # and it stays there
    finally:
        watch.stop()
    product.timings["kubectl_scale_deploy_reverted_by_hpa_s"] = watch.last_change_s()
    assert watch.changes() == [1, 2, 1], watch.history
    writers = _writers(product, since)
    assert OPERATOR_USER not in {user for user, _ in writers}, writers
    _assert_replicas_left_to_the_hpa(product)


def test_idleness_scales_to_zero_and_a_request_is_held_and_answered(product: Product) -> None:
    """minReplicas 0 with the real KEDA: a model nobody asks goes to zero on its own (KEDA takes a new one
    there at once), the activator holds the next request and wakes it, KEDA reads the held count from the
    activator (its metrics-api trigger, through the cluster's DNS) and keeps the model up, and once idle
    again (its `in-use` trigger inactive for the cooldown) KEDA takes it back to zero."""
    started = time.monotonic()
    product.cluster.apply(
        manifest(name=ZERO_MODEL, namespace=NAMESPACE, scale_down_s=ZERO_COOLDOWN_S), namespace=NAMESPACE
    )
    wait_for(
        lambda: _condition(product, "Ready", ZERO_MODEL).get("status") == "True",
        timeout=600,
        interval=2,
        what=f"{ZERO_MODEL} Ready (now: {_condition(product, 'Ready', ZERO_MODEL)})",
    )
    product.timings["zero_model_ready_s"] = round(time.monotonic() - started, 1)
    ready = time.monotonic()
    # Nobody asks: KEDA takes it to zero, and the model says so.
    wait_for(
        lambda: _condition(product, "Ready", ZERO_MODEL).get("reason") == "ScaledToZero",
        timeout=420,
        interval=2,
        what=f"{ZERO_MODEL} scaled to zero by KEDA (now: {_condition(product, 'Ready', ZERO_MODEL)})",
    )
    product.timings["ready_to_zero_s"] = round(time.monotonic() - ready, 1)
    assert _deployment(product, ZERO_MODEL)["spec"]["replicas"] == 0
    wait_for(lambda: product.get("endpointslice", f"{ZERO_MODEL}-activator", namespace=NAMESPACE),
             timeout=60, what="the model's Service pointed at the activator")  # fmt: skip
    time.sleep(2)  # kube-proxy programs the new endpoints

    sent = time.monotonic()
    status, answer, _ = chat(_service_address(product, ZERO_MODEL), 300, ZERO_MODEL)
    product.timings["cold_start_real_keda_s"] = round(time.monotonic() - sent, 1)
    assert status == 200 and answer["model"] == ZERO_MODEL, answer
    # KEDA keeps the model it did not wake: its triggers (the held count first) are active, none failed.
    assert _deployment(product, ZERO_MODEL)["spec"]["replicas"] == 1
    scaled = _get(product, "scaledobject", ZERO_MODEL)
    conditions = {c["type"]: c for c in scaled["status"]["conditions"]}
    assert conditions["Ready"]["status"] == "True", conditions
    assert "Failing" not in json.dumps(scaled["status"].get("health", {})), scaled["status"]
    wait_for(lambda: product.get("endpointslice", f"{ZERO_MODEL}-activator", namespace=NAMESPACE) is None,
             timeout=60, what="the activator out of the path")  # fmt: skip
    status, _, _ = chat(_service_address(product, ZERO_MODEL), 60, ZERO_MODEL)
    assert status == 200
    # Idle again: once its last answers age out of `in-use` (two minutes) and the cooldown passes, KEDA
    # takes it back to zero; nobody else writes its replicas.
    answered = time.monotonic()
    wait_for(
        lambda: _condition(product, "Ready", ZERO_MODEL).get("reason") == "ScaledToZero",
        timeout=420,
        interval=2,
        what=f"{ZERO_MODEL} idle, back to zero (now: {_condition(product, 'Ready', ZERO_MODEL)})",
    )
    product.timings["last_answer_to_zero_s"] = round(time.monotonic() - answered, 1)
    assert _deployment(product, ZERO_MODEL)["spec"]["replicas"] == 0
    product.cluster.kubectl(
        "delete", "osm", ZERO_MODEL, "-n", NAMESPACE, "--wait=true", check=True, timeout=120
    )


def test_delete_removes_the_scaler(product: Product) -> None:
    product.cluster.kubectl("delete", "osm", MODEL, "-n", NAMESPACE, "--wait=true", check=True, timeout=120)
    wait_for(
        lambda: not product.get("scaledobjects,hpa,deploy", namespace=NAMESPACE)["items"],
        timeout=120,
        interval=2,
        what="the ScaledObject, its HPA and the Deployment gone",
    )
    print(f"\nautoscaling timings: {json.dumps(product.timings)}")


# ---- helpers


def _get(product: Product, *what: str) -> Obj:
    found: Obj = product.get(*what, namespace=NAMESPACE)
    assert found is not None, what
    return found


def _deployment(product: Product, name: str = MODEL) -> Obj:
    return product.cluster.api.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}")


def _condition(product: Product, type_: str, name: str = MODEL) -> Obj:
    obj = product.get("osm", name, namespace=NAMESPACE) or {}
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {})


def _service_address(product: Product, name: str = MODEL) -> str:
    return f"http://{_get(product, 'svc', name)['spec']['clusterIP']}:8000"


def _assert_replicas_left_to_the_hpa(product: Product) -> None:
    """No apply owns spec.replicas (the operator's leaves it out, its hand-over gave it up): only writes
    through the scale subresource (the HPA's, kubectl scale's) may; and the operator never wrote it back."""
    entries = _deployment(product)["metadata"]["managedFields"]
    owners = {
        (entry["manager"], entry.get("subresource", ""))
        for entry in entries
        if "f:replicas" in entry.get("fieldsV1", {}).get("f:spec", {})
    }
    print(f"spec.replicas owned by {owners or 'nobody'}")
    assert {subresource for _, subresource in owners} <= {"scale"}, entries
    assert not any(manager.startswith("moorage") for manager, _ in owners), entries
    drift = product.get("events", "--field-selector", "reason=DriftReverted", namespace=NAMESPACE)["items"]
    assert drift == [], [e["message"] for e in drift]


def _queue_history(stack: Autoscaling, since: float) -> str:
    """Requests waiting and running per pod every 5 s since ``since`` (monotonic), as Prometheus saw them."""
    lines = []
    for metric in ("vllm:num_requests_waiting", "vllm:num_requests_running"):
        window = f"{int(time.monotonic() - since) + 5}s"
        expr = f'{metric}{{namespace="{NAMESPACE}",model_name="{MODEL}"}}[{window}]'
        for series in stack.query(expr):
            values = " ".join(value for _, value in series["values"])
            lines.append(f"{metric} {series['metric'].get('pod')}: {values}")
    return "\n" + "\n".join(lines)


def _audit_mark(product: Product) -> int:
    """Where the audit log ends now: :func:`_writers` reads what comes after."""
    return product.cluster.audit_log.stat().st_size


def _writers(product: Product, since: int) -> set[tuple[str, str]]:
    """(user, subresource) of every write to the model's Deployment in the audit log after ``since``."""
    with product.cluster.audit_log.open("rb") as log:
        log.seek(since)
        lines = log.read().splitlines()
    writers = set()
    for line in lines:
        event = json.loads(line)
        ref = event.get("objectRef", {})
        if (
            event.get("verb") in {"create", "update", "patch"}
            and ref.get("resource") == "deployments"
            and ref.get("namespace") == NAMESPACE
            and ref.get("name") == MODEL
            and ref.get("subresource", "") != "status"  # the Deployment controller's report
            and event.get("responseStatus", {}).get("code", 0) < 300
        ):
            writers.add((event["user"]["username"], ref.get("subresource", "")))
    return writers


class ReplicaWatch:
    """Looks at the Deployment every 0.5 s and keeps each change of (spec.replicas, ready replicas)."""

    def __init__(self, product: Product) -> None:
        self.product = product
        self.started = time.monotonic()
        self.history: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._look()

    @property
    def desired(self) -> int:
        return self.history[-1][1]

    @property
    def ready(self) -> int:
        return self.history[-1][2]

    def changes(self) -> list[int]:
        """The successive values of spec.replicas."""
        values: list[int] = []
        for _, replicas, _ready in self.history:
            if not values or values[-1] != replicas:
                values.append(replicas)
        return values

    def last_change_s(self) -> float:
        """Seconds from the start of the watch to the last change of spec.replicas."""
        changes = [t for (t, replicas, _), (_, before, _) in zip(self.history[1:], self.history, strict=False)
                   if replicas != before]  # fmt: skip
        return changes[-1] if changes else 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _look(self) -> None:
        deployment = _deployment(self.product)
        now = (deployment["spec"]["replicas"], deployment.get("status", {}).get("readyReplicas", 0))
        if not self.history or self.history[-1][1:] != now:
            self.history.append((round(time.monotonic() - self.started, 1), *now))

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            # A slow API server (2 busy cores) times a look out now and then: the next one sees the same.
            with contextlib.suppress(OSError, ApiError):
                self._look()


class Load:
    """``clients`` threads, each sending chat completions back to back through the Service."""

    def __init__(self, base: str, clients: int, limit_s: float = 600) -> None:
        self.base, self.deadline = base, time.monotonic() + limit_s
        self.started = time.monotonic()
        self.ok = 0
        self.failures: list[str] = []
        self.seconds: list[float] = []
        """How long each answered request took."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pacing: tuple[float, float, float] | None = None
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def pace(self, burst_s: float, period_s: float) -> None:
        """From now on, send for ``burst_s`` seconds out of every ``period_s``."""
        self._pacing = (time.monotonic(), burst_s, period_s)

    def _wait_for_burst(self) -> None:
        if self._pacing is None:
            return
        since, burst_s, period_s = self._pacing
        phase = (time.monotonic() - since) % period_s
        if phase >= burst_s:
            self._stop.wait(period_s - phase)

    def start(self) -> None:
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(150)

    def _run(self) -> None:
        body = {
            "model": MODEL,
            "max_tokens": MAX_TOKENS,
            "n": CHOICES,
            "ignore_eos": True,
            "messages": [{"role": "user", "content": "w4 w5"}],
        }
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            self._wait_for_burst()
            if self._stop.is_set():
                break
            request = urllib.request.Request(
                f"{self.base}/v1/chat/completions",
                json.dumps(body).encode(),
                {"Content-Type": "application/json"},
            )
            sent = time.monotonic()
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    answer = json.loads(response.read())
                tokens = answer["usage"]["completion_tokens"]
                if len(answer["choices"]) != CHOICES or tokens != CHOICES * MAX_TOKENS:
                    raise ValueError(f"{len(answer['choices'])} choices of {tokens} tokens in all")
                with self._lock:
                    self.ok += 1
                    self.seconds.append(time.monotonic() - sent)
            except Exception as error:  # every failure is counted, and the client goes on
                detail = (
                    error.read().decode(errors="replace")[:200]
                    if isinstance(error, urllib.error.HTTPError)
                    else ""
                )
                with self._lock:
                    self.failures.append(
                        f"{time.strftime('%H:%M:%S')} {type(error).__name__}: {error} {detail}"
                    )
                self._stop.wait(1)

    def summary(self) -> str:
        with self._lock:
            took = f", median {statistics.median(self.seconds):.2f}s each" if self.seconds else ""
            return f"{self.ok} answered{took}; {len(self.failures)} failed: {self.failures[:3]}"
