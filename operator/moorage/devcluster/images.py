"""Images for the real node: tiny FROM-scratch images written here; archives loaded into containerd.

No registry can be reached and there is no Docker daemon, so the node's own
images (the pause image, the probe the tests run) are OCI archives written
directly: one layer holding one static binary. They are byte-for-byte
reproducible, so loading the same image twice is skipped by its digest.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from moorage.devcluster.api import JSON

#: containerd's namespace for images the kubelet sees.
K8S_NAMESPACE = "k8s.io"
PAUSE_IMAGE = "localhost/moorage/pause:3.10"
PROBE_IMAGE = "localhost/moorage/probe:dev"

_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
_REF_NAME = "org.opencontainers.image.ref.name"
_CONTAINERD_NAME = "io.containerd.image.name"


class ImageError(RuntimeError):
    """An archive could not be read or imported."""


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    """An uncompressed, reproducible tar of ``name -> (content, mode)`` (owned by root, mtime 0)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (content, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, 0
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def write_scratch_image(
    archive: Path,
    name: str,
    binary: Path,
    *,
    entrypoint: Sequence[str],
    cmd: Sequence[str] = (),
    user: str = "65532:65532",
) -> Path:
    """Write an OCI archive of a ``FROM scratch`` image holding ``binary`` at ``/<binary name>``."""
    layer = _tar({binary.name: (binary.read_bytes(), 0o755)})
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": list(entrypoint), "Cmd": list(cmd), "User": user, "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": _OCI_MANIFEST,
            "config": {"mediaType": _OCI_CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": _OCI_LAYER, "digest": _digest(layer), "size": len(layer)}],
        },
        sort_keys=True,
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": _OCI_MANIFEST,
                    "digest": _digest(manifest),
                    "size": len(manifest),
                    "annotations": {_CONTAINERD_NAME: name, _REF_NAME: name},
                }
            ],
        },
        sort_keys=True,
    ).encode()
    files = {
        "oci-layout": (b'{"imageLayoutVersion":"1.0.0"}', 0o644),
        "index.json": (index, 0o644),
    }
    for blob in (layer, config, manifest):
        files[f"blobs/sha256/{_digest(blob).removeprefix('sha256:')}"] = (blob, 0o644)
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(_tar(files))
    return archive


def archive_images(archive: Path) -> dict[str, str]:
    """Image name -> manifest (or index) digest that an OCI archive would import; {} for other archives.

    Docker archives (``manifest.json``) carry no such digest, so they are
    always imported.
    """
    try:
        with tarfile.open(archive, mode="r:") as tar:
            member = next((m for m in tar if m.name.lstrip("./") == "index.json"), None)
            if member is None:
                return {}
            handle = tar.extractfile(member)
            index: JSON = json.loads(handle.read()) if handle is not None else {}
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise ImageError(f"{archive}: not a readable image archive: {exc}") from exc
    names = {}
    for desc in index.get("manifests", []):
        annotations = desc.get("annotations") or {}
        name = annotations.get(_CONTAINERD_NAME) or annotations.get(_REF_NAME)
        if name:
            names[str(name)] = str(desc["digest"])
    return names


@dataclass(frozen=True)
class LoadResult:
    """What :func:`load_image` did."""

    images: dict[str, str]
    """Image name -> digest, as containerd holds them after the load."""
    skipped: bool
    """True when every image was already there with the same digest."""
    seconds: float


def containerd_images(ctr: Sequence[str]) -> dict[str, str]:
    """Image name -> target digest in containerd's ``k8s.io`` namespace."""
    result = subprocess.run(
        [*ctr, "-n", K8S_NAMESPACE, "images", "ls"], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise ImageError(f"ctr images ls failed: {result.stderr.strip()}")
    images = {}
    for line in result.stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3:
            images[fields[0]] = fields[2]
    return images


def load_image(ctr: Sequence[str], archive: Path) -> LoadResult:
    """Import an OCI or docker archive into containerd's ``k8s.io`` namespace, unless already there.

    ``ctr`` is the command prefix that reaches the node's containerd (binary
    and ``--address``). An OCI archive whose images are all present with the
    same digests is not read again: importing a multi-GB image takes minutes.
    Other tags of the same repositories are removed after an import, so that
    the image store keeps one build of each image, and only unpacked: the
    layers' archived copies are dropped once unpacked (half the disk).
    """
    started = time.monotonic()
    if not archive.is_file():
        raise ImageError(f"{archive}: no such image archive")
    wanted = archive_images(archive)
    if wanted:
        present = containerd_images(ctr)
        if all(present.get(name) == digest for name, digest in wanted.items()):
            return LoadResult(wanted, skipped=True, seconds=time.monotonic() - started)
    result = subprocess.run(
        [*ctr, "-n", K8S_NAMESPACE, "images", "import", "--local", "--discard-unpacked-layers", str(archive)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ImageError(f"ctr images import {archive} failed: {(result.stderr or result.stdout).strip()}")
    present = containerd_images(ctr)
    loaded = {name: present[name] for name in wanted if name in present}
    if not wanted:
        # A docker archive: report the images ctr said it unpacked.
        said = set(result.stdout.split())
        loaded = {name: digest for name, digest in present.items() if name in said}
    missing = sorted(set(wanted) - set(loaded))
    if missing:
        raise ImageError(f"ctr imported {archive} but containerd lacks {', '.join(missing)}")
    _remove_other_tags(ctr, loaded, present)
    return LoadResult(loaded, skipped=False, seconds=time.monotonic() - started)


def _repository(name: str) -> str:
    """``localhost/moorage/vllm-cpu:abc`` -> ``localhost/moorage/vllm-cpu`` (a port's colon stays)."""
    head, _, tag = name.rpartition(":")
    return head if head and "/" not in tag else name


def _remove_other_tags(ctr: Sequence[str], loaded: dict[str, str], present: dict[str, str]) -> None:
    """Forget older tags of the repositories just loaded: the image store outlives runs, and each
    rebuild of a multi-GB image would otherwise stay on disk (containerd collects the unused layers)."""
    repositories = {_repository(name) for name in loaded}
    stale = [n for n in present if n not in loaded and _repository(n) in repositories and "@" not in n]
    if stale:
        subprocess.run(
            [*ctr, "-n", K8S_NAMESPACE, "images", "rm", *stale], capture_output=True, timeout=120, check=False
        )


def parse_build_listing(text: str) -> dict[str, tuple[str, Path]]:
    """images/build.sh's stdout (`<name> <image-ref> <archive-path>` lines): name → (reference, archive)."""
    images = {}
    for line in text.splitlines():
        if line.strip():
            name, ref, archive = line.split()
            images[name] = (ref, Path(archive))
    return images
