"""Loads the base model and its tokenizer from local files and puts a LoRA adapter on it."""

import logging
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from moorage.api.finetune import Lora
from moorage.jobs.finetune.distributed import World
from moorage.jobs.finetune.errors import BASE_WEIGHTS_MISSING, SPEC_INVALID, FineTuneError
from moorage.jobs.finetune.formats import FALLBACK_CHAT_TEMPLATE, ChatRenderer

log = logging.getLogger(__name__)


def pick_device(world: World) -> tuple[torch.device, torch.dtype]:
    """This process's GPU in bf16 where the GPU has it, else float32; the CPU in float32 without one."""
    if not torch.cuda.is_available():
        return torch.device("cpu"), torch.float32
    device = torch.device("cuda", world.local_rank)
    torch.cuda.set_device(device)
    return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32


def load_tokenizer(base: Path) -> Any:
    _require_base(base)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise FineTuneError(BASE_WEIGHTS_MISSING, f"cannot load the tokenizer from {base}: {exc}") from exc
    return tokenizer


def pad_id(tokenizer: Any) -> int:
    """The tokenizer's padding id, or any: padded positions are masked out of attention and loss."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def chat_renderer(tokenizer: Any) -> ChatRenderer:
    """Renders messages with the tokenizer's chat template, or ChatML when it has none."""
    template = None if tokenizer.chat_template else FALLBACK_CHAT_TEMPLATE
    if template:
        log.warning("the base tokenizer has no chat template; rendering chat rows as ChatML")

    def render(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        text: str = tokenizer.apply_chat_template(
            messages, chat_template=template, add_generation_prompt=add_generation_prompt, tokenize=False
        )
        return text

    return render


def load_lora_model(base: Path, lora: Lora, device: torch.device, dtype: torch.dtype) -> Any:
    """The base model, frozen, with a fresh trainable LoRA adapter (float32 even on a bf16 base)."""
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(str(base), local_files_only=True, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise FineTuneError(BASE_WEIGHTS_MISSING, f"cannot load the base model from {base}: {exc}") from exc
    model.to(device)
    if device.type == "cuda":
        # Activations, not weights, dominate memory for long sequences: recompute them in backward.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules or "all-linear",
        task_type="CAUSAL_LM",
    )
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as exc:
        raise FineTuneError(SPEC_INVALID, f"fineTune.lora.targetModules: {exc}") from exc
    trainable, total = peft_model.get_nb_trainable_parameters()
    log.info("LoRA r=%d: %d trainable of %d parameters", lora.r, trainable, total)
    return peft_model


def _require_base(base: Path) -> None:
    if not (base / "config.json").is_file():
        raise FineTuneError(BASE_WEIGHTS_MISSING, f"no base model at {base} (config.json is missing)")
