"""The shape every moorage Job shares: our programs' exit codes drive the Job's retries."""

from typing import Any

from moorage.api.programs import ExitCode


def job_spec(
    container: str,
    pod_spec: dict[str, Any],
    pod_labels: dict[str, str],
    backoff_limit: int,
    pod_annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Job that retries transient failures and stops at once on a permanent one (a wrong source, a bad
    dataset): the program says which through its exit code."""
    rules = [
        {
            "action": "FailJob",
            "onExitCodes": {
                "containerName": container,
                "operator": "In",
                "values": [int(ExitCode.PERMANENT)],
            },
        },
        # An evicted or preempted pod is not the program's fault and does not count against the backoff.
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
    ]
    metadata: dict[str, Any] = {"labels": pod_labels}
    if pod_annotations:
        metadata["annotations"] = pod_annotations
    return {
        "backoffLimit": backoff_limit,
        "podFailurePolicy": {"rules": rules},
        "template": {"metadata": metadata, "spec": {"restartPolicy": "Never", **pod_spec}},
    }
