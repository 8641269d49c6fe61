"""spec.adapters in the plan: the pods load adapters at request time from a directory fixed per model, so
the Deployment does not change when the list does (no restart), and status tells each adapter's state."""

from typing import Any

from test_plan import CONFIG, NOW, SHA, deployment_state, model, resolved

from moorage.api.programs import Report
from moorage.api.resolved import ResolvedAdapter, ResolvedSource
from moorage.plan.children import plan
from moorage.plan.observed import JobState, Observed
from moorage.plan.status import status

DONE = JobState(succeeded=True)


def adapter(name: str, sha: str = "d" * 40) -> ResolvedAdapter:
    uri = f"hf://org/{name}-lora"
    return ResolvedAdapter(name, ResolvedSource(uri, uri[5:], "model", "main", sha, ()))


def listing(*names: str) -> list[dict[str, str]]:
    return [{"name": n, "uri": f"hf://org/{n}-lora"} for n in names]


def children(names: tuple[str, ...], adapters_job: JobState | None = DONE) -> dict[str, Any]:
    observed = Observed(
        resolved=resolved(),
        pull=DONE,
        adapters=tuple(adapter(n) for n in names),
        adapters_job=adapters_job,
    )
    made = plan(model(adapters=listing(*names)), observed, CONFIG)
    return {
        f"{c['kind']}/{c['metadata']['labels'].get('app.kubernetes.io/component', '')}": c
        for c in made.children
    }


def test_the_deployment_is_the_same_whatever_the_list() -> None:
    one, three = children(("a",)), children(("a", "b", "c"))
    assert one["Deployment/serving"] == three["Deployment/serving"], "adding adapters would roll the pods"
    assert one["Job/adapters"]["metadata"]["name"] != three["Job/adapters"]["metadata"]["name"]
    container = one["Deployment/serving"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "true"
    assert env["VLLM_LORA_RESOLVER_CACHE_DIR"] == "/weights/served-adapters/u-1"
    assert "--enable-lora" in container["args"]
    assert container["args"][container["args"].index("--max-lora-rank") + 1] == "16"


def test_no_deployment_before_the_adapters_directory_exists() -> None:
    """vLLM's resolver refuses to start on a directory that does not exist yet."""
    assert "Deployment/serving" not in children(("a",), adapters_job=JobState(active=True))


def test_status_lists_each_adapter_with_its_commit() -> None:
    the_model = model(adapters=listing("a", "b"))
    observed = Observed(
        resolved=resolved(), pull=DONE, adapters=(adapter("a"), adapter("b", "e" * 40)), adapters_job=DONE
    )
    the_plan = plan(the_model, observed, CONFIG)
    deployment = next(c for c in the_plan.children if c["kind"] == "Deployment")
    observed = Observed(
        resolved=resolved(),
        pull=DONE,
        adapters=observed.adapters,
        adapters_job=DONE,
        deployment=deployment_state(deployment, ready=1),
    )
    new = status(the_model, observed, the_plan, CONFIG, NOW)
    assert [(a.name, a.revision, a.state) for a in new.adapters or ()] == [
        ("a", "d" * 40, "Served"),
        ("b", "e" * 40, "Served"),
    ]
    assert new.condition("Ready") and new.condition("Ready").status == "True"  # type: ignore[union-attr]
    assert new.resolved_revision == SHA


def test_a_failed_adapters_job_stalls_naming_the_adapter() -> None:
    failed = JobState(
        failed=True, report=Report(False, "AdapterIncompatible", "spec.adapters 'a': trained on x")
    )
    the_model = model(adapters=listing("a"))
    observed = Observed(resolved=resolved(), pull=DONE, adapters=(adapter("a"),), adapters_job=failed)
    new = status(the_model, observed, plan(the_model, observed, CONFIG), CONFIG, NOW)
    stalled = new.condition("Stalled")  # type: ignore[arg-type]
    assert stalled is not None and (stalled.status, stalled.reason) == ("True", "AdapterIncompatible")
    assert [a.state for a in new.adapters or ()] == ["Failed"]
