"""What the weights need, read from the hub's safetensors summary or the model's config.json."""

from collections.abc import Mapping
from typing import Any

DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
}
"""Bytes per element of safetensors dtypes."""

TORCH_TO_SAFETENSORS = {
    "float32": "F32",
    "float": "F32",
    "float16": "F16",
    "half": "F16",
    "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "int8": "I8",
}


def dominant_dtype(parameters_by_dtype: Mapping[str, int]) -> str | None:
    """The dtype that holds most parameters (quantized checkpoints mix packed ints with fp16 scales)."""
    if not parameters_by_dtype:
        return None
    return max(parameters_by_dtype.items(), key=lambda item: item[1])[0]


def config_dtype(config: Mapping[str, Any]) -> str | None:
    """The stored dtype as config.json declares it (torch_dtype, or dtype in newer transformers)."""
    value = config.get("torch_dtype") or config.get("dtype")
    if not isinstance(value, str):
        text_config = config.get("text_config")
        return config_dtype(text_config) if isinstance(text_config, Mapping) else None
    return TORCH_TO_SAFETENSORS.get(value.removeprefix("torch."), value.upper())


def needs_remote_code(config: Mapping[str, Any]) -> bool:
    """auto_map points transformers at Python files in the repository itself."""
    return bool(config.get("auto_map"))


def estimate_parameters(config: Mapping[str, Any]) -> int | None:
    """A decoder-only transformer's parameter count from its shape; None when config.json lacks the shape.

    Exact for Llama-style models (GQA attention, gated MLP, RMSNorm); a fair estimate for the rest, and only
    used when the hub has no safetensors summary. Mixture-of-experts models count every expert.
    """
    if isinstance(config.get("text_config"), Mapping) and "hidden_size" not in config:
        return estimate_parameters(config["text_config"])
    try:
        hidden = int(config["hidden_size"])
        layers = int(config["num_hidden_layers"])
        vocab = int(config["vocab_size"])
        heads = int(config.get("num_attention_heads") or 1)
    except (KeyError, TypeError, ValueError):
        return None
    intermediate = int(config.get("intermediate_size") or 4 * hidden)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    experts = int(config.get("num_local_experts") or config.get("num_experts") or 1)
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    mlp = 3 * hidden * intermediate * experts
    per_layer = attention + mlp + 2 * hidden
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings", False) else 2)
    return embeddings + layers * per_layer + hidden
