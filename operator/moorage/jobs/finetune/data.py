"""Loads the dataset's rows from local files with `datasets`, offline."""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import datasets

from moorage.jobs.finetune.errors import DATASET_EMPTY, DATASET_INVALID, DATASET_NOT_FOUND, FineTuneError
from moorage.jobs.finetune.formats import Row

BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
"""The `datasets` builder for each file type the program reads."""


def load_rows(path: Path, split: str, cache_dir: Path) -> Iterable[Row]:
    """The rows of a file, or of the `split` of a directory laid out like a hub dataset repo.

    A directory goes through `datasets`' own split inference (train.jsonl, data/train-*.parquet,
    the README's configs), so a pulled hub snapshot reads the way the hub shows it.
    """
    try:
        if path.is_file():
            table = datasets.load_dataset(
                _builder(path), data_files=str(path), split="train", cache_dir=str(cache_dir)
            )
        else:
            table = _load_directory(path, split, cache_dir)
    except FineTuneError:
        raise
    except StopIteration:
        # What `datasets` raises for a JSON file with no rows at all.
        raise FineTuneError(DATASET_EMPTY, f"the dataset at {path} has no rows") from None
    except (ValueError, datasets.exceptions.DatasetGenerationError) as exc:
        raise FineTuneError(DATASET_INVALID, f"cannot read the dataset at {path}: {_one_line(exc)}") from exc
    rows: Iterable[Row] = table
    return rows


def _load_directory(path: Path, split: str, cache_dir: Path) -> Any:
    if not any(p.suffix in BUILDERS for p in path.rglob("*") if p.is_file()):
        raise FineTuneError(DATASET_NOT_FOUND, f"no .json, .jsonl or .parquet files under {path}")
    loaded = datasets.load_dataset(str(path), cache_dir=str(cache_dir))
    if split not in loaded:
        raise FineTuneError(
            DATASET_INVALID, f"the dataset at {path} has no split '{split}' (it has: {', '.join(loaded)})"
        )
    return loaded[split]


def _builder(path: Path) -> str:
    try:
        return BUILDERS[path.suffix]
    except KeyError:
        raise FineTuneError(
            DATASET_INVALID, f"{path}: unsupported file type (use {', '.join(sorted(BUILDERS))})"
        ) from None


def _one_line(exc: BaseException) -> str:
    # datasets wraps the parser's error; the cause says what is actually wrong with the file.
    cause = exc.__cause__ or exc
    return " ".join(str(cause).split())[:500]
