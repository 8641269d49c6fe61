"""What to print when a test against the dev cluster fails."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from moorage.devcluster.cluster import Cluster


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def dump_diagnostics(cluster: Cluster, out: TextIO | None = None, *, log_lines: int = 30) -> str:
    """Events, pods and nodes of every namespace plus component log tails, as one string.

    Also written to ``out`` when given. Never raises for kubectl trouble.
    """
    sections: list[str] = []
    for title, args in (
        ("kubectl get events -A", ("get", "events", "-A", "--sort-by=.lastTimestamp")),
        ("kubectl get pods -A -o wide", ("get", "pods", "-A", "-o", "wide")),
        ("kubectl get nodes -o wide", ("get", "nodes", "-o", "wide")),
        ("kubectl get pvc,pv -A", ("get", "pvc,pv", "-A")),
    ):
        try:
            result = cluster.kubectl(*args, timeout=30)
            body = result.stdout + (result.stderr if result.returncode else "")
        except (OSError, subprocess.SubprocessError) as exc:
            body = f"(failed: {exc!r})"
        sections.append(f"===== {title}\n{body.rstrip()}")
    if log_lines > 0:
        for name, path in cluster.logs().items():
            try:
                text = _tail(path.read_text(errors="replace"), log_lines)
            except OSError as exc:
                text = f"(unreadable: {exc!r})"
            sections.append(f"===== {name} log (last {log_lines} lines, {path})\n{text}")
    report = "\n".join(sections) + "\n"
    if out is not None:
        out.write(report)
        out.flush()
    return report
