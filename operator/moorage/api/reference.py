"""The spec reference for users, generated from the pydantic models (docs/reference.md is its output)."""

import json
from typing import Any

from moorage.api.crd import resolve_refs
from moorage.api.spec import OpenSourceModelSpec
from moorage.api.status import CONDITION_DOCS

HEADER = """# OpenSourceModel reference

Generated from the API's pydantic models by `moorage reference`; do not edit by hand.
Defaults are applied by the operator, not stored in the object, so what Git holds stays what you wrote.
"""


def _type(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    kind = str(schema.get("type", "object"))
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    values = schema.get("additionalProperties")
    if kind == "object" and isinstance(values, dict):
        return f"map of {_type(values)}"
    bounds = [
        f"{op} {schema[key]}"
        for key, op in (
            ("minimum", "≥"),
            ("exclusiveMinimum", ">"),
            ("maximum", "≤"),
            ("exclusiveMaximum", "<"),
        )
        if key in schema
    ]
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


def _rows(schema: dict[str, Any], path: str, required: set[str]) -> list[str]:
    rows = []
    for name, prop in schema.get("properties", {}).items():
        field = f"{path}.{name}"
        if name in required:
            default = "required"
        elif "default" in prop and prop["default"] is not None and not isinstance(prop["default"], dict):
            default = f"`{json.dumps(prop['default'])}`"
        else:
            default = ""
        doc = " ".join(prop.get("description", "").split()).replace("|", "\\|")
        rows.append(f"| `{field}` | {_type(prop)} | {default} | {doc} |")
        nested = prop.get("items", prop) if prop.get("type") == "array" else prop
        rows += _rows(nested, field, set(nested.get("required", [])))
    return rows


def reference() -> str:
    schema = resolve_refs(OpenSourceModelSpec.model_json_schema(by_alias=True, mode="validation"))
    lines = [HEADER, "## spec", "", "| Field | Type | Default | Meaning |", "|---|---|---|---|"]
    lines += _rows(schema, "spec", set(schema.get("required", [])))
    lines += ["", "## status.conditions", "", "| Type | True means |", "|---|---|"]
    lines += [f"| `{type_}` | {doc} |" for type_, doc in CONDITION_DOCS.items()]
    return "\n".join(lines) + "\n"
