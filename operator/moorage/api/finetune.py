"""spec.fineTune: train a LoRA adapter on the user's data, then serve base + adapter."""

import re
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from moorage.api.base import ApiModel
from moorage.api.scheduling import Scheduling

DATASET_URI_PATTERN = (
    r"^(hf://datasets/[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*"
    r"|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/.+)$"
)


IN_CLUSTER = "in-cluster"
"""Validation context key: the spec is a cluster's (a manifest or a stored object), not a local run's."""


class Dataset(ApiModel):
    """The training data."""

    # The pattern binds in the cluster only (the CRD schema, and Python with the IN_CLUSTER context):
    # the fine-tune program also takes local paths.
    uri: Annotated[str, Field(max_length=512, json_schema_extra={"pattern": DATASET_URI_PATTERN})]
    """hf://datasets/<org>/<name> (pulled through the same verified path as weights) or
    pvc://<claim>/<path> (a JSON/JSONL/Parquet file or directory on an existing claim in the namespace).
    The fine-tune program also takes a local path, for runs outside a cluster."""
    revision: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^\S+$")] = "main"
    """Branch, tag or commit of an hf:// dataset."""
    split: Annotated[str, Field(min_length=1, max_length=63)] = "train"
    format: Literal["chat", "instruction", "text"] = "chat"
    """chat: a list of {role, content} messages per row, rendered with the tokenizer's chat template;
    instruction: a prompt and a completion per row (loss on the completion only); text: plain text."""
    messages_field: Annotated[str, Field(min_length=1)] = "messages"
    prompt_field: Annotated[str, Field(min_length=1)] = "prompt"
    completion_field: Annotated[str, Field(min_length=1)] = "completion"
    text_field: Annotated[str, Field(min_length=1)] = "text"

    @field_validator("uri")
    @classmethod
    def _cluster_uri(cls, uri: str, info: ValidationInfo) -> str:
        if (info.context or {}).get(IN_CLUSTER) and not re.match(DATASET_URI_PATTERN, uri):
            raise ValueError("must be hf://datasets/<org>/<name> or pvc://<claim>/<path>")
        return uri

    @property
    def from_hub(self) -> bool:
        """Pulled from the hub like weights (hf://datasets/...), rather than read from a claim or a path."""
        return self.uri.startswith("hf://")

    @property
    def claim(self) -> str | None:
        """The PersistentVolumeClaim of a pvc://<claim>/<path> dataset."""
        return self.uri.removeprefix("pvc://").split("/", 1)[0] if self.uri.startswith("pvc://") else None


class Lora(ApiModel):
    """The LoRA adapter's shape."""

    r: Annotated[int, Field(ge=1, le=512)] = 16
    """Rank of the adapter matrices; vLLM is started with --max-lora-rank at least this."""
    alpha: Annotated[int, Field(ge=1, le=4096)] = 32
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    target_modules: Annotated[list[Annotated[str, Field(min_length=1)]] | None, Field(min_length=1)] = None
    """Module names to adapt, e.g. [q_proj, v_proj]. Default: every linear layer but the output head."""


class Training(ApiModel):
    """Hyper-parameters of the training run."""

    epochs: Annotated[float, Field(gt=0, le=100)] = 1
    max_steps: Annotated[int | None, Field(ge=1)] = None
    """Stop after this many optimizer steps; overrides epochs when set."""
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 2.0e-4
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 4
    """Per device."""
    gradient_accumulation_steps: Annotated[int, Field(ge=1, le=1024)] = 1
    max_seq_length: Annotated[int, Field(ge=16, le=1048576)] = 2048
    overlong: Literal["truncate", "refuse"] = "truncate"
    """What to do with a row longer than maxSeqLength tokens: cut it, or fail naming the row."""
    seed: int = 42
    checkpoint_steps: Annotated[int, Field(ge=1)] = 50
    """Save a checkpoint every this many steps; a restarted pod resumes from the last one."""


class FineTuneResources(ApiModel):
    """What the fine-tune Job's pod gets."""

    gpus: Annotated[int, Field(ge=0, le=64)] = 1
    """0 trains on CPU (slow; for tiny models and tests)."""
    cpu: str | None = None
    memory: str | None = None


class FineTune(ApiModel):
    """Train a LoRA adapter on the cached base weights, then serve base + adapter."""

    dataset: Dataset
    lora: Lora = Lora()
    training: Training = Training()
    resources: FineTuneResources = FineTuneResources()
    scheduling: Scheduling | None = None
    """Placement of the fine-tune pod; defaults to serving's."""
    adapter_name: Annotated[str | None, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)] = (
        None
    )
    """The model name clients ask for to get the adapter. Default: <model name>-ft."""
    image: str | None = None
    """Image of the fine-tune Job. Default: the operator's --finetune-image."""

    def served_name(self, model_name: str) -> str:
        return self.adapter_name or f"{model_name}-ft"
