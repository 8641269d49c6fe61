"""`moorage adapters --dest DIR --served-dir DIR --base-path PATH --base-repo ORG/NAME --max-rank N
NAME=hf://org/name@SHA NAME=pvc://claim/path ...`: the program of a model's adapters Job.

Each hub adapter is pulled like weights (`moorage pull`: verified, resumable, content-addressed, so models
that list one adapter share it). Each adapter on a claim (mounted read-only at --claims-root/<claim>) is
copied onto the weights volume under the sha256 of its files, hashed as they are copied: the same bytes are
one directory whichever model or claim they come from, and changed bytes are a new one. Every adapter is
checked against the base (a LoRA, of a rank vLLM was started for, trained on this base), then the served
directory is made to hold exactly the listed adapters, one directory per served name. vLLM's filesystem
resolver loads `<served dir>/<name>` on the first request for `name`, and only when its adapter_config.json
names the path vLLM serves the base from: each served directory has that config, rewritten, beside hard
links to the stored weights.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from moorage.api.layout import ADAPTER_FILES, ADAPTERS_DIR, CLAIMS_MOUNT, COMPLETE_MARKER, adapter_content_dir
from moorage.api.programs import Report
from moorage.api.spec import claim_path
from moorage.hub.errors import AdapterIncompatibleError, AdapterNotFoundError
from moorage.jobs import pull
from moorage.jobs.report import hub_token, run, say, since

CONFIG = "adapter_config.json"
CHUNK = 1 << 20
MESSAGE_NAMES = 400
"""Characters of names the report's message lists; beyond, it counts them (the report holds 4 KiB)."""


@dataclass(frozen=True)
class Wanted:
    name: str
    uri: str
    sha: str
    """The commit of a hub adapter; empty for one on a claim."""

    @staticmethod
    def parse(text: str) -> "Wanted":
        name, _, rest = text.partition("=")
        if rest.startswith("pvc://"):
            claim, path = claim_path(rest)
            if name and claim and path:
                return Wanted(name, rest, "")
        else:
            uri, _, sha = rest.rpartition("@")
            if name and uri and sha:
                return Wanted(name, uri, sha)
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME=hf://org/name@SHA or NAME=pvc://claim/path"
        )


@dataclass(frozen=True)
class Stored:
    """An adapter whole on the weights volume."""

    path: Path
    digest: str | None = None
    """The sha256 over the files of an adapter copied from a claim."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="moorage adapters", description="Pull and lay out LoRA adapters.")
    parser.add_argument("--dest", required=True, type=Path, help="root of the weights volume")
    parser.add_argument("--served-dir", required=True, type=Path, help="vLLM's resolver directory")
    parser.add_argument("--base-path", required=True, help="where vLLM serves the base from")
    parser.add_argument("--base-repo", required=True, help="the base's repository on the hub (org/name)")
    parser.add_argument("--max-rank", type=int, required=True, help="vLLM's --max-lora-rank")
    parser.add_argument(
        "--claims-root", type=Path, default=Path(CLAIMS_MOUNT), help="where the claims of pvc:// adapters are"
    )
    parser.add_argument("--endpoint", default=None)
    parser.add_argument("adapters", nargs="*", type=Wanted.parse, metavar="NAME=URI[@SHA]")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run("adapters", lambda _token, started: lay_out(args, started), "AdaptersFailed")


def lay_out(args: argparse.Namespace, started: float) -> Report:
    stored = {
        wanted.name: _copy(index, wanted, args) if wanted.uri.startswith("pvc://") else _pull(wanted, args)
        for index, wanted in enumerate(args.adapters)
    }
    for name, adapter in stored.items():
        say(f"adapters: {name}: rank {_check(name, adapter.path, args)}")
    args.served_dir.mkdir(parents=True, exist_ok=True)
    for name, adapter in stored.items():
        _serve(args.served_dir, name, adapter.path, args.base_path)
    for gone in sorted(p for p in args.served_dir.iterdir() if p.name not in stored):
        say(f"adapters: {gone.name} is no longer listed: removed")
        shutil.rmtree(gone, ignore_errors=True)
    details: dict[str, object] = {"seconds": since(started)}
    if any(adapter.digest for adapter in stored.values()):
        # By position, as the arguments list them: 32 digests of adapters with long names would not fit the
        # termination message's 4 KiB by name.
        details["digests"] = [adapter.digest for adapter in stored.values()]
    names = ", ".join(stored) or "none"
    message = f"served adapters: {names}" if len(names) <= MESSAGE_NAMES else f"{len(stored)} adapters served"
    return Report(True, "AdaptersReady", message, details)


def _pull(wanted: Wanted, args: argparse.Namespace) -> Stored:
    """The adapter's verified snapshot directory, pulled unless already whole."""
    argv = [wanted.uri, "--revision", wanted.sha, "--dest", str(args.dest)]
    argv += [f"--include={pattern}" for pattern in ADAPTER_FILES]
    if args.endpoint:
        argv.append(f"--endpoint={args.endpoint}")
    report = pull.pull(pull.parse_args(argv), hub_token(), time.monotonic())
    say(f"adapters: {wanted.name}: {report.message}")
    return Stored(Path(str(report.details["path"])))


def _copy(index: int, wanted: Wanted, args: argparse.Namespace) -> Stored:
    """An adapter on a claim, copied onto the weights volume under the digest of the bytes copied (hashed
    while copying, so the address is that of what was stored even if the claim changes meanwhile)."""
    claim, path = claim_path(wanted.uri)
    source = args.claims_root / claim / path
    missing = [name for name in ADAPTER_FILES if not (source / name).is_file()]
    if missing:
        what = f"no directory {path!r}" if not source.is_dir() else f"no {', '.join(missing)} in {path!r}"
        raise AdapterNotFoundError(
            f"spec.adapters[{index}].uri: {what} on PersistentVolumeClaim {claim!r} (a PEFT LoRA directory "
            f"holds {' and '.join(ADAPTER_FILES)})"
        )
    store = args.dest / ADAPTERS_DIR
    store.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=store))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide it from a pod running as another user
    try:
        digest = hashlib.sha256()
        for name in sorted(ADAPTER_FILES):
            digest.update(f"{name}\0{_copy_hashing(source / name, staging / name)}\n".encode())
        target = Path(adapter_content_dir(PurePosixPath(args.dest), digest.hexdigest()))
        if (target / COMPLETE_MARKER).is_file():
            say(f"adapters: {wanted.name}: {wanted.uri} already stored as {target.name}")
        else:
            (staging / COMPLETE_MARKER).write_text(json.dumps({"uri": wanted.uri}))
            shutil.rmtree(target, ignore_errors=True)  # a copy cut short before its marker
            try:
                staging.rename(target)
            except OSError:
                if not (target / COMPLETE_MARKER).is_file():  # not another model's Job storing the same bytes
                    raise
            say(f"adapters: {wanted.name}: copied {wanted.uri} to {target}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Stored(target, digest.hexdigest())


def _copy_hashing(source: Path, target: Path) -> str:
    """Copies a file and returns the sha256 of the bytes written."""
    file_hash = hashlib.sha256()
    with source.open("rb") as reading, target.open("wb") as writing:
        while block := reading.read(CHUNK):
            file_hash.update(block)
            writing.write(block)
        writing.flush()
        os.fsync(writing.fileno())
    return file_hash.hexdigest()


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
