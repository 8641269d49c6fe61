"""Validation errors as a user reads them: the field's path in the manifest, then what is wrong."""

from pydantic import ValidationError
from pydantic.alias_generators import to_camel

PLAIN_MESSAGES = {
    # pydantic's own words name Python classes ("instance of SecretKeyRef"); a manifest's author reads YAML.
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "list_type": "must be a list",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "float_type": "must be a number",
}


def field_path(loc: tuple[int | str, ...], root: str = "") -> str:
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not part.startswith(("function-", "literal[")):
            path += ("." if path else "") + to_camel(part)
    return path


def describe(error: ValidationError, root: str = "") -> str:
    """One line that names every field at fault, e.g. `spec.serving.gpus: must be at least 1`."""
    parts = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "missing":
            message = "required"
        elif item["type"] in PLAIN_MESSAGES:
            message = PLAIN_MESSAGES[item["type"]]
        loc = item["loc"] + ((item["ctx"]["field"],) if item.get("ctx", {}).get("field") else ())
        path = field_path(loc, root) or "object"
        if item["type"] == "extra_forbidden":  # the key as written (trust_remote_code), not as it should be
            path = f"{field_path(loc[:-1], root)}.{loc[-1]}".lstrip(".")
        parts.append(f"{path}: {message}")
    return "; ".join(parts)
