"""A snapshot directory on the weights volume: its completion marker, what is left to fetch, disk space.

A file being fetched is <file>.part, as big as the whole file from the start (ranges are written at their
offsets), with <file>.part.state beside it listing the byte intervals already written. The state is saved
only after the bytes it lists were flushed, so it never claims a byte that is not there; a .part without its
state counts as nothing written.

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
STATE_SUFFIX = ".part.state"
MARKER_VERSION = 1
STATE_VERSION = 1


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


def state_path(path: Path) -> Path:
    return path.with_name(path.name + STATE_SUFFIX)


def read_state(path: Path, size: int) -> list[tuple[int, int]]:
    """The intervals of the file's .part that are written; none when there is no state, or one for
    another size or that cannot be read (its .part is then worth nothing: it is fetched again)."""
    try:
        value = json.loads(state_path(path).read_text())
        if value["version"] != STATE_VERSION or value["size"] != size:
            return []
        done = [(int(a), int(b)) for a, b in value["done"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    cursor = 0
    for a, b in done:  # sorted, disjoint and within the file, or not trusted at all
        if not cursor <= a < b <= size:
            return []
        cursor = b
    return done


def write_state(path: Path, size: int, done: list[tuple[int, int]]) -> None:
    """Atomically, so a crash leaves the old state or the new one."""
    state = state_path(path)
    temporary = state.with_name(state.name + ".tmp")
    temporary.write_text(json.dumps({"version": STATE_VERSION, "size": size, "done": done}))
    os.replace(temporary, state)


def have_bytes(directory: Path, file: HubFile) -> int:
    """Bytes of the file already on disk: all of them when it is in place, else what its state lists.

    A file is in place only after its checksum passed (it is renamed from .part then), so its size is proof.
    """
    path = local_path(directory, file)
    try:
        if path.stat().st_size == file.size:
            return file.size
    except OSError:
        pass
    if not part_path(path).exists():
        return 0
    return sum(b - a for a, b in read_state(path, file.size))


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
