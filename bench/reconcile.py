"""How the operator scales: N models on one operator, the real control plane, fake (kwok) GPU nodes.

For each N asked (default 100, 300 and 1000) it starts a fresh dev cluster, a local hub and `moorage run`,
then applies N models server-side in batches (direct API calls, no client timeouts): half of them share a
few base repositories, the others each have a base of their own. It prints, per N and per model:

- the time from the first apply until every model is Ready, and apply → Ready median and p95;
- apply → first child (the pull Job) and apply → Deployment, median and p95 (from the API server's audit log);
- the operator's API writes (by kind) and reads while converging, per model;
- the operator's writes, reads and watch (re)starts per minute at idle, after all are Ready;
- the operator's peak RSS and CPU time, and the machine's load average (other work shares the cores).

    .venv/bin/python bench/reconcile.py [--models 100 300 1000] [--idle-seconds 60] [--profile]

`--profile DIR` runs the operator under py-spy (`pip install py-spy`) and writes its collapsed stacks per N
(flamegraph.pl or speedscope read them), and the API server's CPU profile over the first minute from the
first apply (`go tool pprof -top` reads it); `--logs DIR` keeps the operator's log and the audit log.
"""

import argparse
import http.client
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from moorage.api.model import OpenSourceModel
from moorage.api.resolved import HubFile, ResolvedSource
from moorage.demo import OperatorProcess, install_crd
from moorage.devcluster import ADMIN_USER, Cluster
from moorage.devcluster.fakehub import FakeHub, add_demo_repos, commit_sha
from moorage.devcluster.tinymodel import model_files
from moorage.plan.children import plan
from moorage.plan.config import PlanConfig
from moorage.plan.observed import JobState, Observed
from moorage.plan.status import status
from moorage.plan.weights import pull_job_name

NAMESPACE = "bench"
USER_AGENT = "moorage-bench"
BATCH = 50
SHARED_BASES = 4
WRITES = {"create", "update", "patch", "delete", "deletecollection"}
READS = {"get", "list"}
PLURAL = "/apis/moorage.dev/v1alpha1/namespaces/bench/opensourcemodels"


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


def bases(count: int) -> list[str]:
    """Each model's base repository: every other model on one of a few shared bases, the rest on their own."""
    return [f"bench/shared-{i % SHARED_BASES}" if i % 2 == 0 else f"bench/own-{i}" for i in range(count)]


def serve_bases(hub: FakeHub, repos: set[str]) -> None:
    files = model_files()
    sha = commit_sha(files)
    for repo in repos:
        hub.add_repo(repo, files, revisions={"main": sha})


def pull_jobs(models: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each pull Job's name, and the models that wait for it: one pull per weights volume."""
    sha = commit_sha(model_files())
    jobs: dict[str, list[str]] = defaultdict(list)
    for body in models:
        model = OpenSourceModel.parse(body)
        repo = model.spec.source.uri.removeprefix("hf://")
        resolved = ResolvedSource(model.spec.source.uri, repo, "model", "main", sha, ())
        jobs[pull_job_name(model, resolved)].append(model.metadata.name)
    return jobs


def manifest(index: int, base: str) -> dict[str, Any]:
    return {
        "apiVersion": "moorage.dev/v1alpha1",
        "kind": "OpenSourceModel",
        "metadata": {"name": f"m{index:04d}", "namespace": NAMESPACE},
        "spec": {"source": {"uri": f"hf://{base}"}},
    }


class Api:
    """The admin's client certificate, our own user agent (so the audit log tells our calls apart)."""

    def __init__(self, cluster: Cluster) -> None:
        self.server = cluster.server
        self.context = cluster.api._context
        self._connections = threading.local()

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "") -> Any:
        """One request on this thread's kept-alive connection, as kubectl's client keeps one: a new TLS
        handshake per request would cost the API server more than many of the requests measured."""
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            connection = getattr(self._connections, "one", None)
            if connection is None:
                host = urllib.parse.urlsplit(self.server).netloc
                connection = http.client.HTTPSConnection(host, context=self.context, timeout=300)
                self._connections.one = connection
            try:
                connection.request(method, path, body, headers)
                response = connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                self._connections.one = None
                if attempt == 2:
                    raise
                continue
            if response.status >= 400:
                raise OSError(f"{method} {path}: HTTP {response.status}: {data[:300]!r}")
            return json.loads(data or b"{}")
        raise AssertionError("unreachable")

    def cpu_profile(self, seconds: int, into: Path) -> None:
        """The API server's own CPU profile (Go pprof) over the next `seconds`: `go tool pprof -top` reads
        it."""
        req = urllib.request.Request(f"{self.server}/debug/pprof/profile?seconds={seconds}")
        req.add_header("User-Agent", USER_AGENT)
        with urllib.request.urlopen(req, context=self.context, timeout=seconds + 60) as resp:
            into.write_bytes(resp.read())

    def apply(self, obj: dict[str, Any]) -> None:
        """Server-side apply, as `kubectl apply --server-side` does, one request per object."""
        path = f"{PLURAL}/{obj['metadata']['name']}?fieldManager=bench&force=true"
        self.request("PATCH", path, json.dumps(obj).encode(), "application/apply-patch+yaml")

    def watch_ready(self, ready: dict[str, float], stop: threading.Event) -> None:
        """Records when each model is first seen Ready (a watch: one stream, not a list per poll)."""
        while not stop.is_set():
            try:
                self._watch(ready, stop)
            except (OSError, ValueError) as error:  # a busy API server answers 504 now and then
                print(f"  (watch of the models: {error}; again)", flush=True)
                time.sleep(1)

    def _watch(self, ready: dict[str, float], stop: threading.Event) -> None:
        listing = self.request("GET", PLURAL)
        for item in listing["items"]:
            self._seen(item, ready)
        version = listing["metadata"]["resourceVersion"]
        path = f"{PLURAL}?watch=1&allowWatchBookmarks=true&timeoutSeconds=60&resourceVersion={version}"
        req = urllib.request.Request(self.server + path)
        req.add_header("User-Agent", USER_AGENT)
        with urllib.request.urlopen(req, context=self.context, timeout=120) as stream:
            for line in stream:
                if stop.is_set():
                    return
                event = json.loads(line)
                if event["type"] in ("ADDED", "MODIFIED"):
                    self._seen(event["object"], ready)

    @staticmethod
    def _seen(item: dict[str, Any], ready: dict[str, float]) -> None:
        name = item["metadata"]["name"]
        conditions = (item.get("status") or {}).get("conditions") or []
        if name not in ready and any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            ready[name] = time.time()


@dataclass
class Audited:
    """The audit log, read once: when each request was received, by whom, on what."""

    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> "Audited":
        events = []
        for line in path.read_text(errors="replace").splitlines():
            event = json.loads(line)
            stamp = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
            event["t"] = stamp.timestamp()
            events.append(event)
        return cls(events)

    def operator(self, since: float, until: float) -> list[dict[str, Any]]:
        """Completed requests by the operator: the admin user, not us, not kubectl."""
        return [
            e
            for e in self.events
            if since <= e["t"] <= until
            and e["user"]["username"] == ADMIN_USER
            and not e.get("userAgent", "").startswith((USER_AGENT, "kubectl", "Python-urllib"))
            and (
                e["stage"] == "ResponseComplete" or (e["verb"] == "watch" and e["stage"] == "ResponseStarted")
            )
            and not (e["verb"] == "watch" and e["stage"] == "ResponseComplete")
        ]

    def first(self, since: float, verbs: set[str], ours: bool) -> dict[tuple[str, str], float]:
        """(resource, name) → when the bench (ours) or the operator first wrote it with one of `verbs`."""
        firsts: dict[tuple[str, str], float] = {}
        for e in self.events:
            if e["t"] < since or e["verb"] not in verbs or e["stage"] != "ResponseComplete":
                continue
            agent = e.get("userAgent", "")
            if e["user"]["username"] != ADMIN_USER or agent.startswith(USER_AGENT) != ours:
                continue
            ref = e.get("objectRef") or {}
            firsts.setdefault((ref.get("resource", ""), ref.get("name", "")), e["t"])
        return firsts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")


def proc_stats(pid: int) -> tuple[float, float]:
    """Peak RSS (MiB) and CPU seconds of a running process."""
    status_text = Path(f"/proc/{pid}/status").read_text()
    peak = next(int(line.split()[1]) for line in status_text.splitlines() if line.startswith("VmHWM:"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return peak / 1024, (int(fields[11]) + int(fields[12])) / ticks


def cpu_seconds(cluster: Cluster, operator: OperatorProcess) -> dict[str, float]:
    """CPU seconds so far of each process at work: the operator, each cluster component, this bench."""
    pids = {**cluster.pids(), "operator": operator_pid(operator.process)}
    found = {name: proc_stats(pid)[1] for name, pid in pids.items() if Path(f"/proc/{pid}").exists()}
    return found | {"bench (applies, watch)": time.process_time()}


def operator_pid(process: subprocess.Popen[bytes]) -> int:
    """The Python process itself (under py-spy, its child)."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    kids = children.read_text().split() if children.exists() else []
    return int(kids[0]) if kids else process.pid


def run(
    count: int, idle_seconds: float, timeout: float, profile: Path | None, logs: Path | None
) -> dict[str, Any]:
    load_before = os.getloadavg()
    models = [manifest(i, base) for i, base in enumerate(bases(count))]
    with tempfile.TemporaryDirectory(prefix="moorage-bench-") as tmp:
        workdir = Path(tmp)
        started = time.time()
        with (
            Cluster.start(
                workdir / "cluster", gpu_nodes=math.ceil(count / 8) + 1, profiling=profile is not None
            ) as cluster,
            FakeHub().start() as hub,
        ):
            add_demo_repos(hub)
            serve_bases(hub, {m["spec"]["source"]["uri"].removeprefix("hf://") for m in models})
            install_crd(cluster)
            cluster.kubectl("create", "namespace", NAMESPACE, check=True)
            wrapper: tuple[str, ...] = ()
            if profile is not None:
                spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
                wrapper = (spy, "record", "--nonblocking", "--format", "raw", "-o", str(profile), "--")
            operator = OperatorProcess(cluster, hub.url, workdir / "operator.log", wrapper=wrapper)
            print(f"  cluster, hub and operator up in {time.time() - started:.0f} s", flush=True)
            time.sleep(5)  # the operator's watches are up: what follows is the models' cost alone
            api = Api(cluster)
            ready: dict[str, float] = {}
            stop = threading.Event()
            watcher = threading.Thread(target=api.watch_ready, args=(ready, stop), daemon=True)
            watcher.start()
            if profile is not None:  # the API server's first minute of the run, beside the operator's
                into = profile.with_name(f"kube-apiserver-{count}.pprof")
                threading.Thread(target=api.cpu_profile, args=(60, into), daemon=True).start()
            cpu_at_start = cpu_seconds(cluster, operator)
            first_apply = time.time()
            with ThreadPoolExecutor(max_workers=8) as pool:
                for at in range(0, count, BATCH):
                    list(pool.map(api.apply, models[at : at + BATCH]))
            applied = time.time()
            while len(ready) < count:
                if time.time() - first_apply > timeout:
                    print(operator.log()[-3000:])
                    stop.set()
                    operator.stop()
                    raise SystemExit(f"only {len(ready)} of {count} models Ready after {timeout:.0f} s")
                time.sleep(0.2)
            converged = max(ready.values())
            cpu_busy = {k: v - cpu_at_start.get(k, 0.0) for k, v in cpu_seconds(cluster, operator).items()}
            time.sleep(5)  # the last events of the rollouts drain
            quiet_start = time.time()
            time.sleep(idle_seconds)
            quiet_end = time.time()
            pid = operator_pid(operator.process)
            rss, cpu = proc_stats(pid)
            stop.set()
            if pid != operator.process.pid:
                os.kill(pid, signal.SIGTERM)  # py-spy writes its profile when its child ends
                operator.process.wait(timeout=60)
            operator.stop()
            audit = Audited.read(cluster.audit_log)
            if logs is not None:
                logs.mkdir(parents=True, exist_ok=True)
                shutil.copy(workdir / "operator.log", logs / f"operator-{count}.log")
                shutil.copy(cluster.audit_log, logs / f"audit-{count}.log")
                shutil.copy(cluster.logs_dir / "kube-apiserver.log", logs / f"kube-apiserver-{count}.log")
    load_after = os.getloadavg()

    busy = audit.operator(first_apply, converged + 5)
    idle = audit.operator(quiet_start, quiet_end)
    applies = audit.first(first_apply, {"patch"}, ours=True)
    written = audit.first(first_apply, {"create", "patch"}, ours=False)
    apply_at = {m["metadata"]["name"]: applies[("opensourcemodels", m["metadata"]["name"])] for m in models}
    pulls = pull_jobs(models)
    job_at: dict[str, float] = {}
    for (resource, name), at in written.items():
        for owner in pulls.get(name, []) if resource == "jobs" else []:
            job_at[owner] = min(at, job_at.get(owner, at))
    # 0 for a model whose volume's pull had begun before it came.
    to_job = [max(0.0, job_at[name] - at) for name, at in apply_at.items() if name in job_at]
    to_deployment = [
        written[("deployments", name)] - at
        for name, at in apply_at.items()
        if ("deployments", name) in written
    ]
    to_ready = [ready[name] - at for name, at in apply_at.items()]
    writes = [e for e in busy if e["verb"] in WRITES]
    by_kind = _by_kind(writes)
    steps = phases(audit, first_apply, apply_at, ready, pulls)
    minutes = (quiet_end - quiet_start) / 60
    return {
        "models": count,
        "all_ready_s": converged - first_apply,
        "apply_s": applied - first_apply,
        "ready_p50": statistics.median(to_ready),
        "ready_p95": percentile(to_ready, 0.95),
        "job_p50": statistics.median(to_job) if to_job else float("nan"),
        "job_p95": percentile(to_job, 0.95),
        "deploy_p50": statistics.median(to_deployment),
        "deploy_p95": percentile(to_deployment, 0.95),
        "writes": len(writes),
        "writes_by_kind": by_kind,
        "reads": sum(e["verb"] in READS for e in busy),
        "reads_by_kind": _by_kind([e for e in busy if e["verb"] in READS]),
        "idle_writes_min": sum(e["verb"] in WRITES for e in idle) / minutes,
        "idle_reads_min": sum(e["verb"] in READS for e in idle) / minutes,
        "idle_watches_min": sum(e["verb"] == "watch" for e in idle) / minutes,
        "idle_other": sorted({f"{e['verb']} {e['requestURI']}" for e in idle if e["verb"] != "watch"})[:5],
        "phases": steps,
        "cpu_busy": {k: round(v, 1) for k, v in sorted(cpu_busy.items(), key=lambda kv: -kv[1])},
        "rss_mib": rss,
        "cpu_s": cpu,
        "load": (load_before[0], load_after[0]),
    }


PHASES = (
    ("apply → pull Job (operator)", "apply", "job"),
    ("pull Job → its pod bound (PVC bound, scheduler)", "job", "pull_bound"),
    ("pod bound → pull done (kwok, controller-manager)", "pull_bound", "pull_done"),
    ("pull done → Deployment (controller-manager: Job complete; operator)", "pull_done", "deploy"),
    ("Deployment → serving pod bound (controller-manager, scheduler)", "deploy", "serve_bound"),
    ("pod bound → running (kwok)", "serve_bound", "serve_running"),
    ("running → Ready in status (controller-manager, operator)", "serve_running", "ready"),
)


def phases(
    audit: Audited,
    since: float,
    apply_at: dict[str, float],
    ready: dict[str, float],
    pulls: dict[str, list[str]],
) -> dict[str, float]:
    """Where a model's time goes, from the audit log: the median of each step over the models that pulled."""
    marks: dict[str, dict[str, float]] = {
        name: {"apply": at, "ready": ready[name]} for name, at in apply_at.items()
    }
    for e in audit.events:
        if (
            e["t"] < since
            or e["stage"] != "ResponseComplete"
            or e["verb"] not in ("create", "patch", "update")
        ):
            continue
        ref = e.get("objectRef") or {}
        resource, sub, name = ref.get("resource"), ref.get("subresource"), ref.get("name", "")
        job = name if resource == "jobs" else name.rsplit("-", 1)[0]  # a Job's pod: <job>-<suffix>
        pull = job in pulls
        owners = pulls[job] if pull else [name.split("-")[0]]
        user = e["user"]["username"]
        step = None
        if resource == "jobs" and not sub and pull and user == ADMIN_USER:
            step = "job"
        elif resource == "pods" and sub == "binding":
            step = "pull_bound" if pull else "serve_bound"
        elif resource == "pods" and sub == "status" and "kwok" in user:
            step = "pull_done" if pull else "serve_running"
        elif resource == "deployments" and not sub and user == ADMIN_USER:
            step = "deploy"
        for owner in owners:
            if step is None or owner not in marks:
                continue
            if step in ("pull_done", "serve_running"):
                marks[owner][step] = e["t"]  # the last one: finished, or running
            else:
                marks[owner].setdefault(step, e["t"])
    found: dict[str, float] = {}
    for label, start, end in PHASES:
        # A model that came to a volume whose pull had begun, or ended, waited only from its apply on.
        spans = [
            max(0.0, m[end] - max(m[start], m["apply"]))
            for m in marks.values()
            if start in m and end in m and "job" in m
        ]
        found[label] = statistics.median(spans) if spans else float("nan")
    return found


def _by_kind(events: list[dict[str, Any]]) -> dict[str, int]:
    def kind(e: dict[str, Any]) -> str:
        ref = e.get("objectRef") or {}
        sub = ref.get("subresource")
        return f"{e['verb']} {ref.get('resource', '')}" + (f"/{sub}" if sub else "")

    return dict(Counter(map(kind, events)).most_common())


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        ("models", "{models}"),
        ("all Ready after first apply (s)", "{all_ready_s:.1f}"),
        ("  per model (ms)", "{per_model_ms:.0f}"),
        ("  applying took (s)", "{apply_s:.1f}"),
        ("apply → Ready p50 / p95 (s)", "{ready_p50:.1f} / {ready_p95:.1f}"),
        ("apply → pull Job p50 / p95 (s)", "{job_p50:.2f} / {job_p95:.2f}"),
        ("apply → Deployment p50 / p95 (s)", "{deploy_p50:.1f} / {deploy_p95:.1f}"),
        ("operator writes, per model", "{writes} / {writes_per_model:.1f}"),
        ("operator reads (get, list), per model", "{reads} / {reads_per_model:.2f}"),
        (
            "idle writes / reads / watch starts per min",
            "{idle_writes_min:.1f} / {idle_reads_min:.1f} / {idle_watches_min:.1f}",
        ),
        ("operator peak RSS (MiB)", "{rss_mib:.0f}"),
        ("operator CPU (s), per model (ms)", "{cpu_s:.0f} / {cpu_per_model_ms:.0f}"),
        ("load average before / after", "{load[0]:.1f} / {load[1]:.1f}"),
    ]
    for r in results:
        r["per_model_ms"] = r["all_ready_s"] / r["models"] * 1000
        r["writes_per_model"] = r["writes"] / r["models"]
        r["reads_per_model"] = r["reads"] / r["models"]
        r["cpu_per_model_ms"] = r["cpu_s"] / r["models"] * 1000
    width = max(len(label) for label, _ in rows)
    lines = []
    for label, fmt in rows:
        cells = [fmt.format(**r) for r in results]
        lines.append(f"| {label:<{width}} | " + " | ".join(f"{c:>13}" for c in cells) + " |")
    lines.insert(1, "|" + "-" * (width + 2) + "|" + "|".join("-" * 15 for _ in results) + "|")
    for r in results:
        lines.append(f"\nwrites by kind at {r['models']}: {r['writes_by_kind']}")
        lines.append(f"reads by kind at {r['models']}: {r['reads_by_kind']}")
        lines.append(f"CPU seconds from first apply to all Ready at {r['models']}: {r['cpu_busy']}")
        lines.append(f"where a model's time goes at {r['models']} (medians, models that pulled):")
        lines += [f"  {label:<66} {seconds:6.1f} s" for label, seconds in r["phases"].items()]
        if r["idle_other"]:
            lines.append(f"at idle ({r['models']}): {r['idle_other']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument(
        "--profile", type=Path, help="a directory for py-spy profiles (collapsed stacks), one per N"
    )
    parser.add_argument(
        "--logs", type=Path, help="a directory to keep the operator's log and the audit log in"
    )
    args = parser.parse_args()

    print(f"plan + status of one model: {bench_plan() * 1e6:.0f} µs", flush=True)
    results = []
    for count in args.models:
        print(f"{count} models ...", flush=True)
        profile = None
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            profile = (args.profile / f"operator-{count}.txt").resolve()
        results.append(run(count, args.idle_seconds, args.timeout, profile, args.logs))
        print(json.dumps({k: v for k, v in results[-1].items()}, default=str), flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
