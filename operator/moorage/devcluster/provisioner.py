"""The dev cluster's default StorageClass: PVCs bound to new hostPath PVs, released ones deleted."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from moorage.devcluster.api import JSON, ApiClient, ApiError

#: The default StorageClass the provisioner serves.
STORAGE_CLASS = "standard"
PROVISIONER_NAME = "devcluster.moorage.dev/hostpath"
PROVISIONED_LABEL = "devcluster.moorage.dev/provisioned"


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
    """Binds Pending PVCs of the default class to new hostPath PVs, and deletes released ones."""

    def __init__(self, api: ApiClient, root: Path, interval: float = 0.5) -> None:
        self._api = api
        self._root = root
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="devcluster-provisioner", daemon=True)
        self.errors: list[str] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.sync()
            except (OSError, ApiError, ValueError, KeyError) as exc:
                self.errors = [*self.errors[-9:], repr(exc)]

    def sync(self) -> None:
        pvs = self._api.get("/api/v1/persistentvolumes").get("items", [])
        existing = {pv["metadata"]["name"] for pv in pvs}
        for pv in pvs:
            self._maybe_delete(pv)
        for pvc in self._api.get("/api/v1/persistentvolumeclaims").get("items", []):
            spec = pvc.get("spec", {})
            if pvc.get("status", {}).get("phase") != "Pending" or spec.get("volumeName"):
                continue
            if spec.get("storageClassName") != STORAGE_CLASS or "deletionTimestamp" in pvc["metadata"]:
                continue
            name = f"pvc-{pvc['metadata']['uid']}"
            if name not in existing:
                self._provision(name, pvc)

    def _provision(self, name: str, pvc: JSON) -> None:
        meta, spec = pvc["metadata"], pvc["spec"]
        path = self._root / name
        path.mkdir(parents=True, exist_ok=True)
        # hostPath volumes ignore fsGroup: pods that run as a non-root uid
        # (moorage's images use 65532) could not write otherwise.
        path.chmod(0o777)
        storage = spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")
        body: JSON = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": name,
                "labels": {PROVISIONED_LABEL: "true"},
                "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER_NAME},
            },
            "spec": {
                "capacity": {"storage": storage},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
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
