"""What Argo CD's server-side diff sees, shared by the end-to-end tests (importable: pytest puts this
directory on sys.path for the tests in it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moorage.devcluster import Cluster


def assert_no_gitops_drift(
    cluster: Cluster, namespace: str, manifest: dict[str, Any], tmp_path: Path
) -> None:
    """What Argo CD's server-side diff does: apply the manifest from Git as a dry run; nothing changes."""
    live = cluster.get_json("osm", manifest["metadata"]["name"], "-n", namespace)
    source = tmp_path / "model.json"
    source.write_text(json.dumps(manifest))
    result = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "--field-manager=argocd-controller",
        "-n", namespace, "-f", str(source), "-o", "json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    dry = json.loads(result.stdout)
    assert dry["spec"] == live["spec"]
    assert dry["metadata"].get("labels") == live["metadata"].get("labels")
    assert dry["metadata"].get("annotations") == live["metadata"].get("annotations")
