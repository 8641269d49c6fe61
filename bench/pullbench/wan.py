"""An emulated WAN on this machine: a network namespace for the clients, a veth pair into it with a tbf rate
cap each way (this kernel has no netem), and toxiproxy in front of the servers for the round-trip time and a
bandwidth cap per connection (as a CDN or a long, lossy path gives one TCP stream).

Everything is made by the benchmark and removed when it ends, also after a crash of an earlier run."""

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pullbench.servers import BIN

NAMESPACE = "moorage-pullbench"
OUTSIDE, INSIDE = "mpb0", "mpb1"
SERVER_IP, CLIENT_IP = "10.213.0.1", "10.213.0.2"
CDN_PORT, HUB_PORT = 18001, 18002


@dataclass(frozen=True)
class Link:
    rate_mbit: int = 1000
    """The whole link, each way."""
    rtt_ms: int = 40
    per_connection_mbit: int = 200


def cdn_url() -> str:
    return f"http://{SERVER_IP}:{CDN_PORT}"


def hub_url() -> str:
    return f"http://{SERVER_IP}:{HUB_PORT}"


def inside(argv: list[str]) -> list[str]:
    """argv run in the clients' namespace."""
    return ["ip", "netns", "exec", NAMESPACE, *argv]


@contextmanager
def emulate(link: Link, *, cdn: str, hub: str) -> Iterator[None]:
    """The WAN between the namespace and the servers at cdn and hub (host:port on loopback)."""
    remove()
    try:
        _namespace(link)
        with _toxiproxy() as api:
            half = link.rtt_ms // 2
            for name, port, upstream in (("cdn", CDN_PORT, cdn), ("hub", HUB_PORT, hub)):
                _post(api, "/proxies", {"name": name, "listen": f"{SERVER_IP}:{port}", "upstream": upstream})
                for stream in ("upstream", "downstream"):
                    toxic = {"latency": half, "jitter": 0}
                    _post(api, f"/proxies/{name}/toxics", _toxic(f"{stream}-rtt", "latency", stream, toxic))
            per_connection = {"rate": link.per_connection_mbit * 1000 // 8}  # KB/s
            _post(api, "/proxies/cdn/toxics", _toxic("cap", "bandwidth", "downstream", per_connection))
            yield
    finally:
        remove()


def remove() -> None:
    subprocess.run(["ip", "netns", "del", NAMESPACE], capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", OUTSIDE], capture_output=True, check=False)


def _namespace(link: Link) -> None:
    # A burst of a few ms at the rate: TSO sends 64 KiB at once, and a tiny bucket would cap far lower.
    tbf = ["tbf", "rate", f"{link.rate_mbit}mbit", "burst", f"{max(link.rate_mbit * 1000 // 8 * 4, 256_000)}"]
    tbf += ["latency", "100ms"]
    for command in (
        ["ip", "netns", "add", NAMESPACE],
        ["ip", "link", "add", OUTSIDE, "type", "veth", "peer", "name", INSIDE, "netns", NAMESPACE],
        ["ip", "addr", "add", f"{SERVER_IP}/30", "dev", OUTSIDE],
        ["ip", "link", "set", OUTSIDE, "up"],
        inside(["ip", "addr", "add", f"{CLIENT_IP}/30", "dev", INSIDE]),
        inside(["ip", "link", "set", INSIDE, "up"]),
        inside(["ip", "link", "set", "lo", "up"]),
        ["tc", "qdisc", "add", "dev", OUTSIDE, "root", *tbf],
        inside(["tc", "qdisc", "add", "dev", INSIDE, "root", *tbf]),
    ):
        subprocess.run(command, check=True, capture_output=True)


@contextmanager
def _toxiproxy() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(BIN / "toxiproxy-server"), "-host", "127.0.0.1", "-port", str(port)]
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as server:
        try:
            api = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 10
            while True:
                try:
                    urllib.request.urlopen(f"{api}/version", timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            yield api
        finally:
            server.kill()


def _toxic(name: str, kind: str, stream: str, attributes: dict[str, int]) -> dict[str, object]:
    return {"name": name, "type": kind, "stream": stream, "toxicity": 1.0, "attributes": attributes}


def _post(api: str, path: str, body: dict[str, object]) -> None:
    request = urllib.request.Request(
        api + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=5).close()
