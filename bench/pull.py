"""`moorage pull` against curl, aria2c and huggingface_hub's snapshot_download, on the same bytes from the
same servers: on loopback, then across an emulated WAN.

    bench/setup.sh                                    # once: aria2c, curl, iproute2, pullnet, toxiproxy
    .venv/bin/python bench/pull.py [--runs 2] [--big-mib 1024] [--wan-big-mib 512] [--no-wan | --no-loopback]

The hub API is moorage's fake hub; the files come from pullnet (Go, bench/pullnet) which redirects the hub's
/resolve/ URLs to its CDN listener as huggingface.co does, so a client follows one redirect per file as in
production. The WAN (root, iproute2) is a network namespace for the clients behind a veth pair with a tbf
rate cap, and toxiproxy for the round-trip time and a per-connection cap. Each tool runs as a process, as a
user would run it, into an empty directory on tmpfs (the disk is not what is measured); the time is the
best of the runs, wall clock, process start included (moorage and huggingface_hub start Python). Every tool
must deliver every file at its size; moorage also checks the sha256 of each LFS file, the others nothing.
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pullbench import servers, tools, wan

SINGLE_STREAM = ("curl (1 stream)", "hf snapshot_download")
"""On the WAN these take long: one run each, stopped after --wan-budget seconds, the rest projected."""


def main() -> None:
    args = parse_args()
    needed = [servers.BIN / "pullnet", servers.BIN / "toxiproxy-server", shutil.which("aria2c")]
    if not all(tool and Path(tool).exists() for tool in needed):
        raise SystemExit("missing tools: run bench/setup.sh first")
    print(f"{platform.node()}: {os.cpu_count()} cores, {_cpu()}, Python {platform.python_version()}")
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="moorage-pullbench-", dir=base) as tmp:
        root = Path(tmp)
        if not args.no_loopback:
            loopback(root, args)
        if not args.no_wan:
            emulated_wan(root, args)
    # The other work on the machine shares its cores with the tools: numbers from a busy one are noisy.
    print("\nload average (1, 5, 15 min): {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2, help="timed runs per tool (best is shown)")
    parser.add_argument("--big-mib", type=int, default=1024, help="the big file on loopback")
    parser.add_argument("--wan-big-mib", type=int, default=512, help="the big file on the WAN")
    parser.add_argument(
        "--wan-budget",
        type=float,
        default=8.0,
        help="seconds of a single-stream run on the WAN, then projected",
    )
    parser.add_argument("--rate-mbit", type=int, default=1000, help="WAN link, each way")
    parser.add_argument("--rtt-ms", type=int, default=40)
    parser.add_argument("--per-connection-mbit", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds a run may take")
    parser.add_argument("--no-wan", action="store_true", help="loopback only (no root needed)")
    parser.add_argument("--no-loopback", action="store_true", help="the WAN only")
    parser.add_argument("--tools", nargs="*", default=list(tools.TOOLS), choices=list(tools.TOOLS))
    return parser.parse_args()


def loopback(root: Path, args: argparse.Namespace) -> None:
    files = servers.make_files(args.big_mib)
    with servers.serve(root / "loopback", files, []) as (content, served):
        hub = served.hubs[0]
        print(f"\n(a) loopback: {_describe(content)}; warm-up round, then best of {args.runs}")
        best = compare(content, hub, root / "dest", args, rounds=args.runs + 1, warm_up=True, wrap=list)
        table(best, content)
        if "moorage pull" in args.tools:
            tools.run("moorage pull", hub, content, root / "dest", wrap=list, timeout=args.timeout)
            again = tools.TOOLS["moorage pull"](hub, content, root / "dest")
            started = time.monotonic()
            subprocess.run(again, capture_output=True, check=True, env={**os.environ, "HF_ENDPOINT": hub})
            seconds = time.monotonic() - started
            print(f"moorage pull of a complete snapshot (cache hit, process included): {seconds:.2f} s")


def emulated_wan(root: Path, args: argparse.Namespace) -> None:
    link = wan.Link(args.rate_mbit, args.rtt_ms, args.per_connection_mbit)
    files = servers.make_files(args.wan_big_mib)
    with servers.serve(root / "wan", files, [wan.cdn_url()]) as (content, served):
        # pullnet caches the hub's answers (the fake hub hashes every file for each): fill the cache first,
        # on loopback, with the requests each client makes.
        for tool in ("curl (1 stream)", "moorage pull", "hf snapshot_download"):
            tools.run(tool, served.hubs[0], content, root / "dest", wrap=list, timeout=args.timeout)
        with wan.emulate(link, cdn=served.cdn, hub=served.hubs[1].removeprefix("http://")):
            print(
                f"\n(b) emulated WAN: {link.rate_mbit} Mbit/s each way (tbf), {link.rtt_ms} ms RTT and "
                f"{link.per_connection_mbit} Mbit/s per connection (toxiproxy); {_describe(content)}; "
                f"best of {args.runs}; single streams: {args.wan_budget:g}s of 1 run, projected (~)"
            )
            best = compare(
                content, wan.hub_url(), root / "dest", args, rounds=args.runs, warm_up=False, wrap=wan.inside
            )
            table(best, content)


def compare(
    content: servers.Content,
    hub: str,
    dest: Path,
    args: argparse.Namespace,
    *,
    rounds: int,
    warm_up: bool,
    wrap: Callable[[list[str]], list[str]],
) -> dict[str, tools.Run]:
    """The best run of each tool, the tools taking turns so that noise from the rest of the machine is
    spread over all of them. curl goes first: its plain GETs fill pullnet's cache of the hub's answers."""
    order = sorted(args.tools, key=lambda t: t != "curl (1 stream)")
    best: dict[str, tools.Run] = {}
    for number in range(rounds):
        for tool in order:
            budget = args.wan_budget if wrap is wan.inside and tool in SINGLE_STREAM else None
            if budget is not None and number > 0:
                continue
            result = tools.run(tool, hub, content, dest, wrap=wrap, timeout=args.timeout, budget=budget)
            if warm_up and number == 0:
                continue
            previous = best.get(tool)
            if previous is None or (result.seconds or 1e9) < (previous.seconds or 1e9):
                best[tool] = result
    shutil.rmtree(dest, ignore_errors=True)
    return best


def table(best: dict[str, tools.Run], content: servers.Content) -> None:
    aria2 = best.get("aria2c -x16", tools.Run(None)).seconds
    curl = best.get("curl (1 stream)", tools.Run(None)).seconds
    print(f"{'tool':<22} {'seconds':>8} {'MB/s':>8} {'vs aria2c':>10} {'vs curl':>8} {'CPU s':>6}")
    for tool, result in best.items():
        if result.seconds is None:
            print(f"{tool:<22} {'failed':>8}  {result.note}")
            continue
        rate = content.total / result.seconds / 1e6
        mark = "~" if result.projected else " "
        print(
            f"{tool:<22} {mark}{result.seconds:7.2f} {rate:8.0f} {_ratio(aria2, result.seconds):>10} "
            f"{_ratio(curl, result.seconds):>8} {result.cpu:6.2f}  {result.note}"
        )


def _ratio(reference: float | None, seconds: float) -> str:
    """Throughput relative to the reference: above 1 is faster."""
    return f"{reference / seconds:.2f}x" if reference else "-"


def _describe(content: servers.Content) -> str:
    biggest = max(content.sizes.values()) / 2**20
    return f"{len(content.sizes)} files, {content.total / 1e6:.0f} MB (biggest {biggest:.0f} MiB)"


def _cpu() -> str:
    try:
        return next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        )
    except (OSError, StopIteration):
        return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
