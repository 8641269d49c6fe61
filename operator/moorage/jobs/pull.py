"""`moorage pull SOURCE --revision REV --dest DIR [--include GLOB ...]`: the program of the pull Job.

Fetches one commit of a hub repository into layout.snapshot_dir(DEST, ...), verified, resumable, with the
completion marker written last. Exit codes and the termination-log report follow moorage.api.programs:
the operator reads them back to fill status. The hub token comes from HF_TOKEN and is never printed.
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from moorage.api.layout import snapshot_dir
from moorage.api.programs import Report
from moorage.api.resolved import ResolvedSource
from moorage.hub import snapshot
from moorage.hub.uri import endpoint_or_default, is_full_sha, parse_uri
from moorage.jobs.report import run, say, since

if TYPE_CHECKING:
    from moorage.hub.remote import Backoff
    from moorage.hub.resolution import Commit


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="moorage pull", description="Pull one commit of a hub repository.")
    parser.add_argument("source", help="hf://<org>/<name> or hf://datasets/<org>/<name>")
    parser.add_argument("--revision", default="main", help="branch, tag or commit sha (default: main)")
    parser.add_argument("--dest", required=True, type=Path, help="root of the weights volume")
    parser.add_argument(
        "--include",
        action="append",
        metavar="GLOB",
        help="files to pull (repeatable); default: weights, configs and tokenizer files",
    )
    parser.add_argument("--endpoint", default=None, help="hub URL (default: $HF_ENDPOINT or huggingface.co)")
    parser.add_argument(
        "--connections",
        "--workers",
        type=int,
        default=16,
        help="requests in flight at once: small files one each, a big file in ranges over all that are free",
    )
    parser.add_argument(
        "--min-range-mib",
        type=float,
        default=8.0,
        help="a big file is cut into ranges fetched at once, none smaller than this (default: 8)",
    )
    parser.add_argument("--retries", type=int, default=5, help="tries per range and per hub call")
    parser.add_argument("--backoff", type=float, default=2.0, help="seconds before the first retry, doubling")
    parser.add_argument(
        "--stall-timeout", type=float, default=60.0, help="abort an attempt after this long without a byte"
    )
    parser.add_argument("--progress-seconds", type=float, default=5.0, help="seconds between progress lines")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run("pull", lambda token, started: pull(args, token, started), "PullFailed")


def pull(args: argparse.Namespace, token: str | None, started: float) -> Report:
    repo_id, repo_type = parse_uri(args.source)
    root = PurePosixPath(args.dest.absolute())
    include: list[str] | None = args.include
    if is_full_sha(args.revision):
        # Pinned to a commit: the marker alone answers, without a call to the hub.
        directory = Path(snapshot_dir(root, repo_id, repo_type, args.revision))
        if snapshot.is_complete(directory, args.revision, include):
            return _cached(directory, started)

    from moorage.hub import resolve  # noqa: PLC0415 - huggingface_hub costs half a second; cache hits skip it
    from moorage.hub.remote import Backoff  # noqa: PLC0415
    from moorage.hub.resolution import Commit  # noqa: PLC0415

    backoff = Backoff(attempts=args.retries, base=args.backoff)
    endpoint = endpoint_or_default(args.endpoint)
    resolved = resolve(args.source, args.revision, include, token, endpoint=endpoint, backoff=backoff)
    directory = Path(snapshot_dir(root, repo_id, repo_type, resolved.sha))
    if snapshot.is_complete(directory, resolved.sha, include):
        return _cached(directory, started)
    say(
        f"pull: {args.source}@{args.revision} is {resolved.sha}: {len(resolved.files)} files, "
        f"{resolved.total_bytes} bytes, into {directory}"
    )
    for note in resolved.notes:
        say(f"pull: note: {note}")

    snapshot.remove_marker(directory)
    commit = Commit(endpoint, resolved.repo_id, resolved.repo_type, resolved.sha, token)
    transferred = fetch_all(resolved, directory, commit, args, backoff)
    snapshot.write_marker(directory, resolved, include)
    seconds = since(started)
    return Report(
        True,
        "Pulled",
        f"{len(resolved.files)} files, {resolved.total_bytes} bytes of {args.source} at "
        f"{resolved.sha} in {seconds:.1f}s",
        {
            "files": len(resolved.files),
            "bytes": resolved.total_bytes,
            "sha": resolved.sha,
            "seconds": seconds,
            "transferred": transferred,
            "path": str(directory),
        },
    )


def fetch_all(
    resolved: ResolvedSource, directory: Path, commit: "Commit", args: argparse.Namespace, backoff: "Backoff"
) -> int:
    """Fetches what is missing over a few connections at once; returns the bytes transferred."""
    from moorage.hub import transfer  # noqa: PLC0415 - see pull()
    from moorage.hub.progress import Progress  # noqa: PLC0415
    from moorage.hub.remote import Target  # noqa: PLC0415

    todo = [f for f in resolved.files if not snapshot.is_done(directory, f)]
    have = sum(snapshot.have_bytes(directory, f) for f in resolved.files)
    snapshot.check_disk(directory, resolved.total_bytes - have)
    progress = Progress(
        resolved.total_bytes, have, len(resolved.files), interval=args.progress_seconds, say=say
    )
    progress.files_done = len(resolved.files) - len(todo)
    policy = transfer.Policy(
        backoff=backoff,
        stall_seconds=args.stall_timeout,
        connections=max(1, args.connections),
        min_range=max(1, int(args.min_range_mib * 2**20)),
    )
    target = Target(resolved.uri, resolved.revision, has_token=commit.token is not None)
    files = [(f, snapshot.local_path(directory, f), commit.url(f.path)) for f in todo]
    transfer.Pull(files, commit.headers, target, policy, progress).run()
    say(progress.line())
    return progress.transferred


def _cached(directory: Path, started: float) -> Report:
    marker = snapshot.read_marker(directory) or {}
    files = marker.get("files")
    return Report(
        True,
        "Pulled",
        f"already complete in {directory}",
        {
            "files": len(files) if isinstance(files, list) else 0,
            "bytes": marker.get("total"),
            "sha": marker.get("sha"),
            "seconds": since(started),
            "transferred": 0,
            "cached": True,
            "path": str(directory),
        },
    )


if __name__ == "__main__":
    sys.exit(main())
