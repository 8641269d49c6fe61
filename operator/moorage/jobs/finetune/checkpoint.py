"""Checkpoints in OUTPUT/checkpoints/step-NNNNNNNN: everything a restarted pod needs to go on.

adapter.safetensors (the LoRA weights), trainer.pt (optimizer and scheduler), rng-<rank>.pt (each
process's random state, for dropout) and progress.json (step, loss curve, time and tokens so far).
A checkpoint is written under a temporary name and renamed whole, so a pod killed mid-save leaves the
previous checkpoint as the latest.
"""

import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from moorage.jobs.finetune.distributed import World, barrier
from moorage.jobs.finetune.progress import Progress

PREFIX = "step-"
KEEP = 1
"""Older checkpoints are deleted: only the latest is ever resumed from."""

log = logging.getLogger(__name__)


def save(
    directory: Path, progress: Progress, *, model: Any, optimizer: Any, scheduler: Any, world: World
) -> Path:
    final = directory / f"{PREFIX}{progress.step:08d}"
    staging = directory / f".{final.name}.partial"
    if world.is_main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    barrier(world)
    torch.save(_rng_state(), staging / f"rng-{world.rank}.pt")
    barrier(world)
    if world.is_main:
        state = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(model).items()}
        save_file(state, staging / "adapter.safetensors")
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, staging / "trainer.pt"
        )
        (staging / "progress.json").write_text(json.dumps(asdict(progress)))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        _prune(directory, keep=final)
        log.info("checkpoint saved at step %d", progress.step)
    barrier(world)
    return final


def latest(directory: Path) -> Path | None:
    """The newest whole checkpoint, if any."""
    whole = [p for p in directory.glob(f"{PREFIX}*") if (p / "progress.json").is_file()]
    return max(whole, key=lambda p: p.name, default=None)


def restore(
    path: Path, *, model: Any, optimizer: Any, scheduler: Any, world: World, device: torch.device
) -> Progress:
    set_peft_model_state_dict(model, load_file(path / "adapter.safetensors", device=str(device)))
    trainer = torch.load(path / "trainer.pt", map_location=device)
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    rng = path / f"rng-{world.rank}.pt"
    if rng.is_file():  # absent when the run restarts with more processes than it had
        _set_rng_state(torch.load(rng))
    progress = Progress(**json.loads((path / "progress.json").read_text()))
    log.info("resuming from the checkpoint at step %d", progress.step)
    return progress


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _prune(directory: Path, keep: Path) -> None:
    older = sorted((p for p in directory.glob(f"{PREFIX}*") if p != keep), key=lambda p: p.name)
    for path in older[: max(0, len(older) - (KEEP - 1))]:
        shutil.rmtree(path, ignore_errors=True)
