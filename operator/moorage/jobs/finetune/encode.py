"""Turns rendered rows into token ids and loss labels, applying the maxSeqLength policy."""

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from moorage.jobs.finetune.errors import DATASET_EMPTY, SEQUENCE_TOO_LONG, FineTuneError
from moorage.jobs.finetune.formats import Rendered

IGNORE_INDEX = -100
"""The label torch's cross-entropy skips: no loss on prompts, padding and special prefixes."""

log = logging.getLogger(__name__)


class Tokenizer(Protocol):
    bos_token_id: int | None
    eos_token_id: int | None

    def __call__(self, text: list[str], add_special_tokens: bool) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class Example:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    @property
    def trainable_tokens(self) -> int:
        # The first token is never predicted (there is nothing before it), so its label never counts.
        return sum(label != IGNORE_INDEX for label in self.labels[1:])


def encode_all(
    rows: Iterable[Rendered],
    tokenizer: Tokenizer,
    max_seq_length: int,
    overlong: Literal["truncate", "refuse"],
) -> list[Example]:
    """Every row that has something left to learn after truncation; an error when none has."""
    examples: list[Example] = []
    truncated = skipped = 0
    for index, rendered in enumerate(rows, start=1):
        example = encode(rendered, tokenizer)
        if len(example.input_ids) > max_seq_length:
            if overlong == "refuse":
                raise FineTuneError(
                    SEQUENCE_TOO_LONG,
                    f"row {index} is {len(example.input_ids)} tokens long, more than maxSeqLength "
                    f"{max_seq_length} (set training.overlong: truncate to cut such rows)",
                )
            example = Example(example.input_ids[:max_seq_length], example.labels[:max_seq_length])
            truncated += 1
        if example.trainable_tokens == 0:
            skipped += 1
            continue
        examples.append(example)
    if truncated or skipped:
        log.warning(
            "truncated %d rows to %d tokens; skipped %d with nothing to learn",
            truncated,
            max_seq_length,
            skipped,
        )
    if not examples:
        raise FineTuneError(
            DATASET_EMPTY,
            "the dataset has no rows to train on"
            + (f" ({skipped} rows had no trainable tokens)" if skipped else ""),
        )
    return examples


def encode(rendered: Rendered, tokenizer: Tokenizer) -> Example:
    ids: list[int] = []
    labels: list[int] = []
    if rendered.special_tokens and tokenizer.bos_token_id is not None:
        ids.append(tokenizer.bos_token_id)
        labels.append(IGNORE_INDEX)
    pieces = tokenizer([s.text for s in rendered.segments], add_special_tokens=False)["input_ids"]
    for segment, piece in zip(rendered.segments, pieces, strict=True):
        ids += piece
        labels += piece if segment.trainable else [IGNORE_INDEX] * len(piece)
    if rendered.special_tokens and tokenizer.eos_token_id is not None:
        # Learning to stop is part of learning the completion.
        ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
    return Example(tuple(ids), tuple(labels))
