"""The kwok Stage configuration that plays the kubelets of the fake nodes.

Lifecycle it gives to pods on kwok-managed nodes:

* a scheduled pod becomes Running and Ready at once;
* a Running pod owned by a Job finishes (phase Succeeded, exit code 0);
* a pod annotated ``devcluster.moorage.dev/outcome: Succeeded|Failed`` ends that
  way, whoever owns it (Failed exits with code 1), so tests can fail Job pods;
* a pod being deleted (and holding no finalizers) is removed for good;
* a pod whose container has the argument ``--devcluster-crash-loop`` runs but
  crash-loops (waiting in CrashLoopBackOff after CRASH_RESTARTS restarts, exit
  code 1), and one with ``--devcluster-never-ready`` runs but is never Ready:
  broken revisions of a Deployment. A real program refuses an unknown flag, so
  the same argument breaks a real pod too.

Nodes become Ready when kwok picks them up; the capacity, addresses and node
info the launcher put into their status are kept.
"""

from __future__ import annotations

from typing import Any

import yaml

OUTCOME_ANNOTATION = "devcluster.moorage.dev/outcome"
CRASH_LOOP_ARG = "--devcluster-crash-loop"
NEVER_READY_ARG = "--devcluster-never-ready"
CRASH_RESTARTS = 3
_ARGS_KEY = ".spec.containers.[].args.[]"
_OUTCOME_KEY = f'.metadata.annotations["{OUTCOME_ANNOTATION}"]'

_NODE_READY = """\
{{ $now := Now }}
conditions:
{{ range NodeConditions }}
- lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $now | Quote }}
  message: {{ .message | Quote }}
  reason: {{ .reason | Quote }}
  status: {{ .status | Quote }}
  type: {{ .type | Quote }}
{{ end }}
phase: Running
"""

_POD_RUNNING = """\
{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: PodReadyToStartContainers
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: ContainersReady
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Ready
{{ range .spec.readinessGates }}
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: {{ .conditionType | Quote }}
{{ end }}
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  imageID: {{ printf "kwok://%s" .image | Quote }}
  containerID: {{ printf "kwok://%s" .name | Quote }}
  name: {{ .name | Quote }}
  ready: true
  started: true
  restartCount: 0
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
initContainerStatuses:
{{ range .spec.initContainers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: true
  restartCount: 0
  {{ if eq .restartPolicy "Always" }}
  started: true
  state:
    running:
      startedAt: {{ $now | Quote }}
  {{ else }}
  started: false
  state:
    terminated:
      exitCode: 0
      reason: Completed
      startedAt: {{ $now | Quote }}
      finishedAt: {{ $now | Quote }}
  {{ end }}
{{ end }}
{{ with NodeIPWith .spec.nodeName }}
hostIP: {{ . | Quote }}
hostIPs:
- ip: {{ . | Quote }}
{{ end }}
{{ with PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) \
( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
podIP: {{ . | Quote }}
podIPs:
- ip: {{ . | Quote }}
{{ end }}
phase: Running
startTime: {{ $now | Quote }}
"""


def _pod_broken(crash: bool) -> str:
    """Running, not ready: a container that keeps crashing, or one that runs but never answers."""
    state = (
        """\
  restartCount: """
        + str(CRASH_RESTARTS)
        + """
  state:
    waiting:
      reason: CrashLoopBackOff
      message: back-off restarting failed container
  lastState:
    terminated:
      exitCode: 1
      reason: Error
      message: "devcluster: """
        + CRASH_LOOP_ARG
        + """ makes this container exit with code 1"
      startedAt: {{ $now | Quote }}
      finishedAt: {{ $now | Quote }}
"""
        if crash
        else """\
  restartCount: 0
  state:
    running:
      startedAt: {{ $now | Quote }}
"""
    )
    return (
        """\
{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: PodReadyToStartContainers
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: ContainersNotReady
  type: ContainersReady
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: ContainersNotReady
  type: Ready
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  imageID: {{ printf "kwok://%s" .image | Quote }}
  containerID: {{ printf "kwok://%s" .name | Quote }}
  name: {{ .name | Quote }}
  ready: false
  started: """
        + ("false" if crash else "true")
        + "\n"
        + state
        + """\
{{ end }}
{{ with NodeIPWith .spec.nodeName }}
hostIP: {{ . | Quote }}
{{ end }}
{{ with PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) \
( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
podIP: {{ . | Quote }}
{{ end }}
phase: Running
startTime: {{ $now | Quote }}
"""
    )


def _pod_finished(phase: str, exit_code: int, reason: str) -> str:
    return (
        """\
{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: PodCompleted
  type: ContainersReady
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: PodCompleted
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  type: PodReadyToStartContainers
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  imageID: {{ printf "kwok://%s" .image | Quote }}
  containerID: {{ printf "kwok://%s" .name | Quote }}
  name: {{ .name | Quote }}
  ready: false
  started: false
  restartCount: 0
  state:
    terminated:
"""
        + f"      exitCode: {exit_code}\n      reason: {reason}\n"
        + """\
      startedAt: {{ $now | Quote }}
      finishedAt: {{ $now | Quote }}
{{ end }}
"""
        + f"phase: {phase}\n"
    )


def _stage(name: str, kind: str, match: list[dict[str, Any]], nxt: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": kind},
            "selector": {"matchExpressions": match},
            "next": nxt,
        },
    }


def _expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    expr: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        expr["values"] = list(values)
    return expr


_NOT_DELETED = _expr(".metadata.deletionTimestamp", "DoesNotExist")
_RUNNING = _expr(".status.phase", "In", "Running")


def stages() -> list[dict[str, Any]]:
    """All the Stage objects, as plain dicts."""
    ready_status = '.status.conditions.[] | select( .type == "Ready" ) | .status'
    scheduled = [_NOT_DELETED, _expr(".status.phase", "In", "Pending"), _expr(".spec.nodeName", "Exists")]
    return [
        _stage(
            "node-ready",
            "Node",
            [_expr(ready_status, "NotIn", "True")],
            {"statusTemplate": _NODE_READY},
        ),
        _stage(
            "pod-running",
            "Pod",
            [
                *scheduled,
                _expr(ready_status, "NotIn", "True"),
                _expr(_ARGS_KEY, "NotIn", CRASH_LOOP_ARG, NEVER_READY_ARG),
            ],
            {"statusTemplate": _POD_RUNNING},
        ),
        _stage(
            "pod-crash-loop",
            "Pod",
            [*scheduled, _expr(_ARGS_KEY, "In", CRASH_LOOP_ARG)],
            {"statusTemplate": _pod_broken(crash=True)},
        ),
        _stage(
            "pod-never-ready",
            "Pod",
            [*scheduled, _expr(_ARGS_KEY, "In", NEVER_READY_ARG), _expr(_ARGS_KEY, "NotIn", CRASH_LOOP_ARG)],
            {"statusTemplate": _pod_broken(crash=False)},
        ),
        _stage(
            "pod-job-complete",
            "Pod",
            [
                _NOT_DELETED,
                _RUNNING,
                _expr(".metadata.ownerReferences.[].kind", "In", "Job"),
                _expr(_OUTCOME_KEY, "DoesNotExist"),
            ],
            {"statusTemplate": _pod_finished("Succeeded", 0, "Completed")},
        ),
        _stage(
            "pod-outcome-succeeded",
            "Pod",
            [_NOT_DELETED, _RUNNING, _expr(_OUTCOME_KEY, "In", "Succeeded")],
            {"statusTemplate": _pod_finished("Succeeded", 0, "Completed")},
        ),
        _stage(
            "pod-outcome-failed",
            "Pod",
            [_NOT_DELETED, _RUNNING, _expr(_OUTCOME_KEY, "In", "Failed")],
            {"statusTemplate": _pod_finished("Failed", 1, "Error")},
        ),
        _stage(
            "pod-delete",
            "Pod",
            [
                _expr(".metadata.deletionTimestamp", "Exists"),
                _expr(".metadata.finalizers", "DoesNotExist"),
            ],
            {"delete": True},
        ),
    ]


def render() -> str:
    """The stages as a multi-document YAML file for ``kwok --config``."""
    return yaml.safe_dump_all(stages(), sort_keys=False)
