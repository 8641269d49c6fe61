"""Reading API objects into the facts the plan uses: Jobs, their pods' reports, Deployments, pending pods."""

from moorage.api.programs import Report
from moorage.plan.observed import DeploymentState, JobState, Problem, start_problem, unschedulable_message
from moorage.reconcile.observe import termination_report

FAILED = Report(ok=False, reason="DatasetInvalid", message="row 3: missing field 'completion'")


def pod(
    name: str, container: str, message: str | None, finished: str, last: bool = False
) -> dict[str, object]:
    terminated = {"exitCode": 3, "finishedAt": finished, **({"message": message} if message else {})}
    state = {"lastState" if last else "state": {"terminated": terminated}}
    return {"metadata": {"name": name}, "status": {"containerStatuses": [{"name": container, **state}]}}


def test_the_newest_report_of_the_programs_container_wins() -> None:
    older = Report(ok=False, reason="TrainingFailed", message="CUDA error")
    pods = [
        pod("a", "finetune", older.to_json(), "2026-01-01T10:00:00Z"),
        pod("b", "finetune", FAILED.to_json(), "2026-01-01T11:00:00Z", last=True),
        pod("c", "sidecar", Report(ok=True, reason="x", message="y").to_json(), "2026-01-01T12:00:00Z"),
        pod("d", "finetune", "Traceback (most recent call last): ...", "2026-01-01T13:00:00Z"),
    ]
    assert termination_report(pods, "finetune") == FAILED


def test_job_states() -> None:
    failed = {
        "status": {
            "failed": 1,
            "conditions": [
                {"type": "FailureTarget", "status": "True"},
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "PodFailurePolicy",
                    "message": "Container finetune exited 3",
                },
            ],
        }
    }
    state = JobState.from_job(failed, FAILED)
    assert state.failed and not state.succeeded and state.report == FAILED
    assert state.failure_message == "Container finetune exited 3"
    done = JobState.from_job(
        {"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}}
    )
    assert done.succeeded and not done.failed
    assert JobState.from_job({"status": {"active": 1}}).active


def test_deployment_state_and_deadline() -> None:
    deployment = {
        "metadata": {"generation": 3, "annotations": {"moorage.dev/revision": "abc"}},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 3,
            "replicas": 3,
            "updatedReplicas": 1,
            "readyReplicas": 2,
            "availableReplicas": 2,
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": 'ReplicaSet "m-1" has timed out',
                }
            ],
        },
    }
    state = DeploymentState.from_deployment(deployment)
    assert not state.rolled_out
    assert state.progress_deadline_exceeded == 'ReplicaSet "m-1" has timed out'
    assert state.annotations["moorage.dev/revision"] == "abc"


def test_unschedulable_message_comes_from_the_scheduler() -> None:
    pending = {
        "status": {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                }
            ]
        }
    }
    running = {"status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}}
    assert unschedulable_message([running]) is None
    assert (
        unschedulable_message([running, pending]) == "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    )


def test_a_job_pod_that_cannot_start_says_why() -> None:
    pulling = {
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": "pull",
                    "image": "registry.example/moorage:9",
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}},
                }
            ],
        }
    }
    problem = start_problem([pulling])
    assert problem is not None and problem.reason == "ImagePullFailed" and problem.retryable
    assert problem.message == "pod ?: container pull (registry.example/moorage:9): Back-off pulling image"
    pending = {
        "status": {
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}
            ]
        }
    }
    assert start_problem([pending]) == Problem("Unschedulable", "0/3 nodes", retryable=True)
    assert start_problem([{"status": {"phase": "Running"}}]) is None


def test_a_crash_loop_says_what_the_program_printed_last() -> None:
    crashing = {
        "metadata": {"name": "m-7d9f"},
        "status": {
            "containerStatuses": [
                {
                    "name": "vllm",
                    "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {
                        "terminated": {"exitCode": 2, "message": "usage: vllm serve\nerror: --bogus"}
                    },
                }
            ]
        },
    }
    problem = start_problem([crashing])
    assert problem == Problem(
        "CrashLoopBackOff",
        "pod m-7d9f: container vllm exited with code 2, 3 restart(s): usage: vllm serve error: --bogus",
        retryable=True,
    )


def test_a_volume_not_yet_bound_is_waited_for_not_unschedulable() -> None:
    message = "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. not found"
    pending = {
        "status": {
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
            ]
        }
    }
    problem = start_problem([pending])
    assert problem is not None and problem.reason == "WaitingForVolume" and problem.retryable
