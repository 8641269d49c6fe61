"""Build (or find in the cache) the test control plane binaries, and the real node's, from tests/cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

#: Names of the component entry points in build.sh's bin dir (symlinks to one binary).
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubelet",
    "kube-proxy",
)
#: Programs in build-node.sh's bin dir.
NODE_PROGRAMS = ("containerd", "containerd-shim-runc-v2", "ctr", "coredns", "pause", "probe")
#: Programs in build-autoscaling.sh's bin dir (KEDA's CRDs are beside it, in ../keda-crd).
AUTOSCALING_PROGRAMS = ("keda-operator", "keda-adapter", "prometheus")


class BuildError(RuntimeError):
    """tests/cluster/build.sh failed or could not be found."""


def find_cluster_dir(start: Path | None = None) -> Path:
    """Return the repository's ``tests/cluster`` directory.

    ``MOORAGE_TESTCLUSTER_DIR`` overrides the search; otherwise the parents of
    ``start`` (default: this file, then the working directory) are searched.
    """
    override = os.environ.get("MOORAGE_TESTCLUSTER_DIR")
    if override:
        return Path(override).resolve()
    starts = [start] if start is not None else [Path(__file__).resolve(), Path.cwd().resolve()]
    for origin in starts:
        for parent in [origin, *origin.parents]:
            candidate = parent / "tests" / "cluster" / "build.sh"
            if candidate.is_file():
                return candidate.parent
    raise BuildError("cannot find tests/cluster/build.sh above " + ", ".join(map(str, starts)))


def _bin_dir_complete(bin_dir: Path, names: tuple[str, ...]) -> bool:
    return all((bin_dir / name).exists() for name in names)


def _prebuilt(variable: str, names: tuple[str, ...]) -> Path | None:
    """The bin dir an environment variable names instead of a build; None when it names none."""
    named = os.environ.get(variable)
    if not named:
        return None
    bin_dir = Path(named).resolve()
    if not _bin_dir_complete(bin_dir, names):
        raise BuildError(f"{variable}={named} lacks one of {', '.join(names)}")
    return bin_dir


def build(cluster_dir: Path | None = None, *, progress_every: float = 60.0, first_note: float = 5.0) -> Path:
    """Run ``build.sh`` and return the directory holding the component binaries.

    A warm cache answers in well under a second. A cold build takes several
    minutes; if the build is still running after ``first_note`` seconds a
    progress line goes to stderr, then every ``progress_every`` seconds. The
    build's own output is shown only if it fails.

    ``MOORAGE_TESTCLUSTER_BIN`` names a prebuilt bin dir and skips the build.
    """
    prebuilt = _prebuilt("MOORAGE_TESTCLUSTER_BIN", COMPONENTS)
    if prebuilt is not None:
        return prebuilt
    directory = cluster_dir if cluster_dir is not None else find_cluster_dir()
    return _run_build(
        directory / "build.sh",
        COMPONENTS,
        "the test control plane (a cold build takes 5-15 min on 2 cores, later runs are cached)",
        progress_every,
        first_note,
    )


def build_node(
    cluster_dir: Path | None = None, *, progress_every: float = 60.0, first_note: float = 5.0
) -> Path:
    """Run ``build-node.sh`` (containerd, CoreDNS, the node's image programs) and return their bin dir.

    ``MOORAGE_NODE_BIN`` names a prebuilt bin dir and skips the build.
    """
    prebuilt = _prebuilt("MOORAGE_NODE_BIN", NODE_PROGRAMS)
    if prebuilt is not None:
        return prebuilt
    directory = cluster_dir if cluster_dir is not None else find_cluster_dir()
    return _run_build(
        directory / "build-node.sh",
        NODE_PROGRAMS,
        "the real node's containerd and CoreDNS (a cold build takes about 5 min on 2 cores)",
        progress_every,
        first_note,
    )


def build_autoscaling(
    cluster_dir: Path | None = None, *, progress_every: float = 60.0, first_note: float = 5.0
) -> Path:
    """Run ``build-autoscaling.sh`` (KEDA's operator and metrics API server, Prometheus) and return their
    bin dir.

    ``MOORAGE_AUTOSCALING_BIN`` names a prebuilt bin dir and skips the build.
    """
    prebuilt = _prebuilt("MOORAGE_AUTOSCALING_BIN", AUTOSCALING_PROGRAMS)
    if prebuilt is not None:
        return prebuilt
    directory = cluster_dir if cluster_dir is not None else find_cluster_dir()
    return _run_build(
        directory / "build-autoscaling.sh",
        AUTOSCALING_PROGRAMS,
        "KEDA and Prometheus (a cold build takes about 15 min on 2 cores, later runs are cached)",
        progress_every,
        first_note,
    )


def gateway_api_crds(cluster_dir: Path | None = None) -> Path:
    """Run ``gateway-api.sh`` and return the directory of the Gateway API CRDs (standard channel), fetched
    from the ``sigs.k8s.io/gateway-api`` Go module and cached.

    ``MOORAGE_GATEWAY_API_CRDS`` names such a directory and skips the fetch.
    """
    named = os.environ.get("MOORAGE_GATEWAY_API_CRDS")
    if named:
        return Path(named).resolve()
    directory = cluster_dir if cluster_dir is not None else find_cluster_dir()
    return _run_build(
        directory / "gateway-api.sh",
        ("gateway.networking.k8s.io_httproutes.yaml",),
        "the Gateway API CRDs",
        60.0,
        5.0,
    )


def _run_build(
    script: Path, names: tuple[str, ...], what: str, progress_every: float, first_note: float
) -> Path:
    """Run a build script, reporting progress on stderr, and return the bin dir it printed last."""
    directory = script.parent
    started = time.monotonic()
    proc = subprocess.Popen(
        ["bash", str(script)],
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    done = threading.Event()

    def report() -> None:
        wait = first_note
        while not done.wait(wait):
            wait = progress_every
            minutes = (time.monotonic() - started) / 60
            print(
                f"moorage.devcluster: building {what} ({minutes:.0f} min so far)",
                file=sys.stderr,
                flush=True,
            )

    reporter = threading.Thread(target=report, name="devcluster-build-progress", daemon=True)
    reporter.start()
    try:
        stdout, stderr = proc.communicate()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        done.set()
        reporter.join()
    if proc.returncode != 0:
        raise BuildError(f"{script} failed with exit code {proc.returncode}:\n{stderr[-20000:]}")
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise BuildError(f"{script} printed no bin dir")
    bin_dir = Path(lines[-1].strip())
    if not _bin_dir_complete(bin_dir, names):
        raise BuildError(f"{script.name} returned {bin_dir}, which lacks one of {', '.join(names)}")
    return bin_dir
