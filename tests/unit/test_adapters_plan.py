"""spec.adapters in the plan: the pods load adapters at request time from a directory fixed per model, so
the Deployment does not change when the list does (no restart), and status tells each adapter's state."""

from dataclasses import replace
from typing import Any

from test_plan import CONFIG, NOW, SHA, deployment_state, model, resolved

from moorage.api.programs import Report
from moorage.api.resolved import ResolvedAdapter, ResolvedSource
from moorage.api.status import AdapterStatus, OpenSourceModelStatus
from moorage.plan import adapters
from moorage.plan.children import plan
from moorage.plan.observed import JobState, Observed
from moorage.plan.status import status
from moorage.plan.weights import claim_name

DONE = JobState(succeeded=True)


def uri_of(name: str) -> str:
    """hf://org/<name>-lora, or for a name pvc-<claim>-<dir>: pvc://<claim>/loras/<dir>."""
    if name.startswith("pvc-"):
        _, claim, directory = name.split("-")
        return f"pvc://{claim}/loras/{directory}"
    return f"hf://org/{name}-lora"


def adapter(name: str, sha: str = "d" * 40) -> ResolvedAdapter:
    uri = uri_of(name)
    if uri.startswith("pvc://"):
        return ResolvedAdapter(name, uri)
    return ResolvedAdapter(name, uri, ResolvedSource(uri, uri[5:], "model", "main", sha, ()))


def listing(*names: str) -> list[dict[str, str]]:
    return [{"name": n, "uri": uri_of(n)} for n in names]


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


def test_pvc_adapters_mount_their_claims_read_only_in_the_job_only() -> None:
    hub_only = children(("a",))
    made = children(("a", "pvc-store-x", "pvc-store-y", "pvc-other-z"))
    assert made["Deployment/serving"] == hub_only["Deployment/serving"], "a claim must not roll the pods"
    pod = made["Job/adapters"]["spec"]["template"]["spec"]
    claims = [v for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("readOnly")]
    assert [v["persistentVolumeClaim"]["claimName"] for v in claims] == ["other", "store"], "one per claim"
    [container] = pod["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert [(mounts[v["name"]]["mountPath"], mounts[v["name"]].get("readOnly")) for v in claims] == [
        ("/claims/other", True),
        ("/claims/store", True),
    ]
    assert container["args"][-3:] == [
        "pvc-store-x=pvc://store/loras/x",
        "pvc-store-y=pvc://store/loras/y",
        "pvc-other-z=pvc://other/loras/z",
    ]
    assert container["args"][-4] == "a=hf://org/a-lora@" + "d" * 40
    assert (
        made["Job/adapters"]["metadata"]["name"]
        != children(("a", "pvc-store-x"))["Job/adapters"]["metadata"]["name"]
    )


def _served(
    names: tuple[str, ...], job: JobState, previous: list[dict[str, Any]] | None = None
) -> list[AdapterStatus]:
    the_model = model(adapters=listing(*names))
    if previous is not None:
        the_model = the_model.model_copy(
            update={"status": OpenSourceModelStatus.model_validate({"adapters": previous})}
        )
    observed = Observed(
        resolved=resolved(), pull=DONE, adapters=tuple(adapter(n) for n in names), adapters_job=job
    )
    return list(status(the_model, observed, plan(the_model, observed, CONFIG), CONFIG, NOW).adapters or ())


def test_status_shows_a_pvc_adapters_digest_in_place_of_a_commit() -> None:
    digest = "c" * 64
    job = JobState(succeeded=True, report=Report(True, "AdaptersReady", "", {"digests": [None, digest]}))
    [hub, on_claim] = _served(("a", "pvc-store-x"), job)
    assert (hub.revision, hub.digest) == ("d" * 40, None)
    assert (on_claim.uri, on_claim.revision, on_claim.digest, on_claim.state) == (
        "pvc://store/loras/x",
        None,
        digest,
        "Served",
    )
    # The Job's pod (and its report) is gone: status remembers the digest of the same name and uri...
    remembered = [on_claim.wire()]
    [again] = _served(("pvc-store-x",), DONE, remembered)
    assert again.digest == digest
    # ...but not for another uri under that name.
    moved = [{**on_claim.wire(), "uri": "pvc://store/loras/old"}]
    assert _served(("pvc-store-x",), DONE, moved)[0].digest is None


def test_a_missing_pvc_path_stalls_naming_the_field() -> None:
    failed = JobState(
        failed=True,
        report=Report(False, "AdapterNotFound", "spec.adapters[0].uri: no directory 'loras/x' on ..."),
    )
    the_model = model(adapters=listing("pvc-store-x"))
    observed = Observed(
        resolved=resolved(), pull=DONE, adapters=(adapter("pvc-store-x"),), adapters_job=failed
    )
    new = status(the_model, observed, plan(the_model, observed, CONFIG), CONFIG, NOW)
    stalled = new.condition("Stalled")  # type: ignore[arg-type]
    assert stalled is not None and (stalled.status, stalled.reason) == ("True", "AdapterNotFound")
    assert stalled.message.startswith("spec.adapters[0].uri: ")
    job = adapters.job_name(the_model, resolved(), observed.adapters)
    assert stalled.message.endswith(f"(once it is there, kubectl delete job {job} to read it again)")


def _fine_tuned_status(finetune: JobState, ready: int | None) -> list[AdapterStatus]:
    the_model = model(fineTune={"dataset": {"uri": "pvc://data/train.jsonl"}, "lora": {"r": 8}}, adapters=[])
    observed = Observed(resolved=resolved(), pull=DONE, finetune=finetune, adapters_job=DONE)
    the_plan = plan(the_model, observed, CONFIG)
    if ready is not None:
        deployment = next(c for c in the_plan.children if c["kind"] == "Deployment")
        observed = Observed(
            resolved=resolved(),
            pull=DONE,
            finetune=finetune,
            adapters_job=DONE,
            deployment=deployment_state(deployment, ready=ready),
        )
    return list(status(the_model, observed, the_plan, CONFIG, NOW).adapters or ())


def test_the_fine_tuned_adapter_is_one_more_entry_of_status() -> None:
    assert [(a.name, a.fine_tune, a.state) for a in _fine_tuned_status(JobState(active=True), None)] == [
        ("tiny-ft", True, "Training")
    ]
    [served] = _fine_tuned_status(DONE, ready=1)
    assert (served.state, served.revision, served.message) == ("Served", None, None)
    assert served.uri == f"pvc://{plan_claim()}/adapters/{served.digest}"
    [rolling] = _fine_tuned_status(DONE, ready=0)
    assert rolling.state == "Deploying"
    failed = JobState(failed=True, report=Report(False, "DatasetInvalid", "row 3: no messages"))
    [broken] = _fine_tuned_status(failed, None)
    assert (broken.state, broken.message) == ("Failed", "row 3: no messages")


def plan_claim() -> str:
    return claim_name(model(), resolved())


def test_a_new_version_under_a_served_name_is_listed_once_no_replica_holds_the_old() -> None:
    """vLLM keeps an adapter it loaded by name: status lists the new commit only once the new files are in
    place and every replica that loaded the old one unloaded it (the reconciler asks them)."""
    old = AdapterStatus(name="a", uri="hf://org/a-lora", revision="d" * 40, state="Served")
    the_model = model(adapters=listing("a")).model_copy(
        update={"status": OpenSourceModelStatus(adapters=(old,))}
    )

    def listed(job: JobState, reloading: frozenset[str] = frozenset()) -> AdapterStatus:
        observed = Observed(
            resolved=resolved(), pull=DONE, adapters=(adapter("a", "e" * 40),), adapters_job=job
        )
        assert adapters.changed(the_model, observed) == ["a"]
        made = status(
            the_model, observed, plan(the_model, observed, CONFIG), CONFIG, NOW, reloading=reloading
        )
        [entry] = made.adapters or ()
        return entry

    pulling = listed(JobState(active=True))
    assert (pulling.revision, pulling.state) == ("d" * 40, "Pulling")
    unloading = listed(DONE, reloading=frozenset({"a"}))
    assert (unloading.revision, unloading.state) == ("d" * 40, "Pulling")
    assert unloading.message == "replacing the version the replicas loaded: being unloaded from them"
    served = listed(DONE)
    assert (served.revision, served.state, served.message) == ("e" * 40, "Served", None)
    failed = listed(JobState(failed=True, report=Report(False, "AdapterIncompatible", "rank 64")))
    assert (failed.revision, failed.state, failed.message) == ("d" * 40, "Failed", "rank 64")


def test_an_unchanged_version_is_no_change() -> None:
    same = AdapterStatus(name="a", uri="hf://org/a-lora", revision="d" * 40, state="Served")
    on_claim = AdapterStatus(name="pvc-store-x", uri="pvc://store/loras/x", digest="c" * 64, state="Served")
    the_model = model(adapters=listing("a", "pvc-store-x")).model_copy(
        update={"status": OpenSourceModelStatus(adapters=(same, on_claim))}
    )
    observed = Observed(
        resolved=resolved(), pull=DONE, adapters=(adapter("a"), adapter("pvc-store-x")), adapters_job=DONE
    )
    assert adapters.changed(the_model, observed) == []
    reread = JobState(succeeded=True, report=Report(True, "", "", {"digests": [None, "f" * 64]}))
    assert adapters.changed(the_model, replace(observed, adapters_job=reread)) == ["pvc-store-x"]
    # First listed while its Job ran (no digest yet), then reported: nothing was loaded to replace.
    unknown = on_claim.model_copy(update={"digest": None})
    fresh = the_model.model_copy(update={"status": OpenSourceModelStatus(adapters=(same, unknown))})
    assert adapters.changed(fresh, replace(observed, adapters_job=reread)) == []
