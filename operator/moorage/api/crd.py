"""The CustomResourceDefinition, generated from the pydantic models (never edited by hand)."""

from typing import Any

from moorage.api.model import GROUP, KIND, NAME_RULE, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from moorage.api.spec import ADAPTER_NAMES_RULE, OpenSourceModelSpec, Serving
from moorage.api.status import OpenSourceModelStatus

Schema = dict[str, Any]

# Keys of a JSON schema that a structural OpenAPI schema has no use for. Defaults are left out on
# purpose: the operator applies them, so what GitOps stores is what the user wrote (but see _spec_schema).
_DROPPED = {"title", "default", "$defs"}

PRINTER_COLUMNS = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.source.uri"},
    {"name": "Revision", "type": "string", "jsonPath": ".status.resolvedRevision"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {
        "name": "Replicas",
        "type": "integer",
        "jsonPath": ".status.readyReplicas",
        "description": "Serving replicas that are ready",
    },
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Reason",
        "type": "string",
        "priority": 1,
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
    },
]


def _structural(node: Any) -> Any:
    """Turns a ref-free JSON schema into a structural OpenAPI v3 schema as Kubernetes wants it."""
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: Schema = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "const":
            out["enum"] = [value]
        elif key == "description":
            out[key] = " ".join(value.split())
        elif key == "properties":
            out[key] = {name: _structural(prop) for name, prop in value.items()}
        else:
            out[key] = _structural(value)
    if out.get("x-kubernetes-preserve-unknown-fields") or out.get("additionalProperties") is False:
        # Kubernetes prunes unknown fields itself (and kubectl's strict validation names them);
        # a structural schema may not say additionalProperties: false.
        out.pop("additionalProperties", None)
    if (
        "properties" in out
        or "additionalProperties" in out
        or out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out.setdefault("type", "object")
    if out.get("additionalProperties") is True:
        del out["additionalProperties"]
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def resolve_refs(schema: Schema) -> Schema:
    """pydantic's JSON schema with every $ref inlined and Optional[X] as X; defaults kept."""

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            return walk({**target, **{k: v for k, v in node.items() if k != "$ref"}})
        options = [o for o in node.get("anyOf", []) if o.get("type") != "null"]
        if len(options) == 1:
            return walk({**options[0], **{k: v for k, v in node.items() if k != "anyOf"}})
        return {k: walk(v) for k, v in node.items() if k != "$defs"}

    defs = schema.get("$defs", {})
    resolved: Schema = walk(schema)
    return resolved


def _schema_of(model: type[OpenSourceModelSpec] | type[OpenSourceModelStatus]) -> Schema:
    schema: Schema = _structural(resolve_refs(model.model_json_schema(by_alias=True, mode="validation")))
    return schema


def _spec_schema() -> Schema:
    schema = _schema_of(OpenSourceModelSpec)
    # The one default the API server applies: the scale subresource (kubectl scale, HPA, KEDA) fails on a
    # model whose .spec.serving.replicas is absent, and most manifests leave it out. The stored object
    # gains the field, which neither a server-side apply by the author nor Argo CD's diff count as drift.
    serving = schema["properties"]["serving"]
    serving["default"] = {}
    serving["properties"]["replicas"]["default"] = Serving.model_fields["replicas"].default
    return schema


def _status_schema() -> Schema:
    schema = _schema_of(OpenSourceModelStatus)
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return schema


def crd() -> Schema:
    """The CRD manifest of OpenSourceModel."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["ai", "moorage"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": OpenSourceModelSpec.__doc__,
                            "required": ["spec"],
                            "x-kubernetes-validations": [NAME_RULE, ADAPTER_NAMES_RULE],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": _spec_schema(),
                                "status": _status_schema(),
                            },
                        }
                    },
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.serving.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }
