"""The chart's RBAC on the real control plane: enough for the operator, and nothing more.

The operator runs as the chart's ServiceAccount (a token minted for it, in a kubeconfig of its own), once
cluster-wide with the ClusterRole and once for a list of namespaces with the Roles, and serves a model to
Ready. The API server must not have refused it anything (its log, and the audit log of writes), and it must
not be able to do what it never needs to (`kubectl auth can-i --as` the ServiceAccount).

The session's admin operator of test_operator.py may be running too: both apply the same children with
the same field manager and write the same status, so they converge; only this operator's log is judged.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from moorage.demo import OperatorProcess, install_crd
from moorage.devcluster import Cluster, wait_for
from moorage.devcluster.fakehub import TINY_MODEL, FakeHub, default_hub
from moorage.devcluster.gateway import GatewayCrds

CHART = Path(__file__).parents[2] / "charts" / "moorage"
SYSTEM_NAMESPACE = "moorage-system"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
READY_TIMEOUT = 120.0
# An RBAC denial ("... is forbidden: User ... cannot ..."), a 403, or kopf's fallback when it may not watch.
DENIED = re.compile(r"forbidden|\b403\b|not enough permissions", re.IGNORECASE)
# Not RBAC: a namespace of an earlier test being deleted refuses new objects with a 403 too.
NOT_RBAC = re.compile(r"being terminated")


@pytest.fixture(scope="module")
def rbac_hub() -> Iterator[FakeHub]:
    with default_hub() as running:
        yield running


def render_rbac(helm: str, release: str, watch: list[str]) -> list[dict[str, Any]]:
    args = [helm, "template", release, str(CHART), "--namespace", SYSTEM_NAMESPACE]
    for index, namespace in enumerate(watch):
        args += ["--set", f"watchNamespaces[{index}]={namespace}"]
    rendered = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in RBAC_KINDS]


def token_kubeconfig(cluster: Cluster, service_account: str, path: Path) -> Path:
    """The admin kubeconfig's server and CA, with the ServiceAccount's bearer token as the user."""
    token = cluster.kubectl(
        "create", "token", service_account, "-n", SYSTEM_NAMESPACE, "--duration=1h", check=True
    ).stdout.strip()
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    user = f"system:serviceaccount:{SYSTEM_NAMESPACE}:{service_account}"
    config["users"] = [{"name": user, "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = user
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def can_i(cluster: Cluster, user: str, verb: str, resource: str, namespace: str | None) -> bool:
    resource, _, subresource = resource.partition("/")
    args = ["auth", "can-i", verb, resource, f"--as={user}"]
    args += [f"--subresource={subresource}"] if subresource else []
    args += ["-n", namespace] if namespace else []
    result = cluster.kubectl(*args)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl {' '.join(args)}: {result.stdout}{result.stderr}"
    return answer == "yes"


def denied_writes(cluster: Cluster, user: str) -> list[str]:
    """Writes by `user` that the API server answered 403, from its audit log (writes only are audited)."""
    denied = []
    for line in cluster.audit_log.read_text(errors="replace").splitlines():
        if user not in line:
            continue
        event = json.loads(line)
        code = (event.get("responseStatus") or {}).get("code")
        message = (event.get("responseStatus") or {}).get("message", "")
        # A namespace being deleted (by another test) refuses new content with 403 too: not RBAC.
        if event.get("user", {}).get("username") == user and code == 403 and not NOT_RBAC.search(message):
            denied.append(f"{event['verb']} {event['requestURI']}: {message}")
    return denied


def model(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "moorage.dev/v1alpha1",
        "kind": "OpenSourceModel",
        "metadata": {"name": name},
        "spec": {
            "source": {"uri": f"hf://{TINY_MODEL}"},
            "serving": {"replicas": 1},
            # Its InferencePool and HTTPRoute too: discovered, watched and applied on the chart's RBAC.
            "gateway": {"endpointPicker": {"name": "epp"}, "route": {"gateway": {"name": "gw"}}},
        },
    }


def ready(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    """Ready, with the gateway objects in place."""
    obj = cluster.get_json("osm", name, "-n", namespace) or {}
    true = {c["type"] for c in obj.get("status", {}).get("conditions", []) if c["status"] == "True"}
    return obj if {"Ready", "GatewayReady"} <= true else None


@pytest.mark.parametrize("scope", ["cluster-wide", "namespaced"])
def test_operator_runs_on_the_chart_rbac_alone(
    cluster: Cluster,
    namespace: str,
    helm: str,
    rbac_hub: FakeHub,
    tmp_path: Path,
    scope: str,
    request: pytest.FixtureRequest,
    gateway_crds: GatewayCrds,
) -> None:
    install_crd(cluster)
    gateway_crds.install()
    if cluster.kubectl("get", "namespace", SYSTEM_NAMESPACE).returncode != 0:
        cluster.kubectl("create", "namespace", SYSTEM_NAMESPACE, check=True)
    # Two releases, so that the two scopes' cluster-scoped objects never share a name.
    release = "moorage" if scope == "cluster-wide" else f"moorage-{uuid.uuid4().hex[:6]}"
    watch = [namespace] if scope == "namespaced" else []
    objects = render_rbac(helm, release, watch)
    namespaced_kinds = {"Role", "RoleBinding"} if watch else set()
    assert {o["kind"] for o in objects} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
    } | namespaced_kinds
    cluster.apply(*objects)
    request.addfinalizer(
        lambda: cluster.kubectl(
            "delete", "clusterrolebinding,clusterrole", release, "--wait=false", "--ignore-not-found"
        )
    )
    service_account = next(o for o in objects if o["kind"] == "ServiceAccount")["metadata"]["name"]
    user = f"system:serviceaccount:{SYSTEM_NAMESPACE}:{service_account}"
    kubeconfig = token_kubeconfig(cluster, service_account, tmp_path / "operator.kubeconfig")

    extra = [a for n in watch for a in ("--namespace", n)]
    operator = OperatorProcess(
        cluster, rbac_hub.url, tmp_path / "operator.log", *extra, kubeconfig=kubeconfig
    )

    def model_ready() -> dict[str, Any] | None:
        assert operator.process.poll() is None, "the operator exited"
        return ready(cluster, namespace, "tiny")

    try:
        cluster.apply(model("tiny"), namespace=namespace)
        try:
            wait_for(model_ready, timeout=READY_TIMEOUT, what="tiny Ready")
        except Exception:
            print(f"---- operator log ({scope}) ----\n{operator.log()[-6000:]}")
            raise
        assert operator.process.poll() is None, "the operator exited"
    finally:
        operator.stop()

    log = operator.log()
    assert "moorage operator started" in log
    refused = [line for line in log.splitlines() if DENIED.search(line) and not NOT_RBAC.search(line)]
    assert not refused, "the API server refused the operator:\n" + "\n".join(refused[:20])
    assert not denied_writes(cluster, user)

    # Enough: what the operator does (the model above went Ready through all of it).
    for verb, resource in [
        ("patch", "opensourcemodels.moorage.dev/status"),
        ("create", "jobs.batch"),
        ("delete", "persistentvolumeclaims"),
        ("create", "events"),
        ("patch", "inferencepools.inference.networking.k8s.io"),
        ("delete", "httproutes.gateway.networking.k8s.io"),
    ]:
        assert can_i(cluster, user, verb, resource, namespace), f"cannot {verb} {resource}"

    # Least privilege: what it never does.
    never = [
        # Not even a Secret by name: a token is read by the kubelet for the model's resolve and pull Jobs.
        ("get", "secrets"),
        ("create", "secrets"),
        ("list", "secrets"),
        ("watch", "secrets"),
        ("update", "secrets"),
        ("patch", "secrets"),
        ("create", "pods"),
        ("delete", "pods"),
        ("create", "pods/exec"),
        ("delete", "deployments.apps"),
        ("update", "deployments.apps"),
        ("patch", "opensourcemodels.moorage.dev"),
        ("delete", "opensourcemodels.moorage.dev"),
        ("create", "configmaps"),
        ("create", "serviceaccounts/token"),
        ("create", "rolebindings.rbac.authorization.k8s.io"),
        ("create", "gateways.gateway.networking.k8s.io"),
        ("patch", "gateways.gateway.networking.k8s.io"),
        ("create", "referencegrants.gateway.networking.k8s.io"),
        ("create", "grpcroutes.gateway.networking.k8s.io"),
    ]
    for verb, resource in never:
        assert not can_i(cluster, user, verb, resource, namespace), f"can {verb} {resource}"
    for verb, resource in [
        ("delete", "namespaces"),
        ("create", "namespaces"),
        ("get", "nodes"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ("escalate", "clusterroles.rbac.authorization.k8s.io"),
        ("impersonate", "serviceaccounts"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ("get", "customresourcedefinitions.apiextensions.k8s.io"),
        ("create", "gatewayclasses.gateway.networking.k8s.io"),
    ]:
        assert not can_i(cluster, user, verb, resource, None), f"can {verb} {resource}"
    if scope == "namespaced":
        # Only the namespaces it serves.
        assert not can_i(cluster, user, "create", "jobs.batch", "default")
        assert not can_i(cluster, user, "list", "opensourcemodels.moorage.dev", None)
