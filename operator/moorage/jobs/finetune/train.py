"""The training loop: AdamW on the LoRA weights, cosine schedule, checkpoints, resume."""

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from math import ceil
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from transformers import get_cosine_schedule_with_warmup

from moorage.api.finetune import Training
from moorage.jobs.finetune import checkpoint
from moorage.jobs.finetune.distributed import World, mean, total
from moorage.jobs.finetune.encode import IGNORE_INDEX, Example
from moorage.jobs.finetune.order import Order, total_steps
from moorage.jobs.finetune.progress import Progress

WARMUP_FRACTION = 0.03
MAX_GRAD_NORM = 1.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    progress: Progress
    resumed_from: int
    """The step the run started at: 0, or that of the checkpoint it resumed from."""


@dataclass(frozen=True)
class Batch:
    inputs: dict[str, torch.Tensor]
    tokens: int
    """Real (unpadded) tokens in the batch."""


def train(
    model: Any,
    examples: list[Example],
    *,
    training: Training,
    checkpoints: Path,
    world: World,
    device: torch.device,
    dtype: torch.dtype,
    pad_id: int,
) -> Result:
    steps = total_steps(training, len(examples), world)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=training.learning_rate
    )
    scheduler = get_cosine_schedule_with_warmup(optimizer, ceil(steps * WARMUP_FRACTION), steps)
    last = checkpoint.latest(checkpoints)
    progress = (
        checkpoint.restore(
            last, model=model, optimizer=optimizer, scheduler=scheduler, world=world, device=device
        )
        if last
        else Progress()
    )
    resumed_from = progress.step
    wrapped = _parallel(model, world, device)
    order = Order(
        len(examples), training.batch_size, training.gradient_accumulation_steps, world, training.seed
    )
    log_every = max(1, steps // 20)
    log.info(
        "training %d steps on %d examples, %d process(es) on %s", steps, len(examples), world.size, device
    )
    model.train()
    while progress.step < steps:
        started = time.monotonic()
        batches = [
            _collate([examples[i] for i in ids], pad_id, device) for ids in order.micro_batches(progress.step)
        ]
        loss = _step(wrapped, batches, world, device, dtype)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        progress.step += 1
        progress.losses.append(mean(world, loss, device))
        progress.tokens += total(world, sum(b.tokens for b in batches), device)
        progress.seconds += time.monotonic() - started
        if progress.step % log_every == 0 or progress.step in (1, steps):
            log.info(
                "step %d/%d epoch %.2f loss %.4f lr %.2e %.0f tokens/s",
                progress.step,
                steps,
                order.epoch(progress.step),
                progress.losses[-1],
                scheduler.get_last_lr()[0],
                progress.tokens / max(progress.seconds, 1e-9),
            )
        if progress.step % training.checkpoint_steps == 0 or progress.step == steps:
            checkpoint.save(
                checkpoints, progress, model=model, optimizer=optimizer, scheduler=scheduler, world=world
            )
    return Result(progress, resumed_from)


def _step(model: Any, batches: list[Batch], world: World, device: torch.device, dtype: torch.dtype) -> float:
    """Forward and backward over the micro-batches of one optimizer step; the mean loss."""
    loss_sum = 0.0
    for index, batch in enumerate(batches):
        # Gradients are all-reduced once per optimizer step, on the last micro-batch.
        sync = not world.distributed or index == len(batches) - 1
        with (
            nullcontext() if sync else model.no_sync(),
            torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32),
        ):
            loss = model(**batch.inputs).loss / len(batches)
            loss.backward()
        loss_sum += float(loss.detach())
    return loss_sum


def _parallel(model: Any, world: World, device: torch.device) -> Any:
    if not world.distributed:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _collate(examples: list[Example], pad_id: int, device: torch.device) -> Batch:
    """Right-pads to the longest example; padding is masked out of attention and loss."""
    length = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}
    return Batch(inputs, int(mask.sum()))
