"""Validation errors as a user reads them: the field's path in the manifest, then what is wrong."""

from pydantic import ValidationError
from pydantic.alias_generators import to_camel


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
        loc = item["loc"] + ((item["ctx"]["field"],) if item.get("ctx", {}).get("field") else ())
        parts.append(f"{field_path(loc, root) or 'object'}: {message}")
    return "; ".join(parts)
