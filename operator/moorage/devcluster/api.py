"""A minimal JSON client for the Kubernetes API (stdlib only), for the launcher itself."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, cast

JSON = dict[str, Any]


class ApiError(RuntimeError):
    """A non-2xx answer from the apiserver."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class ApiClient:
    """Talks to ``server`` with a client certificate; enough for readiness checks and the provisioner."""

    def __init__(self, server: str, ca_file: Path, cert_file: Path, key_file: Path) -> None:
        self.server = server.rstrip("/")
        context = ssl.create_default_context(cafile=str(ca_file))
        context.load_cert_chain(str(cert_file), str(key_file))
        self._context = context

    def request(
        self,
        method: str,
        path: str,
        body: JSON | None = None,
        *,
        content_type: str = "application/json",
        timeout: float = 10.0,
    ) -> JSON:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)  # noqa: S310
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, context=self._context, timeout=timeout) as resp:  # noqa: S310
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise ApiError(method, path, exc.code, exc.read().decode(errors="replace")) from exc
        if not raw:
            return {}
        decoded = json.loads(raw)
        return cast(JSON, decoded) if isinstance(decoded, dict) else {"value": decoded}

    def text(self, path: str, *, timeout: float = 5.0) -> str:
        """GET a plain-text endpoint such as ``/readyz``."""
        req = urllib.request.Request(self.server + path)  # noqa: S310
        try:
            with urllib.request.urlopen(req, context=self._context, timeout=timeout) as resp:  # noqa: S310
                return cast(bytes, resp.read()).decode()
        except urllib.error.HTTPError as exc:
            raise ApiError("GET", path, exc.code, exc.read().decode(errors="replace")) from exc

    def get(self, path: str) -> JSON:
        return self.request("GET", path)

    def create(self, path: str, body: JSON) -> JSON:
        return self.request("POST", path, body)

    def delete(self, path: str) -> JSON:
        return self.request("DELETE", path)

    def merge_patch(self, path: str, body: JSON) -> JSON:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")
