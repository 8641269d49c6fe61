"""Cleaning up after the real node: its containers, mounts, cgroups and the host paths it wrote.

A kubelet and containerd leave running containers, mounts (pod volumes,
container root filesystems, network namespaces), cgroups and a few fixed host
directories behind when they stop. :func:`clean` removes all of it for one
node directory, also when the run that made it died without stopping, and
:func:`leftovers` says what is still there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from moorage.devcluster.images import K8S_NAMESPACE

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: The kubelet's pod cgroup (cgroupfs driver, cgroupRoot /) in each hierarchy.
POD_CGROUP = "kubepods"
#: Paths outside the node directory that the kubelet or containerd write to
#: whatever they are configured with; removed on stop unless they existed before.
SHIM_SOCKETS = Path("/run/containerd")
HOST_PATHS = (
    SHIM_SOCKETS,  # the shims' sockets (/run/containerd/s), whatever containerd's state dir
    Path("/var/lib/kubelet"),  # device-plugins
    Path("/var/log/containers"),
    Path("/var/log/pods"),
    Path("/var/lib/cni"),  # libcni's result cache
    Path("/usr/libexec/kubernetes"),  # the default FlexVolume dir, should a flag be missed
)


def host_paths_existing() -> dict[str, bool]:
    """Which of :data:`HOST_PATHS` exist now."""
    return {str(p): p.exists() for p in HOST_PATHS}


def record_host_paths(record: Path) -> dict[str, bool]:
    """Note which :data:`HOST_PATHS` exist now (unless a crashed run noted it already); return the note."""
    if not record.exists():
        record.write_text(json.dumps(host_paths_existing(), indent=1))
    with contextlib.suppress(OSError, ValueError):
        return dict(json.loads(record.read_text()))
    return host_paths_existing()


def _mountpoints_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if len(fields) > 4:
                # Spaces and such are octal-escaped in mountinfo.
                point = fields[4].encode().decode("unicode_escape")
                if point == str(root) or point.startswith(prefix):
                    points.append(point)
    return points


def unmount_all(root: Path) -> None:
    """Unmount everything mounted at or below ``root``, deepest first (lazily if busy)."""
    for _ in range(5):
        points = _mountpoints_under(root)
        if not points:
            return
        for point in sorted(set(points), key=len, reverse=True):
            if subprocess.run(["umount", point], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _cgroup_dirs() -> list[Path]:
    """Each hierarchy's pod cgroup that exists."""
    if not CGROUP_ROOT.is_dir():
        return []
    found = [CGROUP_ROOT / POD_CGROUP] if (CGROUP_ROOT / POD_CGROUP / "cgroup.procs").exists() else []
    found += [h / POD_CGROUP for h in sorted(CGROUP_ROOT.iterdir()) if (h / POD_CGROUP).is_dir()]
    return found


def _cgroup_pids() -> set[int]:
    pids: set[int] = set()
    for top in _cgroup_dirs():
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def _shim_pids(containerd_socket: Path) -> set[int]:
    """The runc shims started by the containerd listening on ``containerd_socket``."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            ours = str(containerd_socket).encode() in argv
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and ours:
                pids.add(int(proc.name))
    return pids


def kill_containers(containerd_socket: Path, timeout: float = 10.0) -> None:
    """SIGKILL every process in the pod cgroups and every shim of this containerd; wait until gone."""
    deadline = time.monotonic() + timeout
    while True:
        pids = _cgroup_pids() | _shim_pids(containerd_socket)
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def forget_containers(ctr: Sequence[str]) -> None:
    """Delete the (dead) pod containers and sandboxes from containerd, keeping its images.

    The next run's kubelet would otherwise find sandboxes of pods that no API
    server knows and spend its first minute collecting them.
    """
    for kind in ("containers", "sandboxes"):
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            listed = subprocess.run(
                [*ctr, "-n", K8S_NAMESPACE, kind, "ls"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            # A table: a header line, then the id first on each line (`sandboxes ls` has no -q).
            ids = [line.split()[0] for line in listed.stdout.splitlines()[1:] if line.strip()]
            if listed.returncode == 0 and ids:
                force = ["--force"] if kind == "sandboxes" else []
                rm = [*ctr, "-n", K8S_NAMESPACE, kind, "rm", *force, *ids]
                subprocess.run(rm, capture_output=True, timeout=60, check=False)


def remove_cgroups(timeout: float = 10.0) -> None:
    """rmdir the pod cgroup trees, leaves first; killed processes may take a moment to leave them."""
    deadline = time.monotonic() + timeout
    while True:
        for top in _cgroup_dirs():
            for directory, _subdirs, _files in os.walk(top, topdown=False):
                with contextlib.suppress(OSError):
                    os.rmdir(directory)
        if not _cgroup_dirs() or time.monotonic() > deadline:
            return
        time.sleep(0.1)


def remove_host_paths(record: Path, pod_logs: Path) -> None:
    """Remove the :data:`HOST_PATHS` that did not exist before; in those that did, only our entries."""
    existed: dict[str, bool] = {}
    with contextlib.suppress(OSError, ValueError):
        existed = json.loads(record.read_text())
    for path in HOST_PATHS:
        if path == SHIM_SOCKETS:
            # Another containerd on this machine may keep its shims' sockets
            # there too: remove only dead sockets, and directories left empty.
            _remove_dead_sockets(path, keep_root=existed.get(str(path), False))
        elif not existed.get(str(path), False):
            shutil.rmtree(path, ignore_errors=True)
    containers = Path("/var/log/containers")
    if containers.is_dir():
        # The kubelet's per-container log links point into our pod log directory.
        for link in containers.iterdir():
            with contextlib.suppress(OSError):
                if link.is_symlink() and str(os.readlink(link)).startswith(str(pod_logs)):
                    link.unlink()
    with contextlib.suppress(FileNotFoundError):
        record.unlink()


def _listening_sockets() -> set[str]:
    """Paths of the unix sockets some process has bound (from /proc/net/unix)."""
    paths = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 8 and fields[7].startswith("/"):
                paths.add(fields[7])
    return paths


def _dead_entries(root: Path) -> list[Path]:
    """Files under ``root`` that are not a live socket, and directories, deepest first."""
    if not root.is_dir():
        return []
    live = _listening_sockets()
    entries = []
    for directory, subdirs, files in os.walk(root, topdown=False):
        entries += [Path(directory) / f for f in files if str(Path(directory) / f) not in live]
        entries += [Path(directory) / d for d in subdirs]
    return entries


def _remove_dead_sockets(root: Path, *, keep_root: bool) -> None:
    for entry in _dead_entries(root):
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                entry.rmdir()  # only when empty
            else:
                entry.unlink()
    if not keep_root:
        with contextlib.suppress(OSError):
            root.rmdir()


def clean(node_dir: Path, containerd_socket: Path, record: Path) -> None:
    """Stop what is left of a node whose processes are gone, and remove its traces."""
    kill_containers(containerd_socket)
    unmount_all(node_dir)
    remove_cgroups()
    remove_host_paths(record, node_dir / "pod-logs")


def leftovers(node_dir: Path, containerd_socket: Path, existed_before: Mapping[str, bool]) -> list[str]:
    """What :func:`clean` should have removed and is still there (empty when clean)."""
    found = [f"mount {p}" for p in _mountpoints_under(node_dir)]
    found += [f"cgroup {d}" for d in _cgroup_dirs()]
    found += [f"shim pid {p}" for p in sorted(_shim_pids(containerd_socket))]
    for path in HOST_PATHS:
        if path == SHIM_SOCKETS:
            found += [f"dead socket {e}" for e in _dead_entries(path) if not e.is_dir()]
        elif path.exists() and not existed_before.get(str(path), False):
            found.append(f"path {path}")
    return found
