"""Rendering rows into trainable and prompt segments, and the maxSeqLength policy (no training stack)."""

from collections.abc import Mapping
from typing import Any

import pytest

from moorage.api.finetune import Dataset
from moorage.jobs.finetune.encode import IGNORE_INDEX, encode_all
from moorage.jobs.finetune.errors import FineTuneError
from moorage.jobs.finetune.formats import Rendered, Segment, formatter


def _chatml(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    text = "".join(f"<{m['role']}>{m['content']}</>" for m in messages)
    return text + ("<assistant>" if add_generation_prompt else "")


class WordTokenizer:
    """One token per whitespace-separated word; ids are word lengths, so tests can read them."""

    bos_token_id: int | None = 100
    eos_token_id: int | None = 101

    def __call__(self, text: list[str], add_special_tokens: bool) -> Mapping[str, Any]:
        return {"input_ids": [[len(word) for word in t.split()] for t in text]}


def _dataset(**fields: Any) -> Dataset:
    return Dataset.model_validate({"uri": "data.jsonl", **fields})


def test_chat_trains_on_the_assistant_turns_only() -> None:
    render = formatter(_dataset(format="chat"), _chatml)
    row = {
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"},
            {"role": "assistant", "content": "A2"},
        ]
    }
    rendered = render(row, 1)
    assert rendered.segments == (
        Segment("<system>S</><user>Q1</><assistant>", False),
        Segment("A1</>", True),
        Segment("<user>Q2</><assistant>", False),
        Segment("A2</>", True),
    )
    assert not rendered.special_tokens


def test_chat_falls_back_to_the_whole_conversation_for_odd_templates() -> None:
    def odd(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        return f"{len(messages)}:" + _chatml(messages, add_generation_prompt)

    rows = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}
    rendered = formatter(_dataset(format="chat"), odd)(rows, 1)
    assert rendered.segments == (Segment("2:<user>Q</><assistant>A</>", True),)


def test_instruction_masks_the_prompt_and_learns_to_stop() -> None:
    render = formatter(_dataset(format="instruction"), _chatml)
    [example] = encode_all(
        [render({"prompt": "aa b", "completion": "ccc"}, 1)], WordTokenizer(), 64, "refuse"
    )
    assert example.input_ids == (100, 2, 1, 3, 101)
    assert example.labels == (IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 3, 101)


def test_text_uses_the_configured_field() -> None:
    render = formatter(_dataset(format="text", textField="body"), _chatml)
    assert render({"body": "hello"}, 1).segments == (Segment("hello", True),)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"messages": None, "other": 1}, "row 4: missing field 'messages' (the row has: other)"),
        ({"messages": "hi"}, "row 4: field 'messages' should be a non-empty list of messages"),
        (
            {"messages": [{"role": "user"}]},
            "row 4: messages[0] should have string fields 'role' and 'content'",
        ),
        ({"messages": [{"role": "user", "content": "Q"}]}, "row 4: messages has no assistant message"),
    ],
)
def test_bad_chat_rows_are_named(row: dict[str, Any], message: str) -> None:
    with pytest.raises(
        FineTuneError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        formatter(_dataset(format="chat"), _chatml)(row, 4)


def test_overlong_rows_are_truncated_by_default() -> None:
    row = Rendered((Segment("a b", False), Segment("c d e f g h", True)), special_tokens=True)
    [example] = encode_all([row], WordTokenizer(), 5, "truncate")
    assert len(example.input_ids) == 5
    assert example.trainable_tokens == 2


def test_rows_with_nothing_left_to_learn_are_dropped_and_none_left_is_empty() -> None:
    row = Rendered((Segment("a b c d e f", False), Segment("g", True)), special_tokens=True)
    with pytest.raises(FineTuneError, match="1 rows had no trainable tokens") as error:
        encode_all([row], WordTokenizer(), 4, "truncate")
    assert error.value.reason == "DatasetEmpty"
