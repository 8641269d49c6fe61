"""The local hub's server: repositories, faults, the request log and the HTTP endpoints.

:mod:`moorage.devcluster.fakehub` is the public face (with the demo repositories); see there.
"""

import hashlib
import json
import re
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

from moorage.devcluster import tinymodel

RepoKind = Literal["model", "dataset"]

LFS_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".model",
    ".gguf",
    ".parquet",
    ".arrow",
    ".h5",
    ".onnx",
    ".msgpack",
    ".tiktoken",
)
"""What the hub's default .gitattributes sends to LFS; bigger files go there too (LFS_MIN_SIZE)."""
LFS_MIN_SIZE = 10 * 1024 * 1024
CHUNK = 1024 * 1024


def git_blob_id(data: bytes) -> str:
    """The git object id of a blob, which the hub sends as ETag of files kept in git."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def commit_sha(files: Mapping[str, bytes]) -> str:
    """A stable 40-hex commit id for a set of files (not git's, but shaped like it)."""
    digest = hashlib.sha1(usedforsecurity=False)
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    return digest.hexdigest()


def is_lfs(path: str, data: bytes) -> bool:
    return path.endswith(LFS_SUFFIXES) or len(data) >= LFS_MIN_SIZE


@dataclass
class Repo:
    repo_id: str
    repo_type: RepoKind
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    """Branches and tags → commit sha."""
    gated: bool = False
    token: str | None = None
    """With gated: the token that has been granted access. Without: the repo is private to this token."""

    def commit(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


@dataclass
class Fault:
    """Misbehaviour for the requests that match `path` (a glob over file paths; "*" is every file)."""

    kind: Literal["stall", "cut", "corrupt", "status"]
    path: str = "*"
    after_bytes: int = 0
    """stall/cut: how much of the body is sent first."""
    times: int | None = 1
    """How many requests it hits; None is every one."""
    seconds: float = 30.0
    """stall: how long the connection then stays silent before it is closed."""
    status: int = 503
    api: bool = False
    """status: hit the info API as well as file downloads."""


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    status: int
    range: str | None
    sent: int
    """Body bytes actually written to the socket."""
    authorized: bool


class FakeHub:
    """A hub on 127.0.0.1 (or ``host``: e.g. ``Cluster.host_address`` for pods) at a free port.

    Use it as a context manager.

    >>> with FakeHub() as hub:
    ...     sha = hub.add_repo("org/model", {"config.json": b"{}"})
    ...     # HF_ENDPOINT=hub.url
    """

    def __init__(self, *, redirect_lfs: bool = True, host: str = "127.0.0.1") -> None:
        self.host = host
        """The address it listens on; pods on the real node reach ``Cluster.host_address``."""
        self.redirect_lfs = redirect_lfs
        """Like the real hub, answer LFS downloads with a redirect to a content-addressed /cdn URL."""
        self.repos: dict[tuple[RepoKind, str], Repo] = {}
        self.faults: list[Fault] = []
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle

    def start(self) -> "FakeHub":
        server = ThreadingHTTPServer((self.host, 0), _handler_class(self))
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        # A short poll interval: shutdown() waits up to one, and tests start and stop many hubs.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fakehub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeHub is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # Content

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        *,
        repo_type: RepoKind = "model",
        revisions: Mapping[str, str] | None = None,
        gated: bool = False,
        token: str | None = None,
    ) -> str:
        """Adds a commit holding `files` and points `revisions` (branch or tag → sha) at it.

        Without revisions, the commit gets a content-derived sha and `main` points at it. Calling again for
        the same repo adds another commit, so branches and tags can point at different content. Returns
        the commit sha.
        """
        sha = next(iter(revisions.values())) if revisions else commit_sha(files)
        with self._lock:
            repo = self.repos.setdefault((repo_type, repo_id), Repo(repo_id, repo_type))
            repo.gated, repo.token = gated, token
            repo.commits[sha] = dict(files)
            repo.refs.update(revisions or {"main": sha})
            for ref, target in repo.refs.items():
                if target not in repo.commits:
                    raise ValueError(f"{ref} points at {target}, which is not a commit of {repo_id}")
        return sha

    # Faults and the request log

    def inject(self, fault: Fault) -> Fault:
        """Adds a fault; a request gets at most one, the first injected that matches and has hits left."""
        with self._lock:
            self.faults.append(fault)
        return fault

    def stall(
        self, path: str = "*", *, after_bytes: int = 0, seconds: float = 30.0, times: int | None = 1
    ) -> Fault:
        return self.inject(Fault("stall", path, after_bytes=after_bytes, seconds=seconds, times=times))

    def cut(self, path: str = "*", *, after_bytes: int = 0, times: int | None = 1) -> Fault:
        return self.inject(Fault("cut", path, after_bytes=after_bytes, times=times))

    def corrupt(self, path: str = "*", *, times: int | None = None) -> Fault:
        return self.inject(Fault("corrupt", path, times=times))

    def fail(self, status: int = 503, *, path: str = "*", times: int | None = 1, api: bool = True) -> Fault:
        return self.inject(Fault("status", path, status=status, times=times, api=api))

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def bytes_sent(self, path: str | None = None) -> int:
        """Body bytes of file downloads (resolve and CDN), for one file path or all."""
        with self._lock:
            return sum(
                r.sent
                for r in self.requests
                if _is_download(r.path) and (path is None or _file_of(r.path) == path)
            )

    def downloads(self) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and _is_download(r.path)]

    # Used by the handler

    def _take_fault(self, file_path: str | None, *, api: bool) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times == 0:
                    continue
                if api and not (fault.kind == "status" and fault.api):
                    continue
                if not api and (file_path is None or not fnmatch(file_path, fault.path)):
                    continue
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None

    def _log(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)


def _is_download(path: str) -> bool:
    return "/resolve/" in path or path.startswith("/cdn/")


def _file_of(path: str) -> str:
    tail = path.split("/resolve/", 1)[1].split("/", 1)[1] if "/resolve/" in path else path.split("/-/", 1)[1]
    return unquote(urlsplit(tail).path)


API_PATH = re.compile(
    r"^/api/(?P<kind>models|datasets)/(?P<repo>[^/]+(?:/[^/]+)?)"
    r"(?:/revision/(?P<rev>[^/]+))?/?$"
)
REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"
RESOLVE_PATH = re.compile(rf"^(?P<datasets>/datasets)?/{REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
CDN_PATH = re.compile(rf"^/cdn/(?P<kind>model|dataset)/(?P<sha>[0-9a-f]+)/{REPO}/-/(?P<file>.+)$")


class HubError(Exception):
    """An answer of the hub other than success, with the headers huggingface_hub looks at."""

    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _handler_class(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.hub = hub
    return Handler


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests read hub.requests instead."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    # Routing

    def _dispatch(self, method: str) -> None:
        self._method, self._sent, self._status = method, 0, 0
        url = urlsplit(self.path)
        try:
            if api := API_PATH.match(url.path):
                self._api(api, parse_qs(url.query))
            elif cdn := CDN_PATH.match(url.path):
                # Like a presigned CDN URL: no token needed, the hub checked it before redirecting.
                kind: RepoKind = "model" if cdn["kind"] == "model" else "dataset"
                repo = self.hub.repos[(kind, unquote(cdn["repo"]))]
                self._file(repo.commits[cdn["sha"]], unquote(cdn["file"]), cdn["sha"])
            elif resolve := RESOLVE_PATH.match(url.path):
                self._resolve(resolve)
            else:
                raise HubError(404, None, "Not Found")
        except HubError as e:
            self._error(e)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a bug here must show as a 500 in the test, not a dropped connection
            self._error(HubError(500, None, f"fake hub: {type(e).__name__}: {e}"))
        finally:
            self.hub._log(
                RequestRecord(
                    method,
                    self.path,
                    self._status,
                    self.headers.get("Range"),
                    self._sent,
                    "Authorization" in self.headers,
                )
            )

    def _repo(self, kind: RepoKind, repo_id: str) -> Repo:
        repo = self.hub.repos.get((kind, repo_id))
        if repo is None or (repo.token and not repo.gated and self._token() != repo.token):
            # The real hub says 401 to anonymous callers and 404 otherwise, both with RepoNotFound.
            raise HubError(401 if self._token() is None else 404, "RepoNotFound", "Repository not found")
        return repo

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None

    def _revision(self, repo: Repo, revision: str) -> str:
        sha = repo.commit(revision)
        if sha is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return sha

    # Info API

    def _api(self, match: re.Match[str], query: dict[str, list[str]]) -> None:
        fault = self.hub._take_fault(None, api=True)
        if fault is not None:
            raise HubError(fault.status, None, "injected failure")
        kind: RepoKind = "model" if match["kind"] == "models" else "dataset"
        repo = self._repo(kind, unquote(match["repo"]))
        sha = self._revision(repo, unquote(match["rev"] or "main"))
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        self._send_json(200, _info(repo, sha, blobs=blobs))

    # Files

    def _resolve(self, match: re.Match[str]) -> None:
        kind: RepoKind = "dataset" if match["datasets"] else "model"
        repo = self._repo(kind, unquote(match["repo"]))
        sha = self._revision(repo, unquote(match["rev"]))
        if repo.gated and self._token() != repo.token:
            status = 401 if self._token() is None else 403
            message = f"Access to model {repo.repo_id} is restricted and you are not in the authorized list."
            raise HubError(status, "GatedRepo", message)
        path = unquote(match["file"])
        files = repo.commits[sha]
        if path not in files:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {match['rev']}")
        data = files[path]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_id(data)}"'}
        if is_lfs(path, data):
            digest = hashlib.sha256(data).hexdigest()
            headers |= {
                "X-Linked-Size": str(len(data)),
                "X-Linked-Etag": f'"{digest}"',
                "ETag": f'"{digest}"',
            }
            if self.hub.redirect_lfs:
                location = f"/cdn/{kind}/{sha}/{quote(repo.repo_id)}/-/{quote(path)}"
                self._send(302, b"", headers | {"Location": location})
                return
        self._file(files, path, sha, headers)

    def _file(
        self, files: Mapping[str, bytes], path: str, sha: str, headers: Mapping[str, str] | None = None
    ) -> None:
        data = files[path]
        etag = hashlib.sha256(data).hexdigest() if is_lfs(path, data) else git_blob_id(data)
        headers = dict(headers or {"X-Repo-Commit": sha, "ETag": f'"{etag}"'})
        fault = self.hub._take_fault(path, api=False) if self._method == "GET" else None
        if fault is not None and fault.kind == "status":
            raise HubError(fault.status, None, "injected failure")
        if fault is not None and fault.kind == "corrupt":
            data = bytes([data[0] ^ 0xFF]) + data[1:] if data else data
        start, end = 0, len(data)
        status = 200
        if byte_range := self.headers.get("Range"):
            parsed = _parse_range(byte_range, len(data))
            if parsed is None:
                self._send(416, b"", headers | {"Content-Range": f"bytes */{len(data)}"})
                return
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        headers |= {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        self._send_head(status, end - start, headers)
        if self._method == "HEAD":
            return
        body = memoryview(data)[start:end]
        if fault is not None and fault.kind in ("stall", "cut"):
            self._write(body[: fault.after_bytes])
            if fault.kind == "stall":
                self.hub._stop.wait(fault.seconds)
            self.close_connection = True
            return
        self._write(body)

    # Output

    def _write(self, body: memoryview) -> None:
        for offset in range(0, len(body), CHUNK):
            chunk = body[offset : offset + CHUNK]
            self.wfile.write(chunk)
            self._sent += len(chunk)
        self.wfile.flush()

    def _send_head(self, status: int, length: int, headers: Mapping[str, str]) -> None:
        self._status = status
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self._send_head(status, len(body), headers)
        if self._method == "GET":
            self._write(memoryview(body))

    def _send_json(self, status: int, value: object) -> None:
        self._send(status, json.dumps(value).encode(), {"Content-Type": "application/json"})

    def _error(self, error: HubError) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": error.message}
        if error.code:
            headers["X-Error-Code"] = error.code
        self._send(error.status, json.dumps({"error": error.message}).encode(), headers)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """bytes=a-b or bytes=a- → [start, end); None when it cannot be satisfied."""
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", header.strip())
    if match is None:
        return None
    start = int(match[1])
    end = min(int(match[2]) + 1, size) if match[2] else size
    return (start, end) if start < size and start < end else None


def _info(repo: Repo, sha: str, *, blobs: bool) -> dict[str, object]:
    files = repo.commits[sha]
    info: dict[str, object] = {
        "_id": commit_sha({repo.repo_id: b""})[:24],
        "id": repo.repo_id,
        "sha": sha,
        "private": bool(repo.token) and not repo.gated,
        "gated": "manual" if repo.gated else False,
        "disabled": False,
        "lastModified": "2024-01-01T00:00:00.000Z",
        "tags": [],
        "siblings": [_sibling(path, data, blobs=blobs) for path, data in sorted(files.items())],
    }
    if repo.repo_type == "model":
        info["modelId"] = repo.repo_id
        if (params := _safetensors_parameters(files)) is not None:
            info["safetensors"] = {"parameters": params, "total": sum(params.values())}
        if (config := _config_summary(files)) is not None:
            info["config"] = config
    return info


def _sibling(path: str, data: bytes, *, blobs: bool) -> dict[str, object]:
    if not blobs:
        return {"rfilename": path}
    sibling: dict[str, object] = {"rfilename": path, "size": len(data), "blobId": git_blob_id(data)}
    if is_lfs(path, data):
        sibling["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
    return sibling


def _safetensors_parameters(files: Mapping[str, bytes]) -> dict[str, int] | None:
    """Parameters per dtype over every .safetensors file, as the hub computes from their headers."""
    totals: dict[str, int] = {}
    found = False
    for path, data in files.items():
        if not path.endswith(".safetensors"):
            continue
        try:
            header = tinymodel.read_safetensors_header(data)
        except (ValueError, struct.error):
            continue  # not a real safetensors file: the hub leaves it out of its summary
        found = True
        for name, tensor in header.items():
            if name == "__metadata__" or not isinstance(tensor, dict):
                continue
            count = 1
            for dim in tensor["shape"]:
                count *= int(dim)
            totals[str(tensor["dtype"])] = totals.get(str(tensor["dtype"]), 0) + count
    return totals if found else None


def _config_summary(files: Mapping[str, bytes]) -> dict[str, object] | None:
    """The subset of config.json the hub repeats in model info."""
    if "config.json" not in files:
        return None
    try:
        config = json.loads(files["config.json"])
    except ValueError:
        return None
    return {key: config[key] for key in ("architectures", "model_type", "auto_map") if key in config}
