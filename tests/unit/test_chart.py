"""The Helm chart (charts/moorage): lint, schema, least-privilege RBAC, restricted pod, the operator's args.

Needs helm: $MOORAGE_HELM, or `helm` on PATH, or ~/.cache/moorage/bin/helm (scripts/install-helm.sh puts it
there). Without one the helm tests skip and say so; the CRD copy, the values table and the Argo CD health
check are tested without helm.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from moorage.activator import parse_args as parse_activator_args
from moorage.api.crd import crd
from moorage.cli import dump, parser
from moorage.hub.sizing import GPU_PROFILES
from moorage.plan.config import DEFAULT_VLLM_CPU_IMAGE, DEFAULT_VLLM_IMAGE

ROOT = Path(__file__).parents[2]
CHART = ROOT / "charts" / "moorage"
DOCS = ROOT / "docs" / "install.md"
NAMESPACE = "moorage-system"
SERVICE_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:moorage"
READ = ["get", "list", "watch"]
# What moorage.reconcile does in a namespace it serves, and nothing more. A change here is a change of
# the operator's privileges: make it on purpose, with the e2e test (tests/e2e/test_rbac.py) to back it.
WORKLOAD_RULES = {
    ("moorage.dev", "opensourcemodels"): READ,
    ("moorage.dev", "opensourcemodels/status"): ["patch"],
    ("moorage.dev", "opensourcemodels/finalizers"): ["update"],
    ("apps", "deployments"): [*READ, "create", "patch"],
    ("apps", "replicasets"): ["list"],
    ("", "services"): [*READ, "create", "patch"],
    ("batch", "jobs"): [*READ, "create", "patch", "delete"],
    ("", "persistentvolumeclaims"): [*READ, "create", "patch", "delete"],
    ("policy", "poddisruptionbudgets"): [*READ, "create", "patch", "delete"],
    ("inference.networking.k8s.io", "inferencepools"): [*READ, "create", "patch", "delete"],
    ("gateway.networking.k8s.io", "httproutes"): [*READ, "create", "patch", "delete"],
    ("discovery.k8s.io", "endpointslices"): [*READ, "create", "patch", "delete"],
    ("keda.sh", "scaledobjects"): [*READ, "create", "patch", "delete"],
    ("", "pods"): READ,
    ("", "pods/log"): ["get"],
    ("", "events"): ["create"],
}
CRD_RULE = {("apiextensions.k8s.io", "customresourcedefinitions"): ["list", "watch"]}
NAMESPACES_RULE = {("", "namespaces"): ["list", "watch"]}

Obj = dict[str, Any]


def run_helm(
    helm: str, *args: str, values: Obj | None = None, tmp: Path | None = None
) -> subprocess.CompletedProcess[str]:
    command = [helm, *args]
    if values is not None:
        assert tmp is not None
        path = tmp / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        command += ["--values", str(path)]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)


def render(helm: str, tmp_path: Path, values: Obj | None = None) -> list[Obj]:
    result = run_helm(
        helm, "template", "moorage", str(CHART), "--namespace", NAMESPACE, values=values, tmp=tmp_path
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def one(objects: list[Obj], kind: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]


def rules_of(role: Obj) -> dict[tuple[str, str], list[str]]:
    """(apiGroup, resource) → verbs; one group, resource and verb list per rule, no duplicates."""
    table: dict[tuple[str, str], list[str]] = {}
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, f"resourceNames or URLs in {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert (group, resource) not in table, f"{group}/{resource} twice"
                table[group, resource] = rule["verbs"]
    return table


def container(objects: list[Obj]) -> Obj:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: Obj = containers[0]
    return result


# ---- without helm


def test_chart_crd_is_the_generated_crd() -> None:
    copy = CHART / "crds" / "opensourcemodels.moorage.dev.yaml"
    assert copy.read_text() == dump([crd()]), (
        f"the chart's CRD is stale: .venv/bin/moorage crd > {copy.relative_to(ROOT)}"
    )
    assert [p.name for p in (CHART / "crds").iterdir()] == ["opensourcemodels.moorage.dev.yaml"]


def test_schema_knows_every_gpu_profile() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["properties"]["operator"]["properties"]["defaultGpuProfile"]["enum"] == sorted(GPU_PROFILES)


def _documented_keys(schema: Obj, prefix: str = "") -> list[str]:
    """Dotted keys of the values: a key whose schema lists properties is documented by its children."""
    keys = []
    for name, sub in schema.get("properties", {}).items():
        if name == "global":
            continue
        key = f"{prefix}{name}"
        keys += _documented_keys(sub, f"{key}.") if "properties" in sub and name != "resources" else [key]
    return keys


def test_every_value_is_in_the_schema_and_the_docs() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    keys = _documented_keys(schema)
    for key in keys:
        node: Any = values
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{key} is in values.schema.json, not values.yaml"
            node = node[part]
    table = [line for line in DOCS.read_text().splitlines() if line.startswith("| `")]
    documented = {line.split("`")[1] for line in table}
    missing = [k for k in keys if k not in documented]
    assert not missing, f"values missing from the table in docs/install.md: {missing}"
    assert not documented - set(keys), f"docs/install.md documents unknown values: {documented - set(keys)}"


# ---- Argo CD health check (Lua, run by lupa when it is installed)


def _health(obj: Obj) -> Obj:
    lupa = pytest.importorskip("lupa", reason="pip install lupa to run the Argo CD health check (Lua)")
    lua = lupa.LuaRuntime()
    script = (CHART / "argocd" / "health.lua").read_text()
    check = lua.eval(f"function(obj)\n{script}\nend")
    return dict(check(lua.table_from(obj, recursive=True)))


def _model(generation: int, *conditions: tuple[str, str, str], observed: int | None = None) -> Obj:
    status: Obj = {
        "observedGeneration": generation if observed is None else observed,
        "conditions": [
            {
                "type": t,
                "status": s,
                "reason": "Because",
                "message": m,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
            for t, s, m in conditions
        ],
    }
    return {"metadata": {"name": "m", "generation": generation}, "status": status}


def test_argocd_health_healthy_when_ready() -> None:
    health = _health(_model(3, ("Ready", "True", "2 replica(s) serving abc"), ("Stalled", "False", "")))
    assert health == {"status": "Healthy", "message": "2 replica(s) serving abc"}


def test_argocd_health_degraded_when_stalled() -> None:
    health = _health(_model(1, ("Ready", "False", "pulling"), ("Stalled", "True", "repository not found")))
    assert health == {"status": "Degraded", "message": "repository not found"}


def test_argocd_health_degraded_when_rolled_back_with_the_pods_words() -> None:
    message = (
        "rolled back to revision 0da6e72384404aba: the rollout of revision 5e1f failed (CrashLoopBackOff)"
    )
    health = _health(
        _model(4, ("Ready", "False", message), ("Stalled", "True", message), ("Available", "True", ""))
    )
    assert health == {"status": "Degraded", "message": message}


def test_argocd_health_progressing_with_the_ready_message() -> None:
    health = _health(_model(1, ("Ready", "False", "pulling weights: 3/6 files"), ("Stalled", "False", "")))
    assert health == {"status": "Progressing", "message": "pulling weights: 3/6 files"}
    assert _health({"metadata": {"name": "m", "generation": 1}})["status"] == "Progressing"


def test_argocd_health_ignores_conditions_of_an_older_generation() -> None:
    health = _health(_model(2, ("Ready", "True", "serving"), observed=1))
    assert health["status"] == "Progressing"
    assert "generation 2" in health["message"]


# ---- with helm


def test_lint_strict(helm: str, tmp_path: Path) -> None:
    for values in (
        None,
        {"watchNamespaces": ["team-a", "team-b"], "operator": {"hfEndpoint": "https://hf.example"}},
        {"metrics": {m: {"enabled": True} for m in ("serviceMonitor", "podMonitor", "dashboard")}},
        {"activator": {"enabled": True}, "watchNamespaces": ["team-a"]},
    ):
        result = run_helm(helm, "lint", "--strict", str(CHART), values=values, tmp=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr


def test_default_objects(helm: str, tmp_path: Path) -> None:
    objects = render(helm, tmp_path)
    assert sorted(o["kind"] for o in objects) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ServiceAccount",
    ]
    assert {o["metadata"]["name"] for o in objects} == {"moorage", "moorage-metrics"}
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "moorage",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "moorage", "namespace": NAMESPACE}]


def test_cluster_wide_rbac_is_least_privilege(helm: str, tmp_path: Path) -> None:
    role = one(render(helm, tmp_path), "ClusterRole")
    rules = rules_of(role)
    assert rules == {**CRD_RULE, **WORKLOAD_RULES}
    _no_wildcards_or_escalation(role)


def test_namespaced_rbac(helm: str, tmp_path: Path) -> None:
    objects = render(helm, tmp_path, {"watchNamespaces": ["team-a", "team-b"]})
    cluster_role = one(objects, "ClusterRole")
    assert rules_of(cluster_role) == {**CRD_RULE, **NAMESPACES_RULE}
    roles = [o for o in objects if o["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert rules_of(role) == WORKLOAD_RULES
        _no_wildcards_or_escalation(role)
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "moorage", "namespace": NAMESPACE}]
    args = container(objects)["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]


def _no_wildcards_or_escalation(role: Obj) -> None:
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {rule}"
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"]), rule
        if "update" in rule["verbs"]:  # server-side apply is patch; update only for blockOwnerDeletion
            assert rule["resources"] == ["opensourcemodels/finalizers"], rule
        # Hub tokens reach the Jobs through the kubelet: the operator needs no Secret at all.
        assert "secrets" not in rule["resources"], rule
        if "pods" in rule["resources"]:
            assert set(rule["verbs"]) <= set(READ), f"pods: {rule['verbs']}"
        assert not {"pods/exec", "pods/attach", "serviceaccounts/token", "nodes"} & set(rule["resources"])


def test_rbac_can_be_left_to_the_cluster_admin(helm: str, tmp_path: Path) -> None:
    objects = render(
        helm, tmp_path, {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "ops"}}
    )
    assert sorted(o["kind"] for o in objects) == ["Deployment", "Service"]
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"


def test_pod_is_restricted(helm: str, tmp_path: Path) -> None:
    objects = render(helm, tmp_path)
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "moorage"
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "hostNetwork" not in pod and "hostPID" not in pod
    main = container(objects)
    assert main["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert main["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    assert main["resources"]["limits"] == {"memory": "512Mi"}
    # The read-only root needs a writable /tmp (HOME, hub client caches).
    assert {"name": "tmp", "mountPath": "/tmp"} in main["volumeMounts"]
    assert any(v["name"] == "tmp" and "emptyDir" in v for v in pod["volumes"])


def test_operator_args(helm: str, tmp_path: Path) -> None:
    main = container(render(helm, tmp_path))
    assert main["image"] == "ghcr.io/moorage-dev/moorage:0.1.0"
    assert main["args"] == [
        "run",
        f"--vllm-image={DEFAULT_VLLM_IMAGE}",
        f"--vllm-cpu-image={DEFAULT_VLLM_CPU_IMAGE}",
        "--operator-image=ghcr.io/moorage-dev/moorage:0.1.0",
        "--finetune-image=ghcr.io/moorage-dev/moorage-finetune:0.1.0",
        "--default-gpu-profile=nvidia-h100-80gb",
        "--log-format=json",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--metrics-port=8081",
    ]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in main["env"]
    probe = main["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert {"name": probe["port"], "containerPort": 8080, "protocol": "TCP"} in main["ports"]


def test_args_parse_with_the_operators_own_parser(helm: str, tmp_path: Path) -> None:
    values = {
        "image": {"tag": "1.2.3"},
        "watchNamespaces": ["ml"],
        "operator": {
            "hfEndpoint": "https://hf-mirror.internal",
            "defaultGpuProfile": "nvidia-l4",
            "finetuneImage": "registry.internal/ft:7",
            "logFormat": "plain",
            "verbose": True,
            "prometheusAddress": "http://prometheus.monitoring:9090",
        },
    }
    main = container(render(helm, tmp_path, values))
    assert main["image"] == "ghcr.io/moorage-dev/moorage:1.2.3"
    args = parser().parse_args(main["args"])
    assert args.command == "run"
    assert args.operator_image == "ghcr.io/moorage-dev/moorage:1.2.3"  # the pull Jobs run the same image
    assert args.finetune_image == "registry.internal/ft:7"
    assert args.hf_endpoint == "https://hf-mirror.internal"
    assert args.default_gpu_profile == "nvidia-l4"
    assert args.namespace == ["ml"]
    assert args.log_format == "plain"
    assert args.verbose is True
    assert args.liveness == "http://0.0.0.0:8080/healthz"
    assert args.metrics_port == 8081
    assert args.prometheus_address == "http://prometheus.monitoring:9090"


@pytest.mark.parametrize(
    ("tag", "image", "finetune"),
    [
        ("1.2.3", "ghcr.io/moorage-dev/moorage:1.2.3", "ghcr.io/moorage-dev/moorage-finetune:1.2.3"),
        (2, "ghcr.io/moorage-dev/moorage:2", "ghcr.io/moorage-dev/moorage-finetune:2"),
        (
            "sha256:" + "a" * 64,
            "ghcr.io/moorage-dev/moorage@sha256:" + "a" * 64,
            "ghcr.io/moorage-dev/moorage-finetune@sha256:" + "a" * 64,
        ),
    ],
)
def test_image_tag_moves_every_image(
    helm: str, tmp_path: Path, tag: object, image: str, finetune: str
) -> None:
    main = container(render(helm, tmp_path, {"image": {"tag": tag}}))
    args = parser().parse_args(main["args"])
    assert main["image"] == image == args.operator_image
    assert args.finetune_image == finetune


def test_scheduling_values(helm: str, tmp_path: Path) -> None:
    values = {
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "system", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        "priorityClassName": "system-cluster-critical",
        "imagePullSecrets": [{"name": "regcred"}],
        "env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
    }
    objects = render(helm, tmp_path, values)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == values["nodeSelector"]
    assert pod["tolerations"] == values["tolerations"]
    assert pod["affinity"] == values["affinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in container(objects)["env"]


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCount": "x"}, "replicaCount"),
        ({"operator": {"logFormat": "xml"}}, "logFormat"),
        ({"operator": {"defaultGpuProfile": "nvidia-rtx-4090"}}, "defaultGpuProfile"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
        ({"operator": {"hfEndpoint": "hf.example"}}, "hfEndpoint"),
        ({"rbac": {"create": "yes"}}, "create"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"resources": {"requests": {"cpu": "lots"}}}, "cpu"),
        ({"resources": {"limits": {"memroy": "1Gi"}}}, "memroy"),
        ({"image": {"tag": "has space"}}, "tag"),
        ({"metrics": {"port": 8080}}, "port"),
        ({"metrics": {"podMonitor": {"interval": "soon"}}}, "interval"),
        ({"metrics": {"serviceMonitor": {"enabeld": True}}}, "enabeld"),
        ({"operator": {"prometheusAddress": "prometheus:9090"}}, "prometheusAddress"),
    ],
)
def test_schema_rejects_bad_values(helm: str, tmp_path: Path, values: Obj, complaint: str) -> None:
    result = run_helm(helm, "template", "moorage", str(CHART), values=values, tmp=tmp_path)
    assert result.returncode != 0
    assert "schema" in result.stderr and complaint in result.stderr, result.stderr


def test_argocd_snippet_in_the_docs_is_the_health_check() -> None:
    def code(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.strip().startswith("--")]

    docs = DOCS.read_text()
    key = "resource.customizations.health.moorage.dev_OpenSourceModel: |\n"
    assert key in docs
    block = docs.split(key, 1)[1].split("\n```", 1)[0]
    snippet = "\n".join(line.removeprefix("    ") for line in block.splitlines())
    assert code(snippet) == code((CHART / "argocd" / "health.lua").read_text())


def test_chart_defaults_are_the_tested_vllm() -> None:
    """moorage.plan.config says which vLLM moorage is tested with; the chart's defaults follow it."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["operator"]["vllmImage"] == DEFAULT_VLLM_IMAGE
    assert values["operator"]["vllmCpuImage"] == DEFAULT_VLLM_CPU_IMAGE
    assert f"`{DEFAULT_VLLM_IMAGE}`" in DOCS.read_text() and f"`{DEFAULT_VLLM_CPU_IMAGE}`" in DOCS.read_text()


# ---- metrics: the operator's Service, the Prometheus Operator monitors and the dashboard


MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "ConfigMap"}


def test_monitoring_is_off_by_default_and_metrics_can_be(helm: str, tmp_path: Path) -> None:
    assert not MONITORING_KINDS & {o["kind"] for o in render(helm, tmp_path)}
    objects = render(helm, tmp_path, {"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}})
    assert not {"Service", "ServiceMonitor"} & {o["kind"] for o in objects}
    main = container(objects)
    assert not [a for a in main["args"] if a.startswith("--metrics")]
    assert [p["name"] for p in main["ports"]] == ["health"]


def test_operator_metrics_service_and_service_monitor(helm: str, tmp_path: Path) -> None:
    values = {"metrics": {"port": 9100, "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}}
    objects = render(helm, tmp_path, values)
    main = container(objects)
    assert parser().parse_args(main["args"]).metrics_port == 9100
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in main["ports"]
    service = one(objects, "Service")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}
    ]
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]


@pytest.mark.parametrize("watch", [[], ["team-a", "team-b"]])
def test_pod_monitor_selects_the_vllm_pods(helm: str, tmp_path: Path, watch: list[str]) -> None:
    from moorage.api.model import ObjectMeta, OpenSourceModel  # noqa: PLC0415
    from moorage.api.spec import OpenSourceModelSpec  # noqa: PLC0415
    from moorage.plan.meta import labels  # noqa: PLC0415
    from moorage.plan.serving import PORT  # noqa: PLC0415

    values = {"watchNamespaces": watch, "metrics": {"podMonitor": {"enabled": True}}}
    monitor = one(render(helm, tmp_path, values), "PodMonitor")
    spec = monitor["spec"]
    model = OpenSourceModel(
        metadata=ObjectMeta(name="m", namespace="ml"),
        spec=OpenSourceModelSpec.model_validate({"source": {"uri": "hf://o/m"}}),
    )
    assert spec["selector"]["matchLabels"].items() <= labels(model, "serving").items()
    assert spec["namespaceSelector"] == ({"matchNames": watch} if watch else {"any": True})
    [endpoint] = spec["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("http", "/metrics", "15s")
    assert PORT == 8000  # the serving container's port named http, where vLLM serves /metrics
    assert endpoint["relabelings"][0]["targetLabel"] == "model"


def test_dashboard_config_map_holds_the_dashboard(helm: str, tmp_path: Path) -> None:
    objects = render(helm, tmp_path, {"metrics": {"dashboard": {"enabled": True}}})
    config_map = one(objects, "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(config_map["data"]["moorage-model.json"])
    assert shipped == json.loads((CHART / "dashboards" / "moorage-model.json").read_text())


# ---- the activator (activator.enabled)

ACTIVATOR_RULES = {
    ("apps", "deployments"): ["get"],
    ("apps", "deployments/scale"): ["get", "patch"],
    ("discovery.k8s.io", "endpointslices"): ["list"],
    ("", "services"): ["list"],
}


def _activator_objects(objects: list[Obj]) -> dict[str, Obj]:
    return {o["kind"]: o for o in objects if o["metadata"]["name"] == "moorage-activator"}


def test_activator_is_off_by_default(helm: str, tmp_path: Path) -> None:
    objects = render(helm, tmp_path)
    assert not _activator_objects(objects)
    assert not [a for a in container(objects)["args"] if a.startswith("--activator")]


def test_activator_objects_rbac_and_pod(helm: str, tmp_path: Path) -> None:
    objects = render(helm, tmp_path, {"activator": {"enabled": True}})
    mine = _activator_objects(objects)
    assert sorted(mine) == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount"]
    assert rules_of(mine["ClusterRole"]) == ACTIVATOR_RULES
    _no_wildcards_or_escalation(mine["ClusterRole"])
    assert mine["ClusterRoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "moorage-activator", "namespace": NAMESPACE}
    ]
    service = mine["Service"]
    assert service["metadata"]["labels"]["moorage.dev/activator"] == "true", "what the operator watches"
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"http": 8080, "metrics": 9090}
    deployment = mine["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "moorage-activator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    [activator] = pod["containers"]
    assert activator["args"] == ["activator", "--port=8080", "--metrics-port=9090"]
    assert parse_activator_args(activator["args"][1:]).port == 8080, "the activator's own parser takes them"
    assert activator["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # Neither selects the other's pods.
    operator = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "moorage")
    operator_selector = operator["spec"]["selector"]["matchLabels"].items()
    assert not operator_selector <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--activator=moorage-activator.moorage-system" in args
    run = parser().parse_args(args)
    assert run.activator == "moorage-activator.moorage-system"


def test_activator_namespaced(helm: str, tmp_path: Path) -> None:
    values = {"activator": {"enabled": True}, "watchNamespaces": ["team-a", "team-b"]}
    objects = render(helm, tmp_path, values)
    roles = [o for o in objects if o["kind"] == "Role" and o["metadata"]["name"] == "moorage-activator"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert all(rules_of(r) == ACTIVATOR_RULES for r in roles)
    reader = next(
        o for o in objects if o["metadata"]["name"] == "moorage-activator-endpoints" and o["kind"] == "Role"
    )
    assert reader["metadata"]["namespace"] == NAMESPACE
    assert rules_of(reader) == {("discovery.k8s.io", "endpointslices"): READ}
    activator = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "moorage-activator"
    )
    args = activator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-2:] == ["--namespace=team-a", "--namespace=team-b"]
    assert not [
        o for o in objects if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "moorage-activator"
    ]
