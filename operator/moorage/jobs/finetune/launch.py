"""Spreads a plain start over every GPU of the pod: one torchrun worker per GPU.

The operator can then always start `moorage finetune ...`, whatever the GPU count. torchrun reports
any worker failure as exit 1, so workers leave their real exit code in a file for this process to return.
"""

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from moorage.api.programs import ExitCode

EXIT_CODE_ENV = "MOORAGE_FINETUNE_EXIT_CODE_FILE"


def relaunch_on_all_gpus(argv: list[str]) -> int | None:
    """Runs `argv` under torchrun when this is a plain start on a multi-GPU machine and returns its exit
    code; None when this process should train by itself."""
    if "WORLD_SIZE" in os.environ:
        return None
    import torch  # noqa: PLC0415  (the caller stays importable without the finetune extra)

    gpus = torch.cuda.device_count()
    return relaunch(argv, gpus) if gpus > 1 else None


def relaunch(argv: list[str], processes: int) -> int:
    """Runs `moorage finetune argv` as `processes` torchrun workers; their exit code."""
    with tempfile.TemporaryDirectory(prefix="moorage-launch-") as tmp:
        exit_file = Path(tmp) / "exit-code"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={processes}",
            "-m",
            "moorage.jobs.finetune",
            *argv,
        ]
        with subprocess.Popen(command, env={**os.environ, EXIT_CODE_ENV: str(exit_file)}) as workers:
            # The kubelet signals only this process; the workers must hear it too.
            previous = signal.signal(signal.SIGTERM, lambda signum, _frame: workers.send_signal(signum))
            try:
                returncode = workers.wait()
            finally:
                signal.signal(signal.SIGTERM, previous)
        if exit_file.is_file():
            return int(exit_file.read_text())
        # A worker that died without a word (killed, crashed): worth another try from the checkpoint.
        return ExitCode.OK if returncode == 0 else ExitCode.RETRYABLE


def record_exit_code(code: int) -> None:
    """For a worker under `relaunch_on_all_gpus`: leaves the exit code that torchrun would hide."""
    path = os.environ.get(EXIT_CODE_ENV)
    if path and code != 0:
        Path(path).write_text(str(code))
