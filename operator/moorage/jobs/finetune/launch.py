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

EXIT_CODE_ENV = "MOORAGE_FINETUNE_EXIT_CODE_FILE"


def relaunch_on_all_gpus(argv: list[str]) -> int | None:
    """Runs `argv` under torchrun when this is a plain start on a multi-GPU machine and returns its exit
    code; None when this process should train by itself."""
    if "WORLD_SIZE" in os.environ:
        return None
    import torch  # noqa: PLC0415  (the caller stays importable without the finetune extra)

    gpus = torch.cuda.device_count()
    if gpus < 2:
        return None
    with tempfile.TemporaryDirectory(prefix="moorage-launch-") as tmp:
        exit_file = Path(tmp) / "exit-code"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={gpus}",
            "-m",
            "moorage.jobs.finetune",
            *argv,
        ]
        with subprocess.Popen(command, env={**os.environ, EXIT_CODE_ENV: str(exit_file)}) as workers:
            # The kubelet signals only this process; the workers must hear it too.
            signal.signal(signal.SIGTERM, lambda signum, _frame: workers.send_signal(signum))
            returncode = workers.wait()
        if exit_file.is_file():
            return int(exit_file.read_text())
        return returncode


def record_exit_code(code: int) -> None:
    """For a worker under `relaunch_on_all_gpus`: leaves the exit code that torchrun would hide."""
    path = os.environ.get(EXIT_CODE_ENV)
    if path and code != 0:
        Path(path).write_text(str(code))
