"""`moorage finetune`: arguments, the termination report and the exit code around a run."""

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from moorage.api.layout import WEIGHTS_MOUNT
from moorage.api.programs import ExitCode, Report
from moorage.jobs.finetune import outputs
from moorage.jobs.finetune.errors import (
    TRAINED,
    TRAINING_FAILED,
    TRAINING_STACK_MISSING,
    USAGE_INVALID,
    FineTuneError,
)
from moorage.jobs.finetune.launch import record_exit_code, relaunch_on_all_gpus
from moorage.jobs.finetune.spec import load_spec

OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
"""Everything is read from local files: the hub libraries must never try the network."""

log = logging.getLogger("moorage.finetune")


@dataclass(frozen=True)
class Args:
    base: Path
    spec: Path
    output: Path
    data_root: Path

    def to_argv(self) -> list[str]:
        return [
            "--base",
            str(self.base),
            "--spec",
            str(self.spec),
            "--output",
            str(self.output),
            "--data-root",
            str(self.data_root),
        ]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise FineTuneError(USAGE_INVALID, f"moorage finetune: {message}")


def parse_args(argv: list[str] | None) -> Args:
    parser = _Parser(prog="moorage finetune", description="Train a LoRA adapter on a local base model.")
    parser.add_argument(
        "--base", type=Path, required=True, help="directory of the base model (config, weights, tokenizer)"
    )
    parser.add_argument(
        "--spec", type=Path, required=True, help="YAML or JSON file holding the fineTune block"
    )
    parser.add_argument(
        "--output", type=Path, required=True, help="directory for the adapter, metrics and checkpoints"
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=Path(WEIGHTS_MOUNT),
        help="holds hf:// dataset snapshots (datasets/<org>/<name>/<sha>) and pvc:// claims (pvc/<claim>)",
    )
    ns = parser.parse_args(argv)
    return Args(base=ns.base, spec=ns.spec, output=ns.output, data_root=ns.data_root)


def main(argv: list[str] | None = None) -> int:
    # Under torchrun every process would print the same progress: only the first one does.
    first = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(
        level=logging.INFO if first else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in OFFLINE_ENV:
        os.environ[name] = "1"
    try:
        args = parse_args(argv)
        report = _already_trained(args.output)
        if report is None:
            spec = load_spec(args.spec)
            workers_exit_code = relaunch_on_all_gpus(args.to_argv())
            if workers_exit_code is not None:
                return workers_exit_code  # the workers wrote the report
            # torch and the model libraries load only now: the checks above stay fast and GPU-stack free.
            from moorage.jobs.finetune.run import Paths, run  # noqa: PLC0415

            args.output.mkdir(parents=True, exist_ok=True)
            report = run(spec, Paths(base=args.base, output=args.output, data_root=args.data_root))
        code = ExitCode.OK
    except FineTuneError as exc:
        report, code = Report(ok=False, reason=exc.reason, message=exc.message), exc.exit_code
    except ModuleNotFoundError as exc:
        # The image, not the run, is wrong: no retry will install torch.
        message = f"{exc.name} is not installed: use the fine-tune image or install moorage[finetune]"
        report, code = Report(ok=False, reason=TRAINING_STACK_MISSING, message=message), ExitCode.PERMANENT
    except Exception as exc:
        # Unforeseen (a node problem, a bug): the Job retries and the run resumes from its checkpoint.
        log.exception("fine-tuning failed")
        report = Report(ok=False, reason=TRAINING_FAILED, message=f"{type(exc).__name__}: {exc}")
        code = ExitCode.RETRYABLE
    (log.info if report.ok else log.error)("%s: %s", report.reason, report.message)
    if first or not report.ok:
        # Workers that succeeded say the same: the first says it. Several writing the one file at once
        # interleaved their reports into one that no longer parsed.
        report.write()
    record_exit_code(code)
    return int(code)


def _already_trained(output: Path) -> Report | None:
    if not outputs.is_complete(output):
        return None
    details = outputs.report_details(output)
    return Report(ok=True, reason=TRAINED, message=f"already trained: {output} is complete", details=details)
