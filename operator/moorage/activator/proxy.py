"""The activator's HTTP side: which model a request is for, the hold, and the forward to a ready replica
(streamed, so vLLM's server-sent events reach the client as vLLM writes them).

A request reaches the activator through the model's own Service (see plan/activator.py), so it names the
model the way the client named the Service: by its Host, `<name>.<namespace>[.svc...]`, or by the Service's
cluster IP. A client that cannot set either names the model in the path: /models/<namespace>/<name>/v1/...
"""

import ipaddress
import logging
from collections.abc import Awaitable, Callable

from aiohttp import ClientConnectorError, ClientSession, ClientTimeout, web
from multidict import CIMultiDict

from moorage.activator.gate import Cluster, Gate, Metrics, ModelKey, RejectedError

log = logging.getLogger("moorage.activator")

PATH_PREFIX = "models"
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
        "Transfer-Encoding", "Upgrade", "Host", "Content-Length",
    )
)  # fmt: skip
MAX_BODY = 64 * 1024**2
"""A chat completion with a long context is a few MB; a held request's body is kept in memory."""
FindByAddress = Callable[[str], Awaitable[ModelKey | None]]


def error(status: int, kind: str, message: str, retry_after: int | None = None) -> web.Response:
    """An error the way OpenAI's API writes one, so clients show the message."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.json_response(body, status=status, headers=headers)


def model_of(request: web.Request) -> tuple[ModelKey | str | None, str]:
    """(the model, or the Service's IP to look up, or None; the path to forward)."""
    parts = request.rel_url.raw_path.split("/", 4)
    if len(parts) >= 4 and parts[1] == PATH_PREFIX and parts[2] and parts[3]:
        rest = "/" + (parts[4] if len(parts) > 4 else "")
        query = f"?{request.rel_url.raw_query_string}" if request.rel_url.raw_query_string else ""
        return ModelKey(parts[2], parts[3]), rest + query
    host = (request.host or "").rsplit(":", 1)[0].strip("[]") if request.host else ""
    path = request.rel_url.raw_path_qs
    try:
        ipaddress.ip_address(host)
        return host, path
    except ValueError:
        pass
    labels = host.split(".")
    if len(labels) >= 2 and all(labels[:2]):
        return ModelKey(labels[1], labels[0]), path
    return None, path


class Activator:
    def __init__(self, cluster: Cluster, metrics: Metrics, find: FindByAddress) -> None:
        self.cluster, self.metrics, self.find = cluster, metrics, find
        self.gates: dict[ModelKey, Gate] = {}
        self.session: ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    def held(self, key: ModelKey) -> int:
        gate = self.gates.get(key)
        return gate.held if gate is not None else 0

    async def _start(self, _: web.Application) -> None:
        # No total timeout: a completion streams for as long as vLLM generates. Compressed bodies pass
        # as they are, with their Content-Encoding.
        self.session = ClientSession(
            timeout=ClientTimeout(total=None, sock_connect=10), auto_decompress=False
        )

    async def _stop(self, _: web.Application) -> None:
        for gate in self.gates.values():
            await gate.close()
        if self.session is not None:
            await self.session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        named, path = model_of(request)
        key = await self.find(named) if isinstance(named, str) else named
        if key is None:
            return error(
                404,
                "model_not_found",
                f"no model for Host {request.host!r}: ask through the model's Service "
                f"(<name>.<namespace>.svc) or at /{PATH_PREFIX}/<namespace>/<name>/...",
            )
        hold = await self.cluster.hold_settings(key)
        if hold is None:
            return error(404, "model_not_found", f"{key} is not a model that scales to zero")
        gate = self.gates.get(key)
        if gate is None:
            gate = self.gates[key] = Gate(key, self.cluster, self.metrics)
        gate.hold = hold
        body = await request.read()
        for attempt in (1, 2):
            try:
                endpoint = await gate.endpoint()
            except RejectedError as rejected:
                log.warning("%s: 503 %s: %s", key, rejected.kind, rejected.message)
                return error(503, rejected.kind, rejected.message, rejected.retry_after)
            try:
                return await self._forward(request, endpoint, path, body, key)
            except ClientConnectorError as failed:
                # The replica went away between the look and the connect: look again, once.
                gate.forget(endpoint)
                if attempt == 2:
                    self.metrics.requests.labels(key.namespace, key.name, "upstream_error").inc()
                    return error(502, "upstream_unreachable", f"{key}: replica {endpoint}: {failed}")
        raise AssertionError("unreachable")

    async def _forward(
        self, request: web.Request, endpoint: str, path: str, body: bytes, key: ModelKey
    ) -> web.StreamResponse:
        assert self.session is not None
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
        async with self.session.request(
            request.method, f"http://{endpoint}{path}", headers=headers, data=body, allow_redirects=False
        ) as upstream:
            self.metrics.requests.labels(key.namespace, key.name, "forwarded").inc()
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    response.headers.add(name, value)
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response


def health_app(metrics_text: Callable[[], bytes], held: Callable[[ModelKey], int]) -> web.Application:
    """/healthz, /metrics and /held/<namespace>/<name>, on a port of their own (the data port forwards
    every path to the model). /held answers KEDA's metrics-api trigger: {"held": <requests held>}."""

    async def held_for(request: web.Request) -> web.Response:
        key = ModelKey(request.match_info["namespace"], request.match_info["name"])
        return web.json_response({"held": held(key)})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=metrics_text(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/held/{namespace}/{name}", held_for)
    return app
