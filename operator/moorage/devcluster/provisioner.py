"""The dev cluster's default StorageClass: PVCs bound to new hostPath PVs, released ones deleted.

It binds as well as provisions. The controller-manager's volume binder makes four writes per claim one
after another, on one worker: with a thousand models it took minutes to bind claims whose volumes existed
within seconds, and every pod on them waited. Here a claim is seen on the watch as it is made and bound
by a pool of workers with the writes the binder would make (the binder then finds nothing to do), the
way a fast CSI provisioner with prebound volumes behaves.
"""

from __future__ import annotations

import json
import shutil
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from moorage.devcluster.api import JSON, ApiClient, ApiError

#: The default StorageClass the provisioner serves.
STORAGE_CLASS = "standard"
PROVISIONER_NAME = "devcluster.moorage.dev/hostpath"
PROVISIONED_LABEL = "devcluster.moorage.dev/provisioned"
WORKERS = 8
WATCH_SECONDS = 5
"""How long one watch request lasts: the watch thread ends at most this long after `stop`."""


def storage_class() -> JSON:
    """The default StorageClass object, served by :class:`Provisioner`."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER_NAME,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


class Provisioner:
    """Binds Pending PVCs of the default class to new hostPath PVs, and deletes released ones.

    A watch of claims brings new ones at once; a full look every `interval` seconds catches what a watch
    restart missed and deletes released volumes."""

    def __init__(self, api: ApiClient, root: Path, interval: float = 2.0) -> None:
        self._api = api
        self._root = root
        self._interval = interval
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name="devcluster-provisioner", daemon=True),
            threading.Thread(target=self._watch, name="devcluster-provisioner-watch", daemon=True),
        ]
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="devcluster-provisioner")
        self._lock = threading.Lock()
        self._in_hand: set[str] = set()
        """Claims (by uid) a worker is binding now."""
        self.errors: list[str] = []

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        sync, watch = self._threads
        if sync.is_alive():
            sync.join(timeout=10)
        # Not waited for: blocked on its stream, it sends nothing more and ends with its request.
        watch.join(timeout=0.5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _note(self, exc: BaseException) -> None:
        self.errors = [*self.errors[-9:], repr(exc)]

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.sync()
            except (OSError, ApiError, ValueError, KeyError) as exc:
                self._note(exc)

    def _watch(self) -> None:
        version: str | None = None  # None: list first (at the start, or when the watch fell too far behind)
        while not self._stop.is_set():
            try:
                if version is None:
                    listing = self._api.get("/api/v1/persistentvolumeclaims")
                    for claim in listing.get("items", []):
                        self._consider(claim)
                    version = listing["metadata"]["resourceVersion"]
                version = self._watch_from(version)
            except (OSError, ApiError, ValueError, KeyError) as exc:
                self._note(exc)
                version = None
                self._stop.wait(1)

    def _watch_from(self, version: str) -> str | None:
        """Claims as they change, for WATCH_SECONDS; returns where to go on from (None: list again)."""
        path = (
            f"/api/v1/persistentvolumeclaims?watch=1&allowWatchBookmarks=true&resourceVersion={version}"
            f"&timeoutSeconds={WATCH_SECONDS}"
        )
        request = urllib.request.Request(self._api.server + path)  # noqa: S310
        with urllib.request.urlopen(  # noqa: S310
            request, context=self._api._context, timeout=WATCH_SECONDS + 10
        ) as stream:
            for line in stream:
                event = json.loads(line)
                if event.get("type") == "ERROR":  # 410 Gone: the version is too old to go on from
                    return None
                claim = event["object"]
                version = claim["metadata"]["resourceVersion"]
                if event["type"] in ("ADDED", "MODIFIED"):
                    self._consider(claim)
                if self._stop.is_set():
                    break
        return version

    def sync(self) -> None:
        pvs = self._api.get("/api/v1/persistentvolumes").get("items", [])
        for pv in pvs:
            self._maybe_delete(pv)
        for pvc in self._api.get("/api/v1/persistentvolumeclaims").get("items", []):
            self._consider(pvc)

    def _consider(self, pvc: JSON) -> None:
        """Hands a claim of ours that waits for a volume to a worker, unless one has it already."""
        spec, meta = pvc.get("spec", {}), pvc["metadata"]
        if pvc.get("status", {}).get("phase") != "Pending" or spec.get("volumeName"):
            return
        if spec.get("storageClassName") != STORAGE_CLASS or "deletionTimestamp" in meta:
            return
        with self._lock:
            if meta["uid"] in self._in_hand or self._stop.is_set():
                return
            self._in_hand.add(meta["uid"])
        self._pool.submit(self._bind, pvc)

    def _bind(self, pvc: JSON) -> None:
        try:
            self._provision(pvc)
        except (OSError, ApiError, ValueError, KeyError) as exc:
            self._note(exc)
        finally:
            with self._lock:
                self._in_hand.discard(pvc["metadata"]["uid"])

    def _provision(self, pvc: JSON) -> None:
        meta, spec = pvc["metadata"], pvc["spec"]
        name = f"pvc-{meta['uid']}"
        path = self._root / name
        path.mkdir(parents=True, exist_ok=True)
        # hostPath volumes ignore fsGroup: pods that run as a non-root uid
        # (moorage's images use 65532) could not write otherwise.
        path.chmod(0o777)
        storage = spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")
        access_modes = spec.get("accessModes") or ["ReadWriteOnce"]
        body: JSON = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": name,
                "labels": {PROVISIONED_LABEL: "true"},
                "annotations": {
                    "pv.kubernetes.io/provisioned-by": PROVISIONER_NAME,
                    "pv.kubernetes.io/bound-by-controller": "yes",
                },
            },
            "spec": {
                "capacity": {"storage": storage},
                "accessModes": access_modes,
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": STORAGE_CLASS,
                "volumeMode": spec.get("volumeMode", "Filesystem"),
                "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        try:
            self._api.create("/api/v1/persistentvolumes", body)
        except ApiError as exc:
            if exc.status != 409:
                raise
        # The binder's own writes: the volume Bound, the claim naming it, the claim Bound.
        self._api.merge_patch(f"/api/v1/persistentvolumes/{name}/status", {"status": {"phase": "Bound"}})
        claim = f"/api/v1/namespaces/{meta['namespace']}/persistentvolumeclaims/{meta['name']}"
        bound = {"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes"}
        self._api.merge_patch(
            claim,
            {"metadata": {"annotations": bound, "uid": meta["uid"]}, "spec": {"volumeName": name}},
        )
        status = {"phase": "Bound", "accessModes": access_modes, "capacity": {"storage": storage}}
        self._api.merge_patch(f"{claim}/status", {"status": status})

    def _maybe_delete(self, pv: JSON) -> None:
        meta = pv["metadata"]
        if meta.get("labels", {}).get(PROVISIONED_LABEL) != "true" or "deletionTimestamp" in meta:
            return
        if pv.get("spec", {}).get("persistentVolumeReclaimPolicy") != "Delete":
            return
        if pv.get("status", {}).get("phase") not in ("Released", "Failed"):
            return
        try:
            self._api.delete(f"/api/v1/persistentvolumes/{meta['name']}")
        except ApiError as exc:
            if exc.status != 404:
                raise
        shutil.rmtree(self._root / meta["name"], ignore_errors=True)
