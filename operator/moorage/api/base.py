"""The base every API model shares: camelCase on the wire, snake_case in Python, unknown fields refused,
and cross-field rules written once for both the CRD (as CEL) and Python (as a check)."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError


@dataclass(frozen=True)
class Rule:
    """A rule across fields: `cel` goes into the CRD so `kubectl apply` refuses a violation, `check` is
    the same rule in Python so `moorage render` and the operator refuse it too."""

    cel: str
    message: str
    check: Callable[[Any], bool]
    field: str | None = None
    """The field the message is about, relative to the object the rule sits on."""


class ApiModel(BaseModel):
    """A part of the OpenSourceModel API.

    Field docstrings become the CRD's descriptions, so write them for users.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in self.rules:
            if not rule.check(self):
                raise PydanticCustomError(
                    "rule", "{message}", {"message": rule.message, "field": to_camel(rule.field or "")}
                )
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        if cls.rules:
            target = handler.resolve_ref_schema(schema)
            target["x-kubernetes-validations"] = [
                {"rule": r.cel, "message": r.message}
                | ({"fieldPath": f".{to_camel(r.field)}"} if r.field else {})
                for r in cls.rules
            ]
        return schema

    def wire(self) -> dict[str, Any]:
        """The object as Kubernetes stores it: camelCase keys, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
