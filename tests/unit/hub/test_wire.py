"""The pull's HTTP: redirects followed by hand without leaking the token, keep-alive, partial reads."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from moorage.hub import wire


class Recorder(BaseHTTPRequestHandler):
    """Redirects /go?to=URL there; answers anything else with 1000 bytes. Records what it got."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str | None]]
    ports: list[int]
    """The client's port of each request: which connection it came on."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        self.ports.append(self.client_address[1])
        if self.path.startswith("/go?to="):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/go?to="))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"x" * 1000)


PORTS: list[int] = []


def serve() -> tuple[ThreadingHTTPServer, list[tuple[str, str | None]]]:
    seen: list[tuple[str, str | None]] = []
    handler = type("Handler", (Recorder,), {"seen": seen, "ports": PORTS})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return server, seen


@pytest.fixture
def servers() -> Iterator[tuple[str, list[tuple[str, str | None]], str, list[tuple[str, str | None]]]]:
    hub, hub_seen = serve()
    cdn, cdn_seen = serve()
    yield (
        f"http://127.0.0.1:{hub.server_address[1]}",
        hub_seen,
        f"http://127.0.0.1:{cdn.server_address[1]}",
        cdn_seen,
    )
    for server in (hub, cdn):
        server.shutdown()
        server.server_close()


def read_all(response: wire.Response) -> bytes:
    body, buffer = b"", memoryview(bytearray(300))
    while n := response.readinto(buffer):
        body += bytes(buffer[:n])
    return body


def test_the_token_goes_to_the_hub_and_not_to_another_origin(servers: tuple[str, list, str, list]) -> None:
    hub, hub_seen, cdn, cdn_seen = servers
    auth = {"Authorization": "Bearer secret"}
    with wire.Session(connect_seconds=5, read_seconds=5) as session:
        with session.get(f"{hub}/go?to={cdn}/file", auth) as response:
            assert (response.status, response.url) == (200, f"{cdn}/file")
            assert read_all(response) == b"x" * 1000
        with session.get(f"{hub}/go?to=/same-origin", auth) as response:
            assert response.url == f"{hub}/same-origin" and read_all(response) == b"x" * 1000
    assert hub_seen == [
        (f"/go?to={cdn}/file", "Bearer secret"),
        ("/go?to=/same-origin", "Bearer secret"),
        ("/same-origin", "Bearer secret"),
    ]
    assert cdn_seen == [("/file", None)]


def test_a_connection_serves_the_next_request_only_when_its_body_was_read(
    servers: tuple[str, list, str, list],
) -> None:
    hub, _, _, _ = servers
    PORTS.clear()
    with wire.Session(connect_seconds=5, read_seconds=5) as session:
        for path in ("/a", "/b"):
            with session.get(f"{hub}{path}", {}) as response:
                assert read_all(response) == b"x" * 1000
        with session.get(f"{hub}/c", {}) as response:
            response.readinto(memoryview(bytearray(10)))  # most of the body left unread
        with session.get(f"{hub}/d", {}) as response:
            assert read_all(response) == b"x" * 1000
    a, b, c, d = PORTS
    assert a == b == c != d
