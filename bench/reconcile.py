"""How fast the operator brings models up, how many writes that costs, and how many it makes at idle.

Runs the real control plane with fake GPU nodes (moorage.devcluster), a local hub and `moorage run`;
applies N models at once and prints: time until all are Ready, API writes by the operator per model, and
writes during a quiet period (the goal is 0). Also times the pure plan + status of one model.

    .venv/bin/python bench/reconcile.py [--models 40] [--quiet-seconds 20]
"""

import argparse
import json
import tempfile
import time
import timeit
from pathlib import Path

from moorage.api.model import OpenSourceModel
from moorage.api.resolved import HubFile, ResolvedSource
from moorage.demo import stack
from moorage.devcluster import ADMIN_USER, Cluster
from moorage.devcluster.fakehub import TINY_MODEL
from moorage.plan.children import plan
from moorage.plan.config import PlanConfig
from moorage.plan.observed import JobState, Observed
from moorage.plan.status import status

WRITES = {"create", "update", "patch", "delete"}


def bench_plan() -> float:
    model = OpenSourceModel.parse(
        {
            "metadata": {"name": "m", "namespace": "ns", "uid": "u"},
            "spec": {"source": {"uri": "hf://org/m"}, "serving": {"replicas": 3}},
        }
    )
    resolved = ResolvedSource(
        "hf://org/m",
        "org/m",
        "model",
        "main",
        "a" * 40,
        (HubFile("model.safetensors", 10**9, "f" * 64),),
        parameters=10**9,
        dtype="BF16",
    )
    observed = Observed(resolved=resolved, pull=JobState(succeeded=True))
    config = PlanConfig()

    def once() -> None:
        status(model, observed, plan(model, observed, config), config, "2026-01-01T00:00:00Z")

    runs = 2000
    return timeit.timeit(once, number=runs) / runs


def operator_writes(cluster: Cluster, since: float, until: float) -> int:
    count = 0
    for line in cluster.audit_log.read_text().splitlines():
        event = json.loads(line)
        stamp = time.mktime(time.strptime(event["requestReceivedTimestamp"][:19], "%Y-%m-%dT%H:%M:%S"))
        stamp -= time.timezone
        if since <= stamp <= until and event["user"]["username"] == ADMIN_USER and event["verb"] in WRITES:
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=40)
    parser.add_argument("--quiet-seconds", type=float, default=20)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()

    print(f"plan + status of one model: {bench_plan() * 1e6:.0f} µs")
    gpu_nodes = -(-args.models // 8)  # one GPU per model, 8 per fake node
    with (
        tempfile.TemporaryDirectory(prefix="moorage-bench-") as tmp,
        stack(Path(tmp), gpu_nodes) as (cluster, _, operator),
    ):
        cluster.kubectl("create", "namespace", "bench", check=True)
        models = [
            {
                "apiVersion": "moorage.dev/v1alpha1",
                "kind": "OpenSourceModel",
                "metadata": {"name": f"m{i}"},
                "spec": {"source": {"uri": f"hf://{TINY_MODEL}"}},
            }
            for i in range(args.models)
        ]
        applied = time.time()
        cluster.apply(*models, namespace="bench")
        while True:
            listing = cluster.get_json("osm", "-n", "bench")["items"]
            ready = sum(
                any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in m.get("status", {}).get("conditions", [])
                )
                for m in listing
            )
            if ready == args.models:
                break
            if time.time() - applied > args.timeout:
                print(cluster.kubectl("get", "osm", "-n", "bench", "-o", "wide").stdout)
                print(operator.log()[-5000:])
                raise SystemExit(f"only {ready} of {args.models} models Ready after {args.timeout:.0f} s")
            time.sleep(0.5)
        converged = time.time()
        time.sleep(3)
        quiet_start = time.time()
        time.sleep(args.quiet_seconds)
        quiet_end = time.time()
        # The test's own kubectl apply is one write; everything else by the admin user is the operator.
        busy = operator_writes(cluster, applied, converged + 3) - 1
        idle = operator_writes(cluster, quiet_start, quiet_end)
    took = converged - applied
    print(f"{args.models} models Ready in {took:.1f} s ({took / args.models * 1000:.0f} ms each)")
    print(f"operator writes while converging: {busy} ({busy / args.models:.1f} per model)")
    print(f"operator writes in {args.quiet_seconds:.0f} s of quiet: {idle} (goal: 0)")


if __name__ == "__main__":
    main()
