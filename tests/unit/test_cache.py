"""The watch-fed store the reconcile reads from, and Kube's use of it: reads from memory once synced, the
API server before; our writes' answers go in; late watch events never undo a write or a delete."""

import asyncio
from typing import Any

from moorage.reconcile.cache import Cache, Store
from moorage.reconcile.kube import Kube

Obj = dict[str, Any]


def obj(name: str, version: int, labels: dict[str, str] | None = None, owners: tuple[str, ...] = ()) -> Obj:
    return {
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": str(version),
            "labels": labels or {},
            "ownerReferences": [{"uid": uid} for uid in owners],
        },
    }


def test_the_newest_body_stays_whatever_order_they_come_in() -> None:
    store = Store()
    assert store.put(obj("a", 5))
    assert not store.put(obj("a", 4)), "a late watch event must not undo what our write answered"
    assert store.put(obj("a", 6))
    assert store.get("ns", "a") == obj("a", 6)
    assert store.get("other", "a") is None
    with_managers = obj("b", 1)
    with_managers["metadata"]["managedFields"] = [{"manager": "moorage", "fieldsV1": {}}]
    store.put(with_managers)
    assert store.get("ns", "b") == obj("b", 1), "nothing reads managedFields: not kept"
    assert "managedFields" in with_managers["metadata"], "the caller's body is left as it was"


def test_the_echo_of_our_own_write_is_known_as_such() -> None:
    store = Store()
    store.put(obj("a", 5), ours=True)  # the answer to our write
    assert store.echo(obj("a", 5)), "its watch event brings nothing new"
    store.put(obj("a", 6))
    assert not store.echo(obj("a", 6)), "a change by someone else"
    assert not store.echo(obj("b", 5))
    store.remove("ns", "a", 7)
    store.put(obj("a", 8))
    assert not store.echo(obj("a", 8))


def test_a_deleted_object_does_not_come_back_with_a_late_event_but_a_new_one_of_the_same_name_does() -> None:
    store = Store()
    store.put(obj("a", 5))
    store.remove("ns", "a")  # our own delete: no version known, the held one is the tombstone
    assert not store.put(obj("a", 5))
    assert store.get("ns", "a") is None
    assert store.put(obj("a", 9)), "made again since (or marked for deletion): newer, so it counts"
    assert store.get("ns", "a") == obj("a", 9)


def test_a_deletion_event_older_than_the_body_held_leaves_the_new_object_alone() -> None:
    store = Store()
    store.put(obj("a", 5))
    store.put(obj("a", 8))  # deleted and made again; its creation answered before the old one's DELETED came
    store.remove("ns", "a", 6)
    assert store.get("ns", "a") == obj("a", 8)
    store.remove("ns", "a", 8)
    assert store.get("ns", "a") is None


def test_select_by_labels_owner_and_presence_and_the_indexes_follow_changes() -> None:
    store = Store()
    store.put(obj("p1", 1, {"job-name": "j1", "model": "m"}, owners=("u1",)))
    store.put(obj("p2", 2, {"job-name": "j2", "model": "m"}, owners=("u2",)))
    store.put(obj("p3", 3, {"other": "x"}))
    names = lambda found: [o["metadata"]["name"] for o in found]  # noqa: E731
    assert names(store.select("ns", {"job-name": "j1"})) == ["p1"]
    assert names(store.select("ns", {"model": None})) == ["p1", "p2"]
    assert names(store.select("ns", {"model": "m"}, owner="u2")) == ["p2"]
    assert names(store.select("ns", {"model": "m", "job-name": "j2"})) == ["p2"]
    assert names(store.select("ns", {"model": "nope"})) == []
    assert names(store.select("other", {"model": None})) == []
    assert names(store.select("ns", {})) == ["p1", "p2", "p3"]
    store.put(obj("p1", 4, {"job-name": "j9"}))  # relabelled: the old entries go
    assert names(store.select("ns", {"job-name": "j1"})) == []
    assert names(store.select("ns", {"model": None})) == ["p2"]
    assert names(store.select("ns", {}, owner="u1")) == []
    store.remove("ns", "p2", 2)
    assert names(store.select("ns", {"model": None})) == []
    assert names(store.select("ns", {}, owner="u2")) == []


class FakeClient:
    """Counts what reaches the API server; answers writes with the body at a new resourceVersion."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.version = 100

    async def get(self, resource: Any, name: str, namespace: str) -> Obj:
        self.calls.append(f"get {name}")
        return obj(name, 1)

    async def list(self, resource: Any, namespace: str, labels: Any) -> Any:
        self.calls.append("list")
        for item in (obj("listed", 1, {"job-name": "j"}, owners=("u",)), obj("other", 1, {"job-name": "j"})):
            yield item

    async def apply(self, manifest: Any, field_manager: str, force: bool) -> Any:
        self.calls.append("apply")
        self.version += 1
        return {
            **manifest.to_dict(),
            "metadata": {**manifest.to_dict()["metadata"], "resourceVersion": str(self.version)},
        }

    async def delete(self, resource: Any, name: str, namespace: str, cascade: Any) -> None:
        self.calls.append(f"delete {name}")


def test_kube_reads_the_api_server_until_the_cache_is_synced_then_only_memory() -> None:
    async def scenario() -> None:
        client = FakeClient()
        cache = Cache({"Job": Store()})
        kube = Kube(client, cache)  # type: ignore[arg-type]
        assert await kube.get("Job", "ns", "a") == obj("a", 1)
        assert [
            o["metadata"]["name"] for o in await kube.select("Job", "ns", {"job-name": None}, owner="u")
        ] == ["listed"]
        assert client.calls == ["get a", "list"]
        cache.store("Job").put(obj("a", 7))
        cache.mark_synced()
        assert await kube.get("Job", "ns", "a") == obj("a", 7)
        assert await kube.get("Job", "ns", "missing") is None
        assert await kube.select("Job", "ns", {"job-name": None}) == []
        # An object the watches do not see (not ours) is asked for, whatever the cache says.
        assert await kube.get("Job", "ns", "users", watched=False) == obj("users", 1)
        # Not watched at all: the API server.
        assert await kube.get("Service", "ns", "s") == obj("s", 1)
        assert client.calls == ["get a", "list", "get users", "get s"]

        manifest = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "b", "namespace": "ns"},
            "spec": {"template": {"spec": {"containers": []}}},
        }
        await kube.apply(manifest)
        applied = await kube.get("Job", "ns", "b")
        assert applied is not None and applied["metadata"]["resourceVersion"] == "101"
        cache.store("Job").put(obj("b", 100))  # the watch's event from before our apply comes late
        assert (await kube.get("Job", "ns", "b") or {})["metadata"]["resourceVersion"] == "101"
        await kube.delete("Job", "ns", "b")
        assert await kube.get("Job", "ns", "b") is None
        cache.store("Job").put(obj("b", 101))  # a late MODIFIED of the deleted Job
        assert await kube.get("Job", "ns", "b") is None

    asyncio.run(scenario())


class SlowClient(FakeClient):
    """Answers each apply after a pause, counting how many are open at once, per object."""

    def __init__(self) -> None:
        super().__init__()
        self.open: dict[str, int] = {}
        self.most: dict[str, int] = {}

    async def apply(self, manifest: Any, field_manager: str, force: bool) -> Any:
        name = manifest.to_dict()["metadata"]["name"]
        self.open[name] = self.open.get(name, 0) + 1
        self.most[name] = max(self.most.get(name, 0), self.open[name])
        self.most["*"] = max(self.most.get("*", 0), sum(self.open.values()))
        await asyncio.sleep(0.01)
        self.open[name] -= 1
        return await super().apply(manifest, field_manager, force)


def test_writes_to_one_object_wait_for_each_other_and_all_are_bounded() -> None:
    """A shared weights volume gets an owner reference from every model on its base: one at a time, so the
    API server does not retry conflicting applies until they time out; and never more than the bound open."""

    def job(name: str) -> Obj:
        spec = {"template": {"spec": {"containers": []}}}
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": spec,
        }

    async def scenario() -> None:
        client = SlowClient()
        kube = Kube(client, Cache({"Job": Store()}), max_in_flight=4)  # type: ignore[arg-type]
        await asyncio.gather(
            *(kube.apply(job("shared")) for _ in range(5)), *(kube.apply(job(f"j{i}")) for i in range(8))
        )
        assert client.most["shared"] == 1
        assert client.most["*"] == 4

    asyncio.run(scenario())
