"""The OpenSourceModel resource as a whole, and how the API is named."""

from typing import Any

from pydantic import Field

from moorage.api.base import ApiModel
from moorage.api.spec import OpenSourceModelSpec
from moorage.api.status import OpenSourceModelStatus

GROUP = "moorage.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "OpenSourceModel"
PLURAL = "opensourcemodels"
SINGULAR = "opensourcemodel"
SHORT_NAMES = ("osm",)
LABEL_PREFIX = "moorage.dev"


class ObjectMeta(ApiModel):
    """The parts of metadata the operator reads. Others pass through untouched."""

    model_config = ApiModel.model_config | {"extra": "allow"}

    name: str
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class OpenSourceModel(ApiModel):
    model_config = ApiModel.model_config | {"extra": "allow"}

    api_version: str = Field(API_VERSION, alias="apiVersion")
    kind: str = KIND
    metadata: ObjectMeta
    spec: OpenSourceModelSpec
    status: OpenSourceModelStatus = OpenSourceModelStatus()

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> "OpenSourceModel":
        return cls.model_validate(obj)
