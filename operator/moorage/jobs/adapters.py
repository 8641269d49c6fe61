"""`moorage adapters --dest DIR --served-dir DIR --base-path PATH --base-repo ORG/NAME --max-rank N
NAME=hf://org/name@SHA ...`: the program of a model's adapters Job.

Each adapter is pulled like weights (`moorage pull`: verified, resumable, content-addressed, so models that
list one adapter share it), checked against the base (a LoRA, of a rank vLLM was started for, trained on
this base), then the served directory is made to hold exactly the listed adapters, one directory per served
name. vLLM's filesystem resolver loads `<served dir>/<name>` on the first request for `name`, and only when
its adapter_config.json names the path vLLM serves the base from: each served directory has that config,
rewritten, beside hard links to the pulled weights.
"""

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from moorage.api.layout import ADAPTER_FILES
from moorage.api.programs import Report
from moorage.hub.errors import AdapterIncompatibleError
from moorage.jobs import pull
from moorage.jobs.report import hub_token, run, say, since

CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class Wanted:
    name: str
    uri: str
    sha: str

    @staticmethod
    def parse(text: str) -> "Wanted":
        name, _, rest = text.partition("=")
        uri, _, sha = rest.rpartition("@")
        if not (name and uri and sha):
            raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=hf://org/name@SHA")
        return Wanted(name, uri, sha)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="moorage adapters", description="Pull and lay out LoRA adapters.")
    parser.add_argument("--dest", required=True, type=Path, help="root of the weights volume")
    parser.add_argument("--served-dir", required=True, type=Path, help="vLLM's resolver directory")
    parser.add_argument("--base-path", required=True, help="where vLLM serves the base from")
    parser.add_argument("--base-repo", required=True, help="the base's repository on the hub (org/name)")
    parser.add_argument("--max-rank", type=int, required=True, help="vLLM's --max-lora-rank")
    parser.add_argument("--endpoint", default=None)
    parser.add_argument("adapters", nargs="*", type=Wanted.parse, metavar="NAME=URI@SHA")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run("adapters", lambda _token, started: lay_out(args, started), "AdaptersFailed")


def lay_out(args: argparse.Namespace, started: float) -> Report:
    snapshots = {wanted.name: _pull(wanted, args) for wanted in args.adapters}
    ranks = {name: _check(name, snapshot, args) for name, snapshot in snapshots.items()}
    args.served_dir.mkdir(parents=True, exist_ok=True)
    for name, snapshot in snapshots.items():
        _serve(args.served_dir, name, snapshot, args.base_path)
    for gone in sorted(p for p in args.served_dir.iterdir() if p.name not in snapshots):
        say(f"adapters: {gone.name} is no longer listed: removed")
        shutil.rmtree(gone, ignore_errors=True)
    details: dict[str, object] = {"ranks": ranks, "seconds": since(started)}
    names = ", ".join(snapshots) or "none"
    return Report(True, "AdaptersReady", f"served adapters: {names}", details)


def _pull(wanted: Wanted, args: argparse.Namespace) -> Path:
    """The adapter's verified snapshot directory, pulled unless already whole."""
    argv = [wanted.uri, "--revision", wanted.sha, "--dest", str(args.dest)]
    argv += [f"--include={pattern}" for pattern in ADAPTER_FILES]
    if args.endpoint:
        argv.append(f"--endpoint={args.endpoint}")
    report = pull.pull(pull.parse_args(argv), hub_token(), time.monotonic())
    say(f"adapters: {wanted.name}: {report.message}")
    return Path(str(report.details["path"]))


def _check(name: str, snapshot: Path, args: argparse.Namespace) -> int:
    """The adapter's rank, once it is known to fit: a LoRA of this base, within --max-lora-rank."""
    try:
        config = json.loads((snapshot / CONFIG).read_text())
    except (OSError, ValueError) as error:
        raise AdapterIncompatibleError(f"spec.adapters {name!r}: no readable {CONFIG} ({error})") from error
    if not (snapshot / "adapter_model.safetensors").is_file():
        raise AdapterIncompatibleError(f"spec.adapters {name!r}: no adapter_model.safetensors")
    if config.get("peft_type") != "LORA":
        raise AdapterIncompatibleError(
            f"spec.adapters {name!r}: peft_type {config.get('peft_type')!r}, not LORA"
        )
    rank = int(config.get("r") or 0)
    if rank > args.max_rank:
        raise AdapterIncompatibleError(
            f"spec.adapters {name!r}: rank {rank} is above spec.serving.vllm.maxLoraRank ({args.max_rank})"
        )
    base = str(config.get("base_model_name_or_path") or "")
    # A hub id that is not the base's is another model's adapter; a local path says nothing either way.
    if base.count("/") == 1 and not base.startswith((".", "/")) and base.lower() != args.base_repo.lower():
        raise AdapterIncompatibleError(
            f"spec.adapters {name!r}: trained on {base}, not on the base {args.base_repo}"
        )
    return rank


def _serve(served_dir: Path, name: str, snapshot: Path, base_path: str) -> None:
    """served_dir/name: the config naming the base as vLLM serves it, and the weights (hard links)."""
    staging = served_dir / f".{name}.new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    config = json.loads((snapshot / CONFIG).read_text())
    config["base_model_name_or_path"] = base_path
    (staging / CONFIG).write_text(json.dumps(config, indent=2))
    for source in snapshot.iterdir():
        if source.name != CONFIG and source.is_file() and not source.name.startswith("."):
            try:
                os.link(source, staging / source.name)
            except OSError:
                shutil.copy2(source, staging / source.name)
    target = served_dir / name
    retired = served_dir / f".{name}.old"
    shutil.rmtree(retired, ignore_errors=True)
    if target.exists():
        target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
