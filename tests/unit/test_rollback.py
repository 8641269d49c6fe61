"""Revisions and automatic rollback, pure: a rollout that fails goes back to the last Ready revision."""

import copy
from dataclasses import replace
from typing import Any

import pytest
from test_plan import CONFIG, NOW, conditions, deployment_state, resolved

from moorage.api.model import OpenSourceModel
from moorage.api.status import OpenSourceModelStatus, Revision
from moorage.plan.children import Plan, plan
from moorage.plan.observed import CRASH_RESTARTS, JobState, Observed, Problem, crash_loop
from moorage.plan.revisions import revisions
from moorage.plan.serving import TEMPLATE_HASH
from moorage.plan.status import fingerprint, status

LATER = "2026-11-26T12:05:00Z"
CRASH = Problem("CrashLoopBackOff", "pod tiny-b-1: container vllm exited with code 2, 3 restart(s): bad flag")
Obj = dict[str, Any]


def model(
    status: OpenSourceModelStatus | None = None, generation: int = 2, **serving: Any
) -> OpenSourceModel:
    parsed = OpenSourceModel.parse(
        {
            "metadata": {"name": "tiny", "namespace": "ml", "uid": "u-1", "generation": generation},
            "spec": {"source": {"uri": "hf://org/tiny"}, "serving": {"replicas": 4, **serving}},
        }
    )
    return parsed.model_copy(update={"status": status or OpenSourceModelStatus()})


def deployment(p: Plan) -> Obj:
    return next(c for c in p.children if c["kind"] == "Deployment")


def replica_set_template(manifest: Obj) -> Obj:
    """What the Deployment controller keeps of a template in its ReplicaSet."""
    template = copy.deepcopy(manifest["spec"]["template"])
    template["metadata"]["labels"]["pod-template-hash"] = "5d4f8c7b9"
    template["metadata"]["creationTimestamp"] = None
    return template


def observed(live: Obj | None = None, ready: int = 0, **facts: Any) -> Observed:
    state = deployment_state(live, ready) if live is not None else None
    return Observed(resolved=resolved(), pull=JobState(succeeded=True), deployment=state, **facts)


class Story:
    """Revision A rolled out and Ready, then the spec asks for B (bad extraArgs) and B's rollout starts."""

    def __init__(self, **serving: Any) -> None:
        first = model()
        self.a = deployment(plan(first, observed(), CONFIG))
        seen = observed(self.a, ready=4)
        self.ready = status(first, seen, plan(first, seen, CONFIG), CONFIG, NOW)
        self.broken = model(self.ready, generation=3, vllm={"extraArgs": ["--bad"]}, **serving)
        rolling = plan(self.broken, seen, CONFIG)
        self.b = deployment(rolling)
        self.rolling = status(self.broken, seen, rolling, CONFIG, NOW)
        self.templates = {h(self.a): replica_set_template(self.a), h(self.b): replica_set_template(self.b)}

    def failing(self, **facts: Any) -> tuple[OpenSourceModel, Observed]:
        """B runs, 1 pod of it updated and not ready, A's 4 still serving."""
        live = deployment_state(self.b, 0, replicas=5)
        live = replace(live, updated_replicas=1, ready_replicas=4, available_replicas=4)
        broken = self.broken.model_copy(update={"status": self.rolling})
        seen = Observed(
            resolved=resolved(),
            pull=JobState(succeeded=True),
            deployment=replace(live, **facts.pop("deployment", {})),
            templates=self.templates,
            **facts,
        )
        return broken, seen


def h(manifest: Obj) -> str:
    return str(manifest["metadata"]["annotations"][TEMPLATE_HASH])


def test_status_records_the_current_and_last_ready_revision() -> None:
    story = Story()
    ready = story.ready
    assert ready.revision is not None and ready.last_ready_revision is not None
    assert ready.revision.template_hash == ready.last_ready_revision.template_hash == h(story.a)
    assert ready.last_ready_revision.commit == "a" * 40 and ready.last_ready_revision.state == "Ready"
    assert ready.last_ready_revision.image == CONFIG.vllm_image and ready.last_ready_revision.since == NOW
    rolling = story.rolling
    assert rolling.revision is not None and rolling.revision.template_hash == h(story.b)
    assert rolling.revision.state == "RollingOut"
    assert rolling.last_ready_revision == ready.last_ready_revision, "what a rollback would restore"
    assert [(r.template_hash, r.state) for r in rolling.revision_history] == [
        (h(story.b), "RollingOut"),
        (h(story.a), "Ready"),
    ]


def test_the_pods_carry_the_template_hash_of_their_revision() -> None:
    story = Story()
    assert story.a["spec"]["template"]["metadata"]["annotations"][TEMPLATE_HASH] == h(story.a)
    assert h(story.a) != h(story.b)


@pytest.mark.parametrize(
    "facts",
    [
        {"crash_loop": CRASH},
        {"deployment": {"progress_deadline_exceeded": 'ReplicaSet "tiny-b" has timed out progressing.'}},
    ],
    ids=["crash-loop", "deadline"],
)
def test_a_failed_rollout_restores_the_last_ready_template(facts: Obj) -> None:
    story = Story()
    broken, seen = story.failing(**facts)
    p = plan(broken, seen, CONFIG)
    restored = deployment(p)
    assert p.rollback is not None and p.rollback.new
    assert restored["spec"]["template"] == story.a["spec"]["template"], "the template as it was"
    assert h(restored) == h(story.a)
    assert restored == story.a, "only the pods changed: the Deployment is as it was, hash and all"
    assert restored["spec"]["strategy"] == story.b["spec"]["strategy"], "same surge and unavailable limits"
    assert restored["spec"]["replicas"] == 4
    assert p.target is not None and p.target.revision == "a" * 40

    s = status(broken, seen, p, CONFIG, LATER)
    reason = "CrashLoopBackOff" if "crash_loop" in facts else "ProgressDeadlineExceeded"
    assert conditions(s)["Ready"] == ("False", "RolledBack")
    assert conditions(s)["Stalled"] == ("True", "RolledBack")
    assert conditions(s)["Reconciling"][0] == "False"
    stalled = s.condition("Stalled")
    assert stalled is not None and h(story.b) in stalled.message and reason in stalled.message
    if "crash_loop" in facts:
        assert "bad flag" in stalled.message, "the failing pod's own words"
    assert s.failed_revision is not None and s.failed_revision.template_hash == h(story.b)
    assert s.failed_revision.reason == reason and s.failed_revision.state == "RolledBack"
    assert s.failed_revision.since == NOW, "when its rollout started"
    assert s.revision is not None and s.revision.template_hash == h(story.a) and s.revision.since == LATER
    assert [(r.template_hash, r.state) for r in s.revision_history] == [
        (h(story.a), "Ready"),
        (h(story.b), "RolledBack"),
    ]
    assert s.serving_revision == "a" * 40


def test_rolled_back_stays_rolled_back_without_writes_and_restarts_change_nothing() -> None:
    story = Story()
    broken, seen = story.failing(crash_loop=CRASH)
    first = plan(broken, seen, CONFIG)
    rolled_back = status(broken, seen, first, CONFIG, LATER)
    # Later reconciles (or a restarted operator: everything it needs is in status): the restored
    # Deployment is rolled out, the failing pods are gone.
    after = broken.model_copy(update={"status": rolled_back})
    live = deployment(first)
    steady = Observed(
        resolved=resolved(),
        pull=JobState(succeeded=True),
        deployment=deployment_state(live, 4),
        templates={h(live): live["spec"]["template"]},
    )
    again = plan(after, steady, CONFIG)
    assert again.rollback is not None and not again.rollback.new
    assert deployment(again) == live, "the same Deployment: nothing to apply, no fight with drift revert"
    settled = status(after, steady, again, CONFIG, "2026-11-26T13:00:00Z")
    assert conditions(settled)["Stalled"] == ("True", "RolledBack") and settled.failed_revision is not None
    later = after.model_copy(update={"status": settled})
    again_later = status(later, steady, plan(later, steady, CONFIG), CONFIG, "2026-11-26T14:00:00Z")
    assert fingerprint(again_later) == fingerprint(settled), "nothing new, nothing to write"


def test_the_failed_revision_is_not_retried_until_the_spec_changes() -> None:
    story = Story()
    broken, seen = story.failing(crash_loop=CRASH)
    first = plan(broken, seen, CONFIG)
    rolled_back = status(broken, seen, first, CONFIG, LATER)
    live = deployment(first)
    steady = Observed(
        resolved=resolved(),
        pull=JobState(succeeded=True),
        deployment=deployment_state(live, 4),
        templates={h(live): live["spec"]["template"]},
    )
    # A scale is a new generation, not a new revision: still the last Ready one, at the new count.
    scaled = model(rolled_back, generation=4, replicas=6, vllm={"extraArgs": ["--bad"]})
    p = plan(scaled, steady, CONFIG)
    assert h(deployment(p)) == h(story.a) and deployment(p)["spec"]["replicas"] == 6
    # A different revision is tried, and the failure record goes.
    fixed = model(rolled_back, generation=5, vllm={"extraArgs": ["--good"]})
    p = plan(fixed, steady, CONFIG)
    assert p.rollback is None and h(deployment(p)) not in (h(story.a), h(story.b))
    s = status(fixed, steady, p, CONFIG, "2026-11-26T13:00:00Z")
    assert s.failed_revision is None and conditions(s)["Stalled"] == ("False", "Progressing")
    assert [r.state for r in s.revision_history] == ["RollingOut", "Ready", "RolledBack"]


def test_opting_out_leaves_the_failed_rollout_and_stalls() -> None:
    story = Story(rollout={"autoRollback": False})
    stuck = {"progress_deadline_exceeded": "timed out"}
    broken, seen = story.failing(deployment=stuck)
    p = plan(broken, seen, CONFIG)
    assert p.rollback is None and deployment(p) == story.b
    assert conditions(status(broken, seen, p, CONFIG, LATER))["Stalled"] == (
        "True",
        "ProgressDeadlineExceeded",
    )


def test_no_rollback_without_something_to_restore() -> None:
    story = Story()
    broken, seen = story.failing(crash_loop=CRASH)
    first_rollout = broken.model_copy(update={"status": OpenSourceModelStatus()})
    assert plan(first_rollout, seen, CONFIG).rollback is None, "nothing was ever Ready"
    gone = replace(seen, templates={})
    assert plan(broken, gone, CONFIG).rollback is None, "the ReplicaSet of the Ready revision is gone"


def test_a_deadline_of_the_template_before_does_not_count() -> None:
    story = Story()
    # The controller has not seen the new template yet: its Progressing condition is about the old one.
    stale = {"progress_deadline_exceeded": "timed out", "generation": 3, "observed_generation": 2}
    broken, seen = story.failing(deployment=stale)
    assert plan(broken, seen, CONFIG).rollback is None


def _pod(hash_: str, restarts: int, reason: str = "CrashLoopBackOff") -> Obj:
    return {
        "metadata": {"name": f"tiny-{hash_}", "annotations": {TEMPLATE_HASH: hash_}},
        "status": {
            "containerStatuses": [
                {
                    "name": "vllm",
                    "restartCount": restarts,
                    "state": {"waiting": {"reason": reason}},
                    "lastState": {
                        "terminated": {"exitCode": 2, "message": "error: unrecognized arguments: --bad"}
                    },
                }
            ]
        },
    }


def test_only_the_new_revisions_pods_crash_looping_long_enough_count() -> None:
    assert crash_loop([_pod("old", 9)], TEMPLATE_HASH, "new") is None
    assert crash_loop([_pod("new", CRASH_RESTARTS - 1)], TEMPLATE_HASH, "new") is None
    assert crash_loop([_pod("new", 9, "ContainerCreating")], TEMPLATE_HASH, "new") is None
    found = crash_loop([_pod("old", 9), _pod("new", CRASH_RESTARTS)], TEMPLATE_HASH, "new")
    assert found is not None and found.reason == "CrashLoopBackOff"
    assert "tiny-new" in found.message and "unrecognized arguments: --bad" in found.message


def test_the_history_is_bounded_and_newest_first() -> None:
    previous = OpenSourceModelStatus()
    for index in range(8):
        current = Revision(template_hash=f"h{index}", commit="a" * 40)
        records = revisions(previous, current, current, None, f"2026-11-26T12:0{index}:00Z")
        previous = previous.model_copy(update={"revision_history": records.history})
    assert [r.template_hash for r in previous.revision_history] == ["h7", "h6", "h5", "h4", "h3"]
    assert all(r.state == "Ready" for r in previous.revision_history)


def test_a_revision_replaced_before_it_was_ready_is_superseded() -> None:
    first = Revision(template_hash="one")
    records = revisions(OpenSourceModelStatus(), first, None, None, NOW)
    previous = OpenSourceModelStatus(revision_history=records.history)
    records = revisions(previous, Revision(template_hash="two"), None, None, LATER)
    assert [(r.template_hash, r.state) for r in records.history] == [
        ("two", "RollingOut"),
        ("one", "Superseded"),
    ]
    assert records.last_ready is None
