"""What the hub said about a source: the exact commit, its files and what the weights need.

Produced by `moorage.hub`, consumed by `moorage.plan` and the status logic. Plain frozen dataclasses:
they never travel through the Kubernetes API as they are.
"""

from dataclasses import dataclass
from typing import Literal

RepoType = Literal["model", "dataset"]


@dataclass(frozen=True)
class HubFile:
    """One file of a snapshot."""

    path: str
    size: int
    sha256: str | None = None
    """The LFS sha256 where the hub has one (weights); None for small files kept in git."""


@dataclass(frozen=True)
class ResolvedSource:
    """A source pinned to a commit, with the files that will be pulled."""

    uri: str
    """As the user wrote it, e.g. hf://Qwen/Qwen2.5-7B-Instruct."""
    repo_id: str
    """org/name on the hub."""
    repo_type: RepoType
    revision: str
    """The branch, tag or sha the user asked for."""
    sha: str
    """The commit that revision pointed at when resolved: what is served."""
    files: tuple[HubFile, ...]
    """The files the include patterns select, sorted by path."""
    parameters: int | None = None
    """Parameter count, from safetensors metadata or config.json; None when unknown."""
    dtype: str | None = None
    """Dtype of the stored weights (e.g. BF16, F16, F32), when known."""
    needs_remote_code: bool = False
    """The model's config asks for custom code (auto_map), which vLLM runs only with trust_remote_code."""
    notes: tuple[str, ...] = ()
    """Things the user should know about the selection, e.g. that pickled .bin weights were taken."""
    pinned: "Pinned | None" = None
    """Set when the hub could not be asked and the model's status stood in for it (files is then empty)."""

    @property
    def total_bytes(self) -> int:
        return self.pinned.bytes if self.pinned else sum(f.size for f in self.files)

    @property
    def file_count(self) -> int:
        return self.pinned.files if self.pinned else len(self.files)


@dataclass(frozen=True)
class Pinned:
    """What a model's status remembers of a resolution: enough to keep serving it while the hub is down."""

    files: int
    bytes: int
