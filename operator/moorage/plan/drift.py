"""Has a child drifted from what the operator wants? A comparison of the fields the operator sets only.

The API server adds defaults (a container's terminationMessagePath, a Service's clusterIP, ...) and other
controllers add fields of their own: those are not drift. What the operator set and someone changed is
(`kubectl scale deploy`, `kubectl set image`, `kubectl edit`): the reconcile that the child's event
triggers applies the manifest again.
"""

from decimal import Decimal
from typing import Any

from moorage.api.quantity import parse_quantity

DRIFT_CHECKED = ("Deployment", "Service", "PodDisruptionBudget", "InferencePool", "HTTPRoute")
"""Kinds whose content the operator restores. Jobs are never changed once created (their template is
immutable) and a volume's claim is left to its owner: both are only replaced or deleted."""


def drift(live: Any, desired: Any, path: str = "") -> list[str]:
    """Paths of the fields in `desired` whose value in `live` differs; empty when `live` has them all."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return [] if not desired and live is None else [path or "."]
        found: list[str] = []
        for key, value in desired.items():
            found += drift(live.get(key), value, f"{path}.{key}")
        return found
    if isinstance(desired, list):
        if not desired and live is None:
            return []
        if not isinstance(live, list) or len(live) != len(desired):
            return [path]
        found = []
        for index, (have, want) in enumerate(zip(live, desired, strict=True)):
            found += drift(have, want, f"{path}[{index}]")
        return found
    return [] if _same(live, desired) else [path]


def _same(live: Any, desired: Any) -> bool:
    if live == desired:
        return True
    # The API server writes quantities canonically ("0.5" becomes "500m"): compare their values.
    return _quantity(live) is not None and _quantity(live) == _quantity(desired)


def _quantity(value: Any) -> Decimal | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Decimal(str(value))
    try:
        return parse_quantity(value) if isinstance(value, str) else None
    except ValueError:
        return None


def drifted(live: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    """What changed in a live child of a checked kind: its spec, labels and annotations."""
    if manifest["kind"] not in DRIFT_CHECKED:
        return []
    metadata = manifest["metadata"]
    wanted = {
        "metadata": {"labels": metadata.get("labels"), "annotations": metadata.get("annotations")},
        "spec": manifest.get("spec"),
    }
    return drift(live, wanted)
