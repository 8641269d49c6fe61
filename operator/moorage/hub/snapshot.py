"""A snapshot directory on the weights volume: its completion marker, what is left to fetch, disk space.

Standard library only: `moorage pull` answers a cache hit with this module alone.
"""

import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from moorage.api.layout import COMPLETE_MARKER
from moorage.api.resolved import HubFile, ResolvedSource
from moorage.hub.errors import InsufficientDiskError, InvalidSourceError

PART_SUFFIX = ".part"
MARKER_VERSION = 1


def read_marker(directory: Path) -> dict[str, object] | None:
    try:
        value = json.loads((directory / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def is_complete(directory: Path, sha: str, include: Sequence[str] | None) -> bool:
    """The marker is there, for this commit and the same file selection."""
    marker = read_marker(directory)
    return marker is not None and marker.get("sha") == sha and marker.get("include") == _normal(include)


def write_marker(directory: Path, resolved: ResolvedSource, include: Sequence[str] | None) -> None:
    """Written last and atomically: its presence is the promise that every file is whole."""
    manifest = {
        "version": MARKER_VERSION,
        "uri": resolved.uri,
        "revision": resolved.revision,
        "sha": resolved.sha,
        "include": _normal(include),
        "total": resolved.total_bytes,
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in resolved.files],
        "completedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    part = directory / (COMPLETE_MARKER + PART_SUFFIX)
    part.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(part, directory / COMPLETE_MARKER)


def remove_marker(directory: Path) -> None:
    (directory / COMPLETE_MARKER).unlink(missing_ok=True)


def local_path(directory: Path, file: HubFile) -> Path:
    """Where a repository file goes; a path that would leave the directory is refused."""
    relative = PurePosixPath(file.path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise InvalidSourceError(f"the repository lists an unsafe file path {file.path!r}")
    return directory.joinpath(*relative.parts)


def part_path(path: Path) -> Path:
    return path.with_name(path.name + PART_SUFFIX)


def have_bytes(directory: Path, file: HubFile) -> int:
    """Bytes of the file already on disk: all of them when it is in place, else its .part so far.

    A file is in place only after its checksum passed (it is renamed from .part then), so its size is proof.
    """
    path = local_path(directory, file)
    for candidate, whole in ((path, True), (part_path(path), False)):
        try:
            size = candidate.stat().st_size
        except OSError:
            continue
        if whole:
            return file.size if size == file.size else 0
        return min(size, file.size)
    return 0


def is_done(directory: Path, file: HubFile) -> bool:
    try:
        return local_path(directory, file).stat().st_size == file.size
    except OSError:
        return False


def free_bytes(directory: Path) -> int:
    """Free space of the filesystem that will hold directory (its nearest existing ancestor)."""
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def check_disk(directory: Path, needed: int) -> None:
    free = free_bytes(directory)
    if needed > free:
        raise InsufficientDiskError(
            f"{_gib(needed)} GiB still to download but only {_gib(free)} GiB free on the weights volume; "
            "give spec.cache a bigger size"
        )


def _normal(include: Sequence[str] | None) -> list[str] | None:
    return sorted(include) if include else None


def _gib(n: int) -> str:
    return f"{n / 1024**3:.2f}"
