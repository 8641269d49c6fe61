"""What the hub said about a source: the exact commit, its files and what the weights need.

Produced by `moorage.hub`, consumed by `moorage.plan` and the status logic. Plain frozen dataclasses:
they never travel through the Kubernetes API as they are.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

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
    counts: "Counts | None" = None
    """Set when the file list is not known here, only its size (files is then empty): a resolve Job said
    what it found, or the model's status stood in for the hub."""
    hub_down: bool = False
    """The hub could not be asked and the model's status stood in for it."""

    @property
    def total_bytes(self) -> int:
        return self.counts.bytes if self.counts else sum(f.size for f in self.files)

    @property
    def file_count(self) -> int:
        return self.counts.files if self.counts else len(self.files)

    def summary(self) -> dict[str, object]:
        """What a resolve Job reports of it: everything the operator plans with, but not the file list
        (a termination message holds 4 KiB; a model can have hundreds of files)."""
        summary: dict[str, object] = {
            "sha": self.sha,
            "files": self.file_count,
            "bytes": self.total_bytes,
            "parameters": self.parameters,
            "dtype": self.dtype,
            "notes": list(self.notes),
        }
        return {k: v for k, v in summary.items() if v is not None}

    @staticmethod
    def from_summary(
        uri: str, repo_id: str, repo_type: RepoType, revision: str, summary: Mapping[str, Any]
    ) -> "ResolvedSource":
        """The inverse of summary(); raises ValueError (or KeyError, TypeError) on a malformed one."""
        parameters, dtype = summary.get("parameters"), summary.get("dtype")
        return ResolvedSource(
            uri=uri,
            repo_id=repo_id,
            repo_type=repo_type,
            revision=revision,
            sha=str(summary["sha"]),
            files=(),
            parameters=None if parameters is None else int(parameters),
            dtype=None if dtype is None else str(dtype),
            notes=tuple(str(n) for n in summary.get("notes") or ()),
            counts=Counts(int(summary["files"]), int(summary["bytes"])),
        )


@dataclass(frozen=True)
class Counts:
    """How many files a resolution selected and their total size, without the list itself."""

    files: int
    bytes: int


@dataclass(frozen=True)
class ResolvedAdapter:
    """One entry of spec.adapters, pinned where it can be."""

    name: str
    uri: str
    source: ResolvedSource | None = None
    """An hf:// adapter pinned to a commit; None for a pvc:// one, whose address is the content of its files,
    known once the adapters Job has read them."""

    def pin(self) -> str:
        """NAME=URI@SHA for a hub adapter, NAME=URI for one on a claim: an argument of `moorage adapters`."""
        return f"{self.name}={self.uri}@{self.source.sha}" if self.source else f"{self.name}={self.uri}"
