"""Renders one dataset row as text segments, each marked trainable or not.

Working on text rather than tokens keeps every format tokenizer-agnostic; `encode` turns the
segments into token ids and loss labels.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from moorage.api.finetune import Dataset
from moorage.jobs.finetune.errors import DATASET_INVALID, FineTuneError

FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""ChatML, for base models whose tokenizer has no chat template of its own."""


@dataclass(frozen=True)
class Segment:
    text: str
    trainable: bool


@dataclass(frozen=True)
class Rendered:
    """A row as segments; `special_tokens` says whether BOS/EOS still need adding around them."""

    segments: tuple[Segment, ...]
    special_tokens: bool


class ChatRenderer(Protocol):
    def __call__(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str: ...


Row = Mapping[str, Any]
Formatter = Callable[[Row, int], Rendered]


def formatter(spec: Dataset, chat: ChatRenderer) -> Formatter:
    """The function that renders a row (and its number, counted from 1, for error messages)."""
    if spec.format == "chat":
        return lambda row, index: _chat(_messages(row, index, spec.messages_field), chat, index)
    if spec.format == "instruction":
        return lambda row, index: Rendered(
            (
                Segment(_text(row, index, spec.prompt_field), trainable=False),
                Segment(_text(row, index, spec.completion_field), trainable=True),
            ),
            special_tokens=True,
        )
    return lambda row, index: Rendered((Segment(_text(row, index, spec.text_field), trainable=True),), True)


def _chat(messages: list[dict[str, str]], render: ChatRenderer, index: int) -> Rendered:
    try:
        return _chat_segments(messages, render)
    except Exception as exc:  # templates reject conversations with their own exception types
        raise FineTuneError(
            DATASET_INVALID, f"row {index}: the chat template rejects the messages: {exc}"
        ) from exc


def _chat_segments(messages: list[dict[str, str]], render: ChatRenderer) -> Rendered:
    """Loss on the assistant turns only, found by rendering the conversation one turn at a time.

    That works for templates whose rendering of a conversation extends the rendering of its prefix,
    which is nearly all of them; for any other the whole conversation is trained on.
    """
    full = render(messages, add_generation_prompt=False)
    segments: list[Segment] = []
    done = ""
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(messages[:index], add_generation_prompt=True)
        turn = render(messages[: index + 1], add_generation_prompt=False)
        if not (prompt.startswith(done) and turn.startswith(prompt) and full.startswith(turn)):
            return Rendered((Segment(full, trainable=True),), special_tokens=False)
        segments += [Segment(prompt[len(done) :], False), Segment(turn[len(prompt) :], True)]
        done = turn
    segments.append(Segment(full[len(done) :], False))
    # Chat templates write their own BOS/EOS-like markers.
    return Rendered(tuple(s for s in segments if s.text), special_tokens=False)


def _field(row: Row, index: int, name: str) -> object:
    # Rows loaded from JSON share one schema, so a key missing from one row reads as None there.
    value = row.get(name)
    if value is None:
        present = ", ".join(sorted(k for k, v in row.items() if v is not None))
        raise FineTuneError(DATASET_INVALID, f"row {index}: missing field '{name}' (the row has: {present})")
    return value


def _text(row: Row, index: int, name: str) -> str:
    value = _field(row, index, name)
    if not isinstance(value, str):
        raise FineTuneError(DATASET_INVALID, f"row {index}: field '{name}' should be a string")
    return value


def _messages(row: Row, index: int, name: str) -> list[dict[str, str]]:
    value = _field(row, index, name)
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise FineTuneError(
            DATASET_INVALID, f"row {index}: field '{name}' should be a non-empty list of messages"
        )
    messages = []
    for position, message in enumerate(value):
        role = message.get("role") if isinstance(message, Mapping) else None
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(role, str) or not isinstance(content, str):
            raise FineTuneError(
                DATASET_INVALID,
                f"row {index}: {name}[{position}] should have string fields 'role' and 'content'",
            )
        messages.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in messages):
        raise FineTuneError(DATASET_INVALID, f"row {index}: {name} has no assistant message to learn from")
    return messages
