"""The activator against real HTTP on localhost: a vLLM-like upstream (aiohttp) that listens only once the
model is "woken", the activator in front of it, and a client. The cluster (scale and EndpointSlices) is
played by the test: waking starts the upstream after a delay, as a replica becomes ready."""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, web
from prometheus_client import CollectorRegistry, generate_latest

from moorage.activator.gate import Metrics, ModelKey
from moorage.activator.proxy import Activator, health_app
from moorage.api.activation import HELD_METRIC, Hold

MODEL = ModelKey("ml", "m")
HOST = "m.ml.svc.cluster.local:8000"


def upstream_app(seen: list[str]) -> web.Application:
    """What a vLLM replica answers: a chat completion, and a stream of server-sent events."""

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append(request.path_qs)
        if body.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for word in ("one", "two", "three"):
                await response.write(
                    f"data: {json.dumps({'word': word, 't': time.monotonic()})}\n\n".encode()
                )
                await asyncio.sleep(0.4)
            await response.write(b"data: [DONE]\n\n")
            return response
        return web.json_response({"model": body["model"], "choices": [{"message": {"content": "hi"}}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


@dataclass
class PlayedCluster:
    """Kubernetes as the activator sees it: the model at `replicas`, ready once its upstream listens."""

    hold: Hold | None = field(default_factory=Hold)
    start_delay: float = 0.5
    never_ready: bool = False
    replicas: int = 0
    wakes: int = 0
    seen: list[str] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    async def hold_settings(self, model: ModelKey) -> Hold | None:
        return self.hold if model == MODEL else None

    async def wake(self, model: ModelKey) -> bool:
        if self.replicas > 0:
            return False
        self.replicas, self.wakes = 1, self.wakes + 1
        if not self.never_ready:
            asyncio.get_running_loop().call_later(
                self.start_delay, lambda: asyncio.ensure_future(self.start())
            )
        return True

    async def start(self) -> None:
        """The replica is up and ready: its upstream listens, and its address is in its EndpointSlice."""
        self._runner = web.AppRunner(upstream_app(self.seen))
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.endpoints = [f"127.0.0.1:{port}"]

    async def ready_endpoints(self, model: ModelKey) -> list[str]:
        return list(self.endpoints)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Running:
    cluster: PlayedCluster
    activator: Activator
    url: str
    health: str
    registry: CollectorRegistry
    client: ClientSession

    async def chat(
        self, host: str = HOST, path: str = "/v1/chat/completions", **extra: Any
    ) -> tuple[int, Any, float]:
        started = time.monotonic()
        body = {"model": "m", "messages": [{"role": "user", "content": "hello"}], **extra}
        async with self.client.post(self.url + path, json=body, headers={"Host": host}) as response:
            text = await response.text()
            payload = json.loads(text) if response.content_type == "application/json" else text
            if response.status == 503:
                payload = {"body": payload, "retry_after": response.headers.get("Retry-After")}
            return response.status, payload, time.monotonic() - started

    def held(self) -> float:
        for line in generate_latest(self.registry).decode().splitlines():
            if line.startswith(f'{HELD_METRIC}{{model="m",model_namespace="ml"}}'):
                return float(line.split()[-1])
        return 0.0


@asynccontextmanager
async def running(cluster: PlayedCluster) -> AsyncIterator[Running]:
    registry = CollectorRegistry()

    async def find(address: str) -> ModelKey | None:
        return MODEL if address == "10.96.0.20" else None

    activator = Activator(cluster, Metrics(registry), find)
    runners = [
        web.AppRunner(activator.app()),
        web.AppRunner(health_app(lambda: generate_latest(registry), activator.held)),
    ]
    urls = []
    for runner in runners:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        urls.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
    try:
        async with ClientSession() as client:
            yield Running(cluster, activator, urls[0], urls[1], registry, client)
    finally:
        for runner in runners:
            await runner.cleanup()
        await cluster.stop()


def scenario(test: Callable[[Running], Awaitable[None]], cluster: PlayedCluster | None = None) -> None:
    async def run() -> None:
        async with running(cluster or PlayedCluster()) as r:
            await test(r)

    asyncio.run(run())


def test_a_request_at_zero_is_held_wakes_the_model_and_is_answered() -> None:
    async def test(r: Running) -> None:
        pending = asyncio.ensure_future(r.chat())
        await asyncio.sleep(0.2)
        assert r.cluster.replicas == 1, "the model was scaled from zero at once"
        assert r.held() == 1
        async with r.client.get(f"{r.health}/held/ml/m") as held:
            assert await held.json() == {"held": 1}, "what KEDA's metrics-api trigger reads"
        status, body, elapsed = await pending
        assert status == 200 and body["choices"][0]["message"]["content"] == "hi"
        assert elapsed >= r.cluster.start_delay, "answered only once the replica was up"
        assert r.held() == 0 and r.cluster.wakes == 1
        # Ready now: the next request goes straight through, without a second wake.
        status, _, elapsed = await r.chat()
        assert status == 200 and elapsed < 0.5 and r.cluster.wakes == 1

    scenario(test)


def test_many_held_requests_share_one_wake() -> None:
    async def test(r: Running) -> None:
        answers = await asyncio.gather(*(r.chat() for _ in range(20)))
        assert [status for status, _, _ in answers] == [200] * 20
        assert r.cluster.wakes == 1 and len(r.cluster.seen) == 20

    scenario(test)


def test_a_stream_is_forwarded_as_it_is_written() -> None:
    async def test(r: Running) -> None:
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
        arrivals: list[tuple[float, str]] = []
        async with r.client.post(
            f"{r.url}/v1/chat/completions", json=body, headers={"Host": HOST}
        ) as response:
            assert response.status == 200 and response.content_type == "text/event-stream"
            async for line in response.content:
                if line.startswith(b"data: {"):
                    arrivals.append((time.monotonic(), json.loads(line[6:])["word"]))
        assert [word for _, word in arrivals] == ["one", "two", "three"]
        # Each event reached the client about when the replica wrote it, not all at the end.
        assert arrivals[1][0] - arrivals[0][0] > 0.3 and arrivals[2][0] - arrivals[1][0] > 0.3

    scenario(test)


def test_a_request_past_the_hold_timeout_gets_a_clear_503() -> None:
    async def test(r: Running) -> None:
        status, body, elapsed = await r.chat()
        assert status == 503 and 1 <= elapsed < 3
        error = body["body"]["error"]
        assert error["type"] == "model_not_ready" and error["code"] == 503
        assert "ml/m" in error["message"] and "holdTimeoutSeconds" in error["message"]
        assert body["retry_after"] == "30"
        assert r.held() == 0

    scenario(test, PlayedCluster(hold=Hold(timeout_seconds=1, max_queued=10), never_ready=True))


def test_past_the_queue_bound_a_request_gets_503_at_once() -> None:
    async def test(r: Running) -> None:
        first = [asyncio.ensure_future(r.chat()) for _ in range(2)]
        await asyncio.sleep(0.3)
        status, body, elapsed = await r.chat()
        assert status == 503 and elapsed < 1, "not held: answered at once"
        assert (
            body["body"]["error"]["type"] == "queue_full"
            and "maxQueued 2" in body["body"]["error"]["message"]
        )
        assert body["retry_after"] == "5"
        assert r.held() == 2
        # Those held get their answer once the replica is ready.
        r.cluster.never_ready = False
        await r.cluster.start()
        assert [status for status, _, _ in await asyncio.gather(*first)] == [200, 200]

    scenario(test, PlayedCluster(hold=Hold(timeout_seconds=10, max_queued=2), never_ready=True))


def test_the_model_is_named_by_host_service_ip_or_path() -> None:
    async def test(r: Running) -> None:
        assert (await r.chat(host="m.ml"))[0] == 200
        assert (await r.chat(host="10.96.0.20:8000"))[0] == 200, "the Service's cluster IP"
        status, _, _ = await r.chat(host="localhost:8080", path="/models/ml/m/v1/chat/completions?x=1")
        assert status == 200 and r.cluster.seen[-1] == "/v1/chat/completions?x=1"
        status, body, _ = await r.chat(host="localhost:8080")
        assert status == 404 and "/models/<namespace>/<name>/" in body["error"]["message"]
        status, body, _ = await r.chat(host="other.ml.svc")
        assert status == 404 and "ml/other is not a model that scales to zero" in body["error"]["message"]

    scenario(test)


def test_a_replica_gone_is_looked_up_again() -> None:
    async def test(r: Running) -> None:
        assert (await r.chat())[0] == 200
        # The replica went away and another came (a new address): the stale one is refused, then forgotten.
        await r.cluster.stop()
        await r.cluster.start()
        r.activator.gates[MODEL]._endpoints.insert(0, "127.0.0.1:9")
        assert (await r.chat())[0] == 200

    scenario(test)
