"""The plan and the status, pure: every state a model can be in, without a cluster."""

from typing import Any

import pytest

from moorage.api.model import OpenSourceModel
from moorage.api.programs import Report
from moorage.api.resolved import HubFile, ResolvedSource
from moorage.api.status import ConditionType, OpenSourceModelStatus
from moorage.plan import meta
from moorage.plan.children import plan
from moorage.plan.config import PlanConfig
from moorage.plan.observed import DeploymentState, JobState, Observed, Problem
from moorage.plan.serving import ServingTarget
from moorage.plan.status import status

CONFIG = PlanConfig()
NOW = "2026-11-26T12:00:00Z"
SHA = "a" * 40
NEW_SHA = "b" * 40


def model(**spec: Any) -> OpenSourceModel:
    body = {"source": {"uri": "hf://org/tiny"}, **spec}
    return OpenSourceModel.parse(
        {"metadata": {"name": "tiny", "namespace": "ml", "uid": "u-1", "generation": 2}, "spec": body}
    )


def resolved(sha: str = SHA) -> ResolvedSource:
    return ResolvedSource(
        "hf://org/tiny",
        "org/tiny",
        "model",
        "main",
        sha,
        (HubFile("config.json", 600), HubFile("model.safetensors", 2_000_000_000, "f" * 64)),
        parameters=1_000_000_000,
        dtype="BF16",
    )


def deployment_state(manifest: dict[str, Any], ready: int, replicas: int | None = None) -> DeploymentState:
    desired = manifest["spec"]["replicas"]
    return DeploymentState(
        generation=1,
        observed_generation=1,
        replicas=desired if replicas is None else replicas,
        updated_replicas=ready,
        ready_replicas=ready,
        available_replicas=ready,
        desired_replicas=desired,
        annotations=manifest["metadata"]["annotations"],
    )


def kinds(children: list[dict[str, Any]]) -> list[str]:
    return [c["kind"] for c in children]


def conditions(s: OpenSourceModelStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in s.conditions}


def test_no_deployment_before_the_weights_are_pulled() -> None:
    m = model()
    observed = Observed(resolved=resolved(), pull=JobState(active=True))
    p = plan(m, observed, CONFIG)
    assert kinds(p.children) == ["Service", "PersistentVolumeClaim", "Job"]
    c = conditions(status(m, observed, p, CONFIG, NOW))
    assert c["WeightsReady"] == ("False", "Pulling")
    assert c["Ready"] == ("False", "Pulling")
    assert c["Reconciling"][0] == "True" and c["Stalled"][0] == "False"


def test_deployment_once_pulled_then_ready_when_rolled_out() -> None:
    m = model(serving={"replicas": 2})
    pulled = Observed(resolved=resolved(), pull=JobState(succeeded=True))
    p = plan(m, pulled, CONFIG)
    assert kinds(p.children) == [
        "Service",
        "PersistentVolumeClaim",
        "Job",
        "Deployment",
        "PodDisruptionBudget",
    ]
    deployment = p.children[-2]
    assert conditions(status(m, pulled, p, CONFIG, NOW))["Ready"] == ("False", "Deploying")

    rolling = Observed(
        resolved=resolved(), pull=JobState(succeeded=True), deployment=deployment_state(deployment, 1)
    )
    assert conditions(status(m, rolling, plan(m, rolling, CONFIG), CONFIG, NOW))["Ready"] == (
        "False",
        "RollingOut",
    )

    done = Observed(
        resolved=resolved(), pull=JobState(succeeded=True), deployment=deployment_state(deployment, 2)
    )
    s = status(m, done, plan(m, done, CONFIG), CONFIG, NOW)
    assert conditions(s)["Ready"] == ("True", "Serving")
    assert conditions(s)["Available"][0] == "True"
    assert s.ready_replicas == 2 and s.resolved_revision == SHA and s.serving_revision == SHA
    assert s.selector == "moorage.dev/model=tiny,app.kubernetes.io/component=serving"
    assert s.endpoint == "http://tiny.ml.svc.cluster.local:8000/v1"


def test_new_revision_keeps_serving_the_old_weights_until_pulled() -> None:
    m = model()
    old = plan(m, Observed(resolved=resolved(SHA), pull=JobState(succeeded=True)), CONFIG).children[-1]
    pulling = Observed(
        resolved=resolved(NEW_SHA), pull=JobState(active=True), deployment=deployment_state(old, 1)
    )
    p = plan(m, pulling, CONFIG)
    assert p.target is not None and p.target.revision == SHA
    assert p.children[-1] == old, "the Deployment must not change while the new weights are pulled"
    s = status(m, pulling, p, CONFIG, NOW)
    assert s.resolved_revision == NEW_SHA and s.serving_revision == SHA
    assert conditions(s)["Available"][0] == "True" and conditions(s)["Ready"][0] == "False"

    pulled = Observed(
        resolved=resolved(NEW_SHA), pull=JobState(succeeded=True), deployment=deployment_state(old, 1)
    )
    rolled = plan(m, pulled, CONFIG).children[-1]
    assert NEW_SHA in rolled["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert rolled["metadata"]["annotations"][meta.SPEC_HASH] != old["metadata"]["annotations"][meta.SPEC_HASH]


def test_user_problems_stall_with_the_field_named() -> None:
    m = model()
    problem = Problem("InsufficientGPUMemory", "spec.serving.gpus: needs 4 x nvidia-l4")
    observed = Observed(resolved=resolved(), problem=problem)
    p = plan(m, observed, CONFIG)
    assert kinds(p.children) == ["Service"], "no GPU is taken before the model is known to fit"
    c = conditions(status(m, observed, p, CONFIG, NOW))
    assert c["Stalled"] == ("True", "InsufficientGPUMemory")
    assert c["Ready"] == ("False", "InsufficientGPUMemory") and c["Reconciling"][0] == "False"


def test_failed_pull_reports_the_program_reason() -> None:
    m = model()
    report = Report(ok=False, reason="ChecksumMismatch", message="model.safetensors: sha256 mismatch")
    observed = Observed(resolved=resolved(), pull=JobState(failed=True, report=report))
    s = status(m, observed, plan(m, observed, CONFIG), CONFIG, NOW)
    assert conditions(s)["Stalled"] == ("True", "ChecksumMismatch")
    assert "sha256 mismatch" in next(c.message for c in s.conditions if c.type == "Stalled")


def test_unschedulable_says_why() -> None:
    m = model(serving={"gpus": 8})
    deployment = plan(m, Observed(resolved=resolved(), pull=JobState(succeeded=True)), CONFIG).children[-1]
    observed = Observed(
        resolved=resolved(),
        pull=JobState(succeeded=True),
        deployment=deployment_state(deployment, 0),
        serving_blocked=Problem("Unschedulable", "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
    )
    c = conditions(status(m, observed, plan(m, observed, CONFIG), CONFIG, NOW))
    assert c["Ready"] == ("False", "Unschedulable") and c["Available"] == ("False", "Unschedulable")


def test_progress_deadline_stalls() -> None:
    m = model()
    deployment = plan(m, Observed(resolved=resolved(), pull=JobState(succeeded=True)), CONFIG).children[-1]
    state = deployment_state(deployment, 0)
    stuck = DeploymentState(**{**state.__dict__, "progress_deadline_exceeded": "ReplicaSet has timed out"})
    observed = Observed(resolved=resolved(), pull=JobState(succeeded=True), deployment=stuck)
    assert conditions(status(m, observed, plan(m, observed, CONFIG), CONFIG, NOW))["Stalled"] == (
        "True",
        "ProgressDeadlineExceeded",
    )


def test_transition_time_moves_only_when_status_flips() -> None:
    m = model()
    observed = Observed(resolved=resolved(), pull=JobState(active=True))
    first = status(m, observed, plan(m, observed, CONFIG), CONFIG, NOW)
    again = status(
        m.model_copy(update={"status": first}),
        observed,
        plan(m, observed, CONFIG),
        CONFIG,
        "2026-11-26T13:00:00Z",
    )
    assert again == first, "an unchanged world gives an identical status, so nothing is written"


def test_fine_tune_trains_after_pull_and_serves_the_adapter() -> None:
    m = model(fineTune={"dataset": {"uri": "pvc://data/train.jsonl"}, "lora": {"r": 8}})
    pulled = Observed(resolved=resolved(), pull=JobState(succeeded=True))
    p = plan(m, pulled, CONFIG)
    assert kinds(p.children) == ["Service", "PersistentVolumeClaim", "Job", "Job"]
    assert conditions(status(m, pulled, p, CONFIG, NOW))["FineTuned"] == ("False", "Training")
    trained = Observed(
        resolved=resolved(),
        pull=JobState(succeeded=True),
        finetune=JobState(
            succeeded=True,
            report=Report(True, "Trained", "done", {"steps": 40, "finalLoss": 0.5, "seconds": 12.0}),
        ),
    )
    p = plan(m, trained, CONFIG)
    args = p.children[-1]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--enable-lora" in args and "--max-lora-rank" in args
    assert args[args.index("--lora-modules") + 1].startswith("tiny-ft=/weights/adapters/")
    s = status(m, trained, p, CONFIG, NOW)
    assert s.fine_tune is not None and s.fine_tune.steps == 40 and s.fine_tune.served_model_name == "tiny-ft"


def test_unchanged_fine_tune_spec_keeps_its_adapter() -> None:
    a = model(fineTune={"dataset": {"uri": "pvc://data/train.jsonl"}})
    b = model(fineTune={"dataset": {"uri": "pvc://data/train.jsonl"}, "resources": {"gpus": 2}})
    c = model(fineTune={"dataset": {"uri": "pvc://data/train.jsonl"}, "training": {"learningRate": 1e-4}})
    observed = Observed(resolved=resolved(), pull=JobState(succeeded=True))
    ids = [plan(x, observed, CONFIG).desired.adapter.path for x in (a, b, c)]  # type: ignore[union-attr]
    assert ids[0] == ids[1], "resources do not change what is trained"
    assert ids[0] != ids[2]


def test_one_pull_job_per_volume_whichever_model_asks() -> None:
    m = model()
    children = plan(m, Observed(resolved=resolved(), pull=None), CONFIG).children
    claim, job = children[-2], children[-1]
    volume = claim["metadata"]["labels"]["moorage.dev/weights"]
    assert job["metadata"]["labels"]["moorage.dev/weights"] == volume
    assert job["spec"]["template"]["metadata"]["labels"]["moorage.dev/weights"] == volume, "its pods too"
    other = OpenSourceModel.parse(
        {
            "metadata": {"name": "other", "namespace": "ml", "uid": "u-2"},
            "spec": {"source": {"uri": "hf://org/tiny"}},
        }
    )
    assert (
        plan(other, Observed(resolved=resolved()), CONFIG).children[-1]["metadata"]["name"]
        == (job["metadata"]["name"])
    )


def test_token_reaches_the_pull_job_only_through_a_secret_ref() -> None:
    m = model(source={"uri": "hf://org/tiny", "tokenSecretRef": {"name": "hf"}})
    job = plan(m, Observed(resolved=resolved(), pull=JobState(active=True)), CONFIG).children[-1]
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}} in env


def test_pods_meet_the_restricted_profile() -> None:
    m = model(fineTune={"dataset": {"uri": "hf://datasets/org/data"}})
    observed = Observed(
        resolved=resolved(),
        dataset=resolved(),
        pull=JobState(succeeded=True),
        finetune=JobState(succeeded=True),
    )
    for child in plan(m, observed, CONFIG).children:
        if child["kind"] not in ("Job", "Deployment"):
            continue
        pod = child["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"] + pod.get("initContainers", []):
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_shared_volume_hash_ignores_owners() -> None:
    observed = Observed(resolved=resolved(), pull=JobState(active=True))
    a = plan(model(), observed, CONFIG).children[1]
    other = OpenSourceModel.parse(
        {
            "metadata": {"name": "other", "namespace": "ml", "uid": "u-2"},
            "spec": {"source": {"uri": "hf://org/tiny"}},
        }
    )
    b = plan(other, observed, CONFIG).children[1]
    assert a["metadata"]["name"] == b["metadata"]["name"]
    assert a["metadata"]["annotations"] == b["metadata"]["annotations"]
    assert a["metadata"]["ownerReferences"] != b["metadata"]["ownerReferences"]


@pytest.mark.parametrize("replicas", [0])
def test_scaled_to_zero_is_ready(replicas: int) -> None:
    m = model(serving={"replicas": replicas})
    deployment = plan(m, Observed(resolved=resolved(), pull=JobState(succeeded=True)), CONFIG).children[-1]
    observed = Observed(
        resolved=resolved(), pull=JobState(succeeded=True), deployment=deployment_state(deployment, 0)
    )
    assert conditions(status(m, observed, plan(m, observed, CONFIG), CONFIG, NOW))["Ready"] == (
        "True",
        "ScaledToZero",
    )


def test_serving_target_round_trips_through_annotations() -> None:
    target = plan(model(), Observed(resolved=resolved(), pull=JobState(succeeded=True)), CONFIG).target
    assert target is not None
    assert ServingTarget.from_annotations(target.annotations()) == target
    assert ConditionType.READY == "Ready"


def test_pull_progress_shows_in_status() -> None:
    m = model()
    line = "1.0 GiB / 1.9 GiB (53.7%), 96.0 MiB/s, 1/2 files"
    observed = Observed(resolved=resolved(), pull=JobState(active=True, progress=line))
    s = status(m, observed, plan(m, observed, CONFIG), CONFIG, NOW)
    assert s.weights is not None and s.weights.progress == line
    weights = next(c for c in s.conditions if c.type == "WeightsReady")
    assert weights.reason == "Pulling" and weights.message.endswith(line)
    done = Observed(resolved=resolved(), pull=JobState(succeeded=True, progress=line))
    assert status(m, done, plan(m, done, CONFIG), CONFIG, NOW).weights.progress is None  # type: ignore[union-attr]


def test_a_disruption_budget_only_with_two_replicas_or_more() -> None:
    pulled = Observed(resolved=resolved(), pull=JobState(succeeded=True))
    assert "PodDisruptionBudget" not in kinds(plan(model(), pulled, CONFIG).children)
    budget = plan(model(serving={"replicas": 3}), pulled, CONFIG).children[-1]
    assert budget["kind"] == "PodDisruptionBudget"
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == meta.selector(model())


def test_cpu_serving_takes_no_gpu_and_sizes_memory_from_the_weights() -> None:
    cpu = model(serving={"gpus": 0})
    observed = Observed(resolved=resolved(), pull=JobState(succeeded=True))
    deployment = next(c for c in plan(cpu, observed, CONFIG).children if c["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == CONFIG.vllm_cpu_image
    assert "tolerations" not in pod
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "5Gi"}, "limits": {}}
    assert {"name": "VLLM_CPU_KVCACHE_SPACE", "value": "1"} in container["env"]
    assert {"name": "VLLM_CPU_OMP_THREADS_BIND", "value": "nobind"} in container["env"]
    assert {"name": "OMP_NUM_THREADS", "value": "1"} in container["env"]
    assert "--tensor-parallel-size" not in container["args"]


def test_gpu_serving_requests_cpu_and_memory_unless_set() -> None:
    observed = Observed(resolved=resolved(), pull=JobState(succeeded=True))

    def resources(**serving: Any) -> dict[str, Any]:
        deployment = next(
            c for c in plan(model(serving=serving), observed, CONFIG).children if c["kind"] == "Deployment"
        )
        return dict(deployment["spec"]["template"]["spec"]["containers"][0]["resources"])

    assert resources(gpus=2) == {
        "requests": {"nvidia.com/gpu": "2", "cpu": "4", "memory": "5Gi"},
        "limits": {"nvidia.com/gpu": "2"},
    }
    assert resources(resources={"cpu": "3", "memory": "20Gi"}) == {
        "requests": {"nvidia.com/gpu": "1", "cpu": "3", "memory": "20Gi"},
        "limits": {"nvidia.com/gpu": "1", "memory": "20Gi"},
    }


def test_weights_already_on_the_volume_need_no_pull_job() -> None:
    observed = Observed(resolved=resolved(), pull=JobState(succeeded=True, on_volume=True))
    children = plan(model(), observed, CONFIG).children
    assert kinds(children) == ["Service", "PersistentVolumeClaim", "Deployment"]
