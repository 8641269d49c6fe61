"""A source and a revision → the commit, its files and what the weights need (ResolvedSource)."""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from huggingface_hub import HfApi, get_session, hf_raise_for_status
from huggingface_hub.hf_api import DatasetInfo, ModelInfo

from moorage.api.resolved import HubFile, RepoType, ResolvedSource
from moorage.hub import metadata
from moorage.hub.errors import NoMatchingFilesError, PickleWeightsNotTrustedError, RemoteCodeNotTrustedError
from moorage.hub.remote import DEFAULT_BACKOFF, Backoff, Target, call
from moorage.hub.select import has_weights, pickle_only, select
from moorage.hub.uri import endpoint_or_default, file_url, parse_uri

TIMEOUT = 10.0
"""Seconds per request: resolution runs in the operator's reconcile loop."""
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class Commit:
    """One commit of one repository on one hub, and the token to read it with."""

    endpoint: str
    repo_id: str
    repo_type: RepoType
    sha: str
    token: str | None

    def url(self, path: str) -> str:
        return file_url(self.endpoint, self.repo_id, self.repo_type, self.sha, path)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def resolve(
    uri: str,
    revision: str,
    include: Sequence[str] | None,
    token: str | None,
    *,
    endpoint: str | None = None,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> ResolvedSource:
    """Pins uri at revision (branch, tag or sha) and lists the files to pull.

    Only the given token is used (never one saved on the machine or in HF_TOKEN), so what the operator
    resolves is what the user's Secret grants. Raises HubError subclasses.
    """
    repo_id, repo_type = parse_uri(uri)
    api = HfApi(endpoint=endpoint_or_default(endpoint), token=token or False)
    target = Target(uri, revision, has_token=bool(token))
    info = call(
        lambda: api.repo_info(
            repo_id, repo_type=repo_type, revision=revision, files_metadata=True, timeout=TIMEOUT
        ),
        target,
        backoff,
    )
    assert isinstance(info, ModelInfo | DatasetInfo)
    commit = Commit(api.endpoint, repo_id, repo_type, str(info.sha), token)
    files = [HubFile(s.rfilename, s.size or 0, s.lfs.sha256 if s.lfs else None) for s in info.siblings or ()]
    selection = select(files, include, repo_type)
    if not selection.files:
        wanted = f"the include patterns {list(include)}" if include else "safetensors or .bin weights"
        raise NoMatchingFilesError(f"{uri} at {revision!r} has no files matching {wanted}")
    if repo_type == "model" and not include and not has_weights(selection.files):
        raise NoMatchingFilesError(
            f"{uri} at {revision!r} has no safetensors or .bin weights; "
            "for other formats list the files in spec.source.include"
        )

    config: Mapping[str, Any] = {}
    if any(f.path == "config.json" for f in files):
        config = call(lambda: _fetch_json(commit, "config.json"), target, backoff)
    elif info.gated:
        # The info API answers for gated repositories without a token; a file download is what is refused.
        call(lambda: _check_access(commit, selection.files[0].path), target, backoff)

    parameters, dtype = _parameters_and_dtype(info, config, selection.files)
    return ResolvedSource(
        uri=uri,
        repo_id=repo_id,
        repo_type=repo_type,
        revision=revision,
        sha=commit.sha,
        files=selection.files,
        parameters=parameters,
        dtype=dtype,
        needs_remote_code=metadata.needs_remote_code(config),
        notes=selection.notes,
    )


def check_trust(resolved: ResolvedSource, trust_remote_code: bool) -> None:
    """Raises when serving the source would run code from the repository and the user has not allowed it."""
    if trust_remote_code:
        return
    if resolved.needs_remote_code:
        raise RemoteCodeNotTrustedError(
            f"{resolved.uri} ships its own model code (auto_map in config.json), which vLLM runs only with "
            "spec.source.trustRemoteCode: true; set it if you trust the repository"
        )
    if pickle_only(resolved.files):
        raise PickleWeightsNotTrustedError(
            f"{resolved.uri} has no safetensors weights, only pickled .bin/.pt files, and loading a pickle "
            "can run code; set spec.source.trustRemoteCode: true if you trust the repository, or pick a "
            "revision with safetensors"
        )


def _fetch_json(commit: Commit, path: str) -> Mapping[str, Any]:
    response = get_session().get(commit.url(path), headers=commit.headers, timeout=TIMEOUT)
    hf_raise_for_status(response)
    try:
        value = json.loads(response.content)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _check_access(commit: Commit, path: str) -> None:
    response = get_session().head(
        commit.url(path), headers=commit.headers, timeout=TIMEOUT, follow_redirects=False
    )
    hf_raise_for_status(response)


def _parameters_and_dtype(
    info: ModelInfo | DatasetInfo, config: Mapping[str, Any], files: Sequence[HubFile]
) -> tuple[int | None, str | None]:
    """The hub's safetensors summary when there is one (exact), else config.json."""
    summary = getattr(info, "safetensors", None)
    if summary is not None and summary.total:
        return int(summary.total), metadata.dominant_dtype(summary.parameters)
    dtype = metadata.config_dtype(config)
    parameters = metadata.estimate_parameters(config)
    if parameters is None and dtype in metadata.DTYPE_BYTES:
        # Last resort: the weight files' size over the width of one parameter.
        weight_bytes = sum(f.size for f in files if f.path.endswith(WEIGHT_SUFFIXES))
        parameters = weight_bytes // metadata.DTYPE_BYTES[dtype] or None
    return parameters, dtype
