"""The OpenSourceModel resource as a whole, and how the API is named."""

from typing import Annotated, Any

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


NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX = 63
NAME_RULE = {
    "rule": f"self.metadata.name.matches('{NAME_PATTERN}') && size(self.metadata.name) <= {NAME_MAX}",
    "message": f"metadata.name must be a DNS label of at most {NAME_MAX} characters starting with a letter: "
    "it names the model's Service and labels its pods",
}


class ObjectMeta(ApiModel):
    """The parts of metadata the operator reads. Others pass through untouched."""

    model_config = ApiModel.model_config | {"extra": "allow"}

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=NAME_MAX)]
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

    @property
    def key(self) -> tuple[str, str]:
        """(namespace, name), as log lines print it."""
        return self.metadata.namespace, self.metadata.name

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> "OpenSourceModel":
        return cls.model_validate(obj)
