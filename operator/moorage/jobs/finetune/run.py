"""One fine-tune run, from the spec to the adapter; imported only once torch is known to be needed."""

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from moorage.api.finetune import FineTune
from moorage.api.programs import Report
from moorage.jobs.finetune import distributed, outputs
from moorage.jobs.finetune.data import load_rows
from moorage.jobs.finetune.encode import Example, encode_all
from moorage.jobs.finetune.errors import OUT_OF_MEMORY, TRAINED, FineTuneError
from moorage.jobs.finetune.formats import formatter
from moorage.jobs.finetune.model import chat_renderer, load_lora_model, load_tokenizer, pad_id, pick_device
from moorage.jobs.finetune.sources import resolve_dataset
from moorage.jobs.finetune.train import train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Paths:
    base: Path
    output: Path
    data_root: Path


def run(spec: FineTune, paths: Paths) -> Report:
    world = distributed.world_from_env()
    device, dtype = pick_device(world)
    tokenizer = load_tokenizer(paths.base)
    examples = prepare(spec, tokenizer, paths.data_root)
    distributed.start(world, device)
    try:
        # Seeded before the adapter exists: its initial weights are the seed's, on every process.
        torch.manual_seed(spec.training.seed)
        model = load_lora_model(paths.base, spec.lora, device, dtype)
        try:
            result = train(
                model,
                examples,
                training=spec.training,
                checkpoints=paths.output / outputs.CHECKPOINTS,
                world=world,
                device=device,
                dtype=dtype,
                pad_id=pad_id(tokenizer),
            )
        except torch.cuda.OutOfMemoryError as exc:
            raise FineTuneError(
                OUT_OF_MEMORY,
                "the GPU ran out of memory; lower training.batchSize or training.maxSeqLength, "
                "or give the run more or larger GPUs",
            ) from exc
        run_metrics = outputs.metrics(result.progress, result.resumed_from, len(examples))
        if world.is_main:
            outputs.write(paths.output, model, run_metrics)
        distributed.barrier(world)
    finally:
        distributed.stop(world)
    details = outputs.report_details(paths.output, run_metrics)
    message = f"trained {details['steps']} steps, final loss {details['finalLoss']:.4f}"
    return Report(ok=True, reason=TRAINED, message=message, details=details)


def prepare(spec: FineTune, tokenizer: Any, data_root: Path) -> list[Example]:
    """The dataset, read, checked and tokenized."""
    dataset = spec.dataset
    path = resolve_dataset(dataset.uri, dataset.revision, data_root)
    render = formatter(dataset, chat_renderer(tokenizer))
    with tempfile.TemporaryDirectory(prefix="moorage-datasets-") as cache:
        rendered = (
            render(row, index)
            for index, row in enumerate(load_rows(path, dataset.split, Path(cache)), start=1)
        )
        examples = encode_all(rendered, tokenizer, spec.training.max_seq_length, spec.training.overlong)
    log.info(
        "dataset %s: %d examples, %d trainable tokens",
        dataset.uri,
        len(examples),
        sum(e.trainable_tokens for e in examples),
    )
    return examples
