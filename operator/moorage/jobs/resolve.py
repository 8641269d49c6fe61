"""`moorage resolve SOURCE --revision REV [--include GLOB ...] [--dataset URI --dataset-revision REV]`:
the program of the resolve Job.

A model with spec.source.tokenSecretRef is resolved here, in a pod that gets the token from the Secret
(HF_TOKEN), so the operator itself never reads a Secret. It pins the source (and the fine-tune dataset on
the hub) to a commit, applies the same checks the operator applies to public sources (remote code, pickled
weights) and reports what the operator plans with through the termination message: the commit, the number
and size of the files, the parameter count and dtype (moorage.api.resolved.ResolvedSource.summary).
"""

import argparse
import sys
from collections.abc import Sequence

from moorage.api.layout import ADAPTER_FILES
from moorage.api.programs import Report
from moorage.jobs.report import run, since


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="moorage resolve", description="Pin a hub source (and a dataset) to a commit and report it."
    )
    parser.add_argument("source", help="hf://<org>/<name>")
    parser.add_argument("--revision", default="main", help="branch, tag or commit sha (default: main)")
    parser.add_argument("--include", action="append", metavar="GLOB", help="files to select (repeatable)")
    parser.add_argument("--trust-remote-code", action="store_true", help="spec.source.trustRemoteCode")
    parser.add_argument("--dataset", default=None, help="hf://datasets/<org>/<name> of a fine-tune")
    parser.add_argument("--dataset-revision", default="main")
    parser.add_argument(
        "--adapter", action="append", default=[], metavar="NAME=URI@REV", help="an entry of spec.adapters"
    )
    parser.add_argument("--endpoint", default=None, help="hub URL (default: $HF_ENDPOINT or huggingface.co)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run("resolve", lambda token, started: resolve_sources(args, token, started), "ResolveFailed")


def resolve_sources(args: argparse.Namespace, token: str | None, started: float) -> Report:
    from moorage.hub import check_trust, resolve  # noqa: PLC0415 - huggingface_hub costs half a second
    from moorage.hub.uri import endpoint_or_default  # noqa: PLC0415

    endpoint = endpoint_or_default(args.endpoint)
    source = resolve(args.source, args.revision, args.include, token, endpoint=endpoint)
    check_trust(source, args.trust_remote_code)
    details: dict[str, object] = {"source": source.summary()}
    message = f"{args.source}@{args.revision} is {source.sha}"
    if args.dataset:
        dataset = resolve(args.dataset, args.dataset_revision, None, token, endpoint=endpoint)
        details["dataset"] = dataset.summary()
        message += f"; {args.dataset}@{args.dataset_revision} is {dataset.sha}"
    found: dict[str, object] = {}
    for entry in args.adapter:
        name, _, pinned = entry.partition("=")
        uri, _, revision = pinned.rpartition("@")
        found[name] = resolve(uri, revision, ADAPTER_FILES, token, endpoint=endpoint).summary()
    if found:
        details["adapters"] = found
    details["seconds"] = since(started)
    return Report(True, "Resolved", message, details)


if __name__ == "__main__":
    sys.exit(main())
