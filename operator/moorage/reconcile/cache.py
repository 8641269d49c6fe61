"""What the watches said: the latest body of every object of the kinds the operator watches, in memory.

kopf streams models, their children and their pods to the handlers; the handlers put each body here, so a
reconcile reads its world from memory instead of with a GET or LIST per object. A store answers only once it
is synced (the watch's first listing is in, see handlers.py); before that, and for kinds or objects it does
not watch, Kube asks the API server.

Our own writes go in too (the API server's answer to the apply or patch), so the next reconcile does not
act on the body from before the write. A body is kept only if it is at least as new as the one held
(resourceVersion), so a late watch event never undoes a write; a delete leaves a tombstone for the same
reason.

One gap: when a watch has been away so long that it must list again (410 Gone), kopf hands the listed objects
to the handlers but says nothing of those that went away meanwhile, so a child deleted during that gap stays
in its store until something else about the model changes it (kopf gives handlers no end-of-listing mark to
sweep on).
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

K = TypeVar("K")
Obj = dict[str, Any]
Key = tuple[str, str]
"""(namespace, name)"""


def resource_version(obj: Mapping[str, Any]) -> int | None:
    """The resourceVersion as a number, None if there is none. The API server's are etcd revisions; the
    documentation calls them opaque, so a store that meets one that is not a number keeps the newest
    body it was given instead of comparing."""
    raw = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return int(raw) if raw.isdigit() else None


def _newer(new: int | None, old: int | None) -> bool:
    return new is None or old is None or new >= old


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _owners(obj: Mapping[str, Any]) -> set[str]:
    return {str(o.get("uid")) for o in (obj.get("metadata") or {}).get("ownerReferences") or []}


@dataclass
class Store:
    """The objects of one kind: (namespace, name) → latest body, with indexes by label and owner so a
    selection costs what it returns, not the size of the namespace."""

    synced: bool = False
    _objects: dict[Key, Obj] = field(default_factory=dict)
    _tombstones: dict[Key, int | None] = field(default_factory=dict)
    _by_label: defaultdict[tuple[str, str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    """(namespace, label key, value) → names; value "" too under the key's own entry for `exists`."""
    _written: dict[tuple[str, str], int] = field(default_factory=dict)
    """The version each of our writes made, by object."""
    _by_key: defaultdict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    _by_owner: defaultdict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))

    def __len__(self) -> int:
        return len(self._objects)

    def put(self, obj: Mapping[str, Any], *, ours: bool = False) -> bool:
        """Keeps `obj` unless the store holds a newer body (or deleted a newer one); says if it kept it.
        `ours`: the API server's answer to our own write (see `echo`)."""
        metadata = obj.get("metadata") or {}
        key = (str(metadata.get("namespace") or ""), str(metadata["name"]))
        version = resource_version(obj)
        if ours and version is not None:
            self._written[key] = version
        held = self._objects.get(key)
        if held is not None and not _newer(version, resource_version(held)):
            return False
        if key in self._tombstones:
            if version is not None and (dead := self._tombstones[key]) is not None and version <= dead:
                return False
            del self._tombstones[key]
        self._unindex(key)
        body = dict(obj)
        if "managedFields" in metadata:
            # Often half an object's size (a volume a hundred models share has a hundred managers), and no
            # reconcile reads it.
            body["metadata"] = {k: v for k, v in metadata.items() if k != "managedFields"}
        self._objects[key] = body
        self._index(key, body)
        return True

    def remove(self, namespace: str, name: str, version: int | None = None) -> None:
        """The object is gone: a DELETED event (`version` its last one) or our own delete (no version).
        A body held that is newer than `version` is another object of the same name, made since, and
        stays. Bodies up to the version removed stay out (a tombstone), so a late event cannot bring
        the dead object back."""
        key = (namespace, name)
        held = self._objects.get(key)
        held_version = resource_version(held) if held is not None else None
        if version is not None and held_version is not None and held_version > version:
            return
        self._unindex(key)
        self._objects.pop(key, None)
        self._written.pop(key, None)
        versions = [v for v in (version, held_version, self._tombstones.get(key)) if v is not None]
        self._tombstones[key] = max(versions) if versions else None

    def echo(self, obj: Mapping[str, Any]) -> bool:
        """Whether `obj` is, as a watch brings it, the version our own last write made: nothing in it is
        news to the reconcile that wrote it, so it wakes no one."""
        metadata = obj.get("metadata") or {}
        key = (str(metadata.get("namespace") or ""), str(metadata.get("name")))
        version = resource_version(obj)
        return version is not None and self._written.get(key) == version

    def get(self, namespace: str, name: str) -> Obj | None:
        return self._objects.get((namespace, name))

    def select(self, namespace: str, labels: Mapping[str, str | None], owner: str | None = None) -> list[Obj]:
        """Objects whose labels match (a None value: the label is there, any value), owned by `owner`
        when given."""
        candidates: list[set[str]] = [
            self._by_key.get((namespace, k), set())
            if v is None
            else self._by_label.get((namespace, k, v), set())
            for k, v in labels.items()
        ]
        if owner is not None:
            candidates.append(self._by_owner.get((namespace, owner), set()))
        if not candidates:
            names: Iterable[str] = [n for ns, n in self._objects if ns == namespace]
        else:
            smallest, *rest = sorted(candidates, key=len)
            names = [n for n in smallest if all(n in other for other in rest)]
        return [self._objects[namespace, n] for n in sorted(names)]

    def _index(self, key: Key, obj: Obj) -> None:
        namespace, name = key
        for k, v in _labels(obj).items():
            self._by_label[namespace, k, v].add(name)
            self._by_key[namespace, k].add(name)
        for uid in _owners(obj):
            self._by_owner[namespace, uid].add(name)

    def _unindex(self, key: Key) -> None:
        held = self._objects.get(key)
        if held is None:
            return
        namespace, name = key
        for k, v in _labels(held).items():
            _discard(self._by_label, (namespace, k, v), name)
            _discard(self._by_key, (namespace, k), name)
        for uid in _owners(held):
            _discard(self._by_owner, (namespace, uid), name)


def _discard(index: defaultdict[K, set[str]], key: K, name: str) -> None:
    names = index.get(key)
    if names is not None:
        names.discard(name)
        if not names:
            del index[key]


@dataclass
class Cache:
    """One store per watched kind (the kind as in `kind:`, e.g. "Deployment")."""

    stores: dict[str, Store] = field(default_factory=dict)

    def store(self, kind: str) -> Store:
        return self.stores.setdefault(kind, Store())

    def synced(self, kind: str) -> Store | None:
        """The kind's store if it can answer, else None (not watched, or its listing is not in yet)."""
        store = self.stores.get(kind)
        return store if store is not None and store.synced else None

    def mark_synced(self) -> None:
        for store in self.stores.values():
            store.synced = True
