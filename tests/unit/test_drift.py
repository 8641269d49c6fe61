"""Drift: only what the operator set counts, compared by value where the API server rewrites it."""

from moorage.plan.drift import drift, drifted


def test_fields_the_api_server_adds_are_not_drift() -> None:
    desired = {"spec": {"replicas": 2, "template": {"containers": [{"name": "vllm", "image": "v:1"}]}}}
    live = {
        "spec": {
            "replicas": 2,
            "progressDeadlineSeconds": 600,
            "template": {"containers": [{"name": "vllm", "image": "v:1", "imagePullPolicy": "IfNotPresent"}]},
        }
    }
    assert drift(live, desired) == []


def test_changed_fields_are_named() -> None:
    desired = {"spec": {"replicas": 2, "template": {"containers": [{"name": "vllm", "image": "v:1"}]}}}
    live = {"spec": {"replicas": 5, "template": {"containers": [{"name": "vllm", "image": "evil:2"}]}}}
    assert drift(live, desired) == [".spec.replicas", ".spec.template.containers[0].image"]


def test_quantities_compare_by_value_and_empty_matches_absent() -> None:
    assert drift({"cpu": "500m", "memory": "1Gi"}, {"cpu": "0.5", "memory": "1Gi", "tolerations": []}) == []
    assert drift({"cpu": "1"}, {"cpu": "2"}) == [".cpu"]
    assert drift({"items": [1, 2]}, {"items": [1]}) == [".items"]


def test_only_deployments_services_and_budgets_are_checked() -> None:
    job = {"kind": "Job", "metadata": {"labels": {}}, "spec": {"template": {}}}
    assert drifted({"spec": {"template": {"x": 1}}}, job) == []
    service = {
        "kind": "Service",
        "metadata": {"labels": {"a": "b"}, "annotations": {}},
        "spec": {"ports": []},
    }
    assert drifted({"metadata": {"labels": {"a": "c"}}, "spec": {}}, service) == [".metadata.labels.a"]
