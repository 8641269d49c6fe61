"""Which files of a repository get pulled."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from moorage.api.resolved import HubFile, RepoType

SAFETENSORS = ("*.safetensors",)
PICKLES = ("*.bin", "*.pt", "*.pth")
CONFIGS = ("*.json",)
"""config.json, generation_config.json, tokenizer_config.json, *.safetensors.index.json and the like."""
TOKENIZER = ("tokenizer*", "*.model", "*.tiktoken", "merges.txt", "vocab*")
DEFAULT_MODEL_INCLUDE = (*SAFETENSORS, *CONFIGS, *TOKENIZER)
NOT_WEIGHTS = ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state*.pth")
"""Pickles that trainers leave next to the weights."""
CONSOLIDATED = "consolidated*"
"""Mistral's original-format copy of the weights, which vLLM skips when the HF shards are there."""


@dataclass(frozen=True)
class Selection:
    files: tuple[HubFile, ...]
    notes: tuple[str, ...] = ()


def matches(path: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(path, pattern) for pattern in patterns)


def select(files: Sequence[HubFile], include: Sequence[str] | None, repo_type: RepoType) -> Selection:
    """The files the include patterns pick (globs over paths, `*` crosses `/`), sorted by path.

    Without patterns, a dataset is taken whole, and a model gets its root-level safetensors weights, configs
    and tokenizer files; when it has no safetensors, its .bin/.pt weights instead (noted), never both.
    Subfolders (original/, onnx/, ...) usually hold other formats of the same weights, so they are left out.
    """
    if include:
        chosen = [f for f in files if matches(f.path, include)]
        return Selection(_sorted(chosen))
    if repo_type == "dataset":
        return Selection(_sorted(f for f in files if f.path != ".gitattributes"))
    root = [f for f in files if "/" not in f.path]
    chosen = [f for f in root if matches(f.path, DEFAULT_MODEL_INCLUDE)]
    safetensors = [f for f in chosen if matches(f.path, SAFETENSORS)]
    if any(not matches(f.path, (CONSOLIDATED,)) for f in safetensors):
        chosen = [f for f in chosen if not matches(f.path, (f"{CONSOLIDATED}.safetensors",))]
    if safetensors:
        return Selection(_sorted(chosen))
    pickles = [f for f in root if matches(f.path, PICKLES) and not matches(f.path, NOT_WEIGHTS)]
    if not pickles:
        return Selection(_sorted(chosen))
    note = (
        f"no safetensors weights: pulling {len(pickles)} pickled file(s) "
        f"({', '.join(f.path for f in _sorted(pickles)[:3])}{', ...' if len(pickles) > 3 else ''})"
    )
    return Selection(_sorted([*chosen, *pickles]), (note,))


def has_weights(files: Iterable[HubFile]) -> bool:
    return any(matches(f.path, (*SAFETENSORS, *PICKLES)) and not matches(f.path, NOT_WEIGHTS) for f in files)


def pickle_only(files: Iterable[HubFile]) -> bool:
    """Weights only as pickles (.bin/.pt), which run code when loaded."""
    paths = [f.path for f in files]
    return not any(matches(p, SAFETENSORS) for p in paths) and any(
        matches(p, PICKLES) and not matches(p, NOT_WEIGHTS) for p in paths
    )


def _sorted(files: Iterable[HubFile]) -> tuple[HubFile, ...]:
    return tuple(sorted(files, key=lambda f: f.path))
