"""The CRD is generated from the pydantic models and checked in; these tests keep both honest."""

from pathlib import Path
from typing import Any

import yaml

from moorage.api.crd import crd
from moorage.api.reference import reference
from moorage.cli import dump

CRD_FILE = Path(__file__).parents[2] / "crds" / "opensourcemodels.moorage.dev.yaml"


def _version() -> dict[str, Any]:
    versions: list[dict[str, Any]] = crd()["spec"]["versions"]
    return versions[0]


def _walk(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found += _walk(value)
    elif isinstance(node, list):
        for value in node:
            found += _walk(value)
    return found


def test_checked_in_crd_is_current() -> None:
    assert CRD_FILE.read_text() == dump([crd()]), "crds/ is stale: run `moorage crd > " + str(CRD_FILE) + "`"


def test_names_and_version() -> None:
    spec = crd()["spec"]
    assert spec["group"] == "moorage.dev"
    assert spec["names"]["shortNames"] == ["osm"]
    assert _version()["name"] == "v1alpha1"


def test_status_and_scale_subresources() -> None:
    subresources = _version()["subresources"]
    assert subresources["status"] == {}
    assert subresources["scale"] == {
        "specReplicasPath": ".spec.serving.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_printer_columns() -> None:
    names = [c["name"] for c in _version()["additionalPrinterColumns"] if not c.get("priority")]
    assert names == ["Model", "Revision", "Ready", "Replicas", "Endpoint", "Age"]


def test_cel_rules_present() -> None:
    rules = [r["rule"] for node in _walk(crd()) for r in node.get("x-kubernetes-validations", [])]
    assert any("maxSurge" in r and "maxUnavailable" in r for r in rules)
    assert any("hf://" in r for r in rules)
    assert any("tensorParallelSize" in r for r in rules)


def test_schema_is_structural() -> None:
    """No defaults (the operator applies them) but the replicas the scale subresource reads, no refs, no
    nulls, every object typed."""
    version = _version()
    schema = version["schema"]["openAPIV3Schema"]
    serving = schema["properties"]["spec"]["properties"]["serving"]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.serving.replicas"
    assert serving["default"] == {} and serving["properties"]["replicas"]["default"] == 1
    defaulted = [node for node in _walk(schema) if "default" in node]
    assert defaulted == [serving, serving["properties"]["replicas"]]
    for node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "$defs" not in node
        assert node.get("additionalProperties") is not False
        if "properties" in node:
            assert node["type"] == "object"


def test_descriptions_come_from_field_docs() -> None:
    source = _version()["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["source"]
    assert "tokenSecretRef" in source["properties"]
    assert "never written to status" in source["properties"]["tokenSecretRef"]["description"]


def test_conditions_are_a_map_list() -> None:
    status = _version()["schema"]["openAPIV3Schema"]["properties"]["status"]
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert yaml.safe_load(CRD_FILE.read_text())["kind"] == "CustomResourceDefinition"


def test_reference_doc_is_current() -> None:
    doc = Path(__file__).parents[2] / "docs" / "reference.md"
    assert doc.read_text() == reference(), (
        "docs/reference.md is stale: run `moorage reference > docs/reference.md`"
    )
