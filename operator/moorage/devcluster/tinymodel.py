"""The files of a tiny but well-formed Llama model, built in memory with the standard library only.

The dev cluster, the demo and the tests serve these from the fake hub: every file is what a real hub
repository holds (config.json, model.safetensors with a valid header, tokenizer.json, generation_config.json)
so the code that reads them cannot tell the difference, yet the whole repository is a few kilobytes.
"""

import json
import random
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SAFETENSORS_DTYPE_BYTES: Mapping[str, int] = {
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I8": 1,
    "U8": 1,
}


@dataclass(frozen=True)
class TinyLlama:
    """The shape of the model; the defaults give 856 parameters."""

    vocab_size: int = 32
    hidden_size: int = 8
    intermediate_size: int = 16
    num_hidden_layers: int = 1
    num_attention_heads: int = 2
    num_key_value_heads: int = 1
    seed: int = 0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Tensor names and shapes as transformers' LlamaForCausalLM saves them (tied embeddings)."""
        h, i, kv = self.hidden_size, self.intermediate_size, self.num_key_value_heads * self.head_dim
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (self.vocab_size, h)}
        for layer in range(self.num_hidden_layers):
            p = f"model.layers.{layer}"
            shapes |= {
                f"{p}.self_attn.q_proj.weight": (h, h),
                f"{p}.self_attn.k_proj.weight": (kv, h),
                f"{p}.self_attn.v_proj.weight": (kv, h),
                f"{p}.self_attn.o_proj.weight": (h, h),
                f"{p}.mlp.gate_proj.weight": (i, h),
                f"{p}.mlp.up_proj.weight": (i, h),
                f"{p}.mlp.down_proj.weight": (h, i),
                f"{p}.input_layernorm.weight": (h,),
                f"{p}.post_attention_layernorm.weight": (h,),
            }
        shapes["model.norm.weight"] = (h,)
        return shapes

    @property
    def parameters(self) -> int:
        return sum(_count(shape) for shape in self.tensor_shapes().values())

    def config(self, *, auto_map: bool = False) -> dict[str, object]:
        config: dict[str, object] = {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": 128,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "tie_word_embeddings": True,
            "torch_dtype": "bfloat16",
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 0,
        }
        if auto_map:
            # What a repository with its own modelling code declares; vLLM then needs trust_remote_code.
            config["auto_map"] = {"AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM"}
        return config


def _count(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def bf16(value: float) -> bytes:
    """The bfloat16 encoding of value (truncated float32), little-endian as safetensors stores it."""
    return struct.pack("<f", value)[2:4]


def safetensors_bytes(
    tensors: Mapping[str, tuple[str, tuple[int, ...], bytes]], metadata: Mapping[str, str] | None = None
) -> bytes:
    """Serialises {name: (dtype, shape, raw little-endian data)} in the safetensors format.

    Layout: u64 header length, JSON header (padded with spaces to 8 bytes so tensors stay aligned), data.
    """
    header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for name, (dtype, shape, data) in tensors.items():
        expected = _count(shape) * SAFETENSORS_DTYPE_BYTES[dtype]
        if len(data) != expected:
            raise ValueError(f"{name}: {len(data)} bytes for {dtype}{list(shape)}, expected {expected}")
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(data for _, _, data in tensors.values())


def read_safetensors_header(blob: bytes) -> dict[str, object]:
    """The JSON header of a safetensors file (the first 8 + n bytes are enough)."""
    (length,) = struct.unpack("<Q", blob[:8])
    header: dict[str, object] = json.loads(blob[8 : 8 + length])
    return header


def weights(model: TinyLlama) -> bytes:
    rng = random.Random(model.seed)  # noqa: S311 - reproducible noise, not a secret
    tensors: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    for name, shape in model.tensor_shapes().items():
        # Norm weights start at one like a freshly initialised model; the rest is small noise.
        values = (
            [1.0] * _count(shape)
            if name.endswith("norm.weight")
            else [rng.gauss(0.0, 0.02) for _ in range(_count(shape))]
        )
        tensors[name] = ("BF16", shape, b"".join(bf16(v) for v in values))
    return safetensors_bytes(tensors)


SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")


def tokenizer_json(vocab_size: int) -> dict[str, object]:
    """A word-level tokenizer that the `tokenizers` library loads: special tokens first, then w4..wN."""
    words = [*SPECIAL_TOKENS, *(f"w{i}" for i in range(len(SPECIAL_TOKENS), vocab_size))]
    vocab = {word: i for i, word in enumerate(words)}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": vocab[t],
                "content": t,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for t in SPECIAL_TOKENS
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    }


def _json(value: object) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def model_files(
    model: TinyLlama | None = None, *, auto_map: bool = False, weights_format: str = "safetensors"
) -> dict[str, bytes]:
    """The repository's files by path.

    weights_format "bin" stores the same bytes as pytorch_model.bin instead: enough for code that only looks
    at names and sizes (resolution, pulls), not a loadable pickle.
    """
    model = model or TinyLlama()
    weights_name = {"safetensors": "model.safetensors", "bin": "pytorch_model.bin"}[weights_format]
    files = {
        "config.json": _json(model.config(auto_map=auto_map)),
        "generation_config.json": _json(
            {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "do_sample": False}
        ),
        "tokenizer.json": _json(tokenizer_json(model.vocab_size)),
        "tokenizer_config.json": _json(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "pad_token": "<pad>",
                "model_max_length": 128,
                "chat_template": "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}",
            }
        ),
        "special_tokens_map.json": _json(
            {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
        ),
        "README.md": b"# tiny-llama\n\nA few hundred parameters of noise, for tests.\n",
        weights_name: weights(model),
    }
    if auto_map:
        files["modeling_tiny.py"] = b"# The custom code a trust_remote_code model ships.\n"
    return files


def lora_files(model: TinyLlama, base_repo: str, *, rank: int = 8, seed: int = 1) -> dict[str, bytes]:
    """A PEFT LoRA adapter of `model` on q_proj and v_proj, as `save_pretrained` writes it: small noise
    in both matrices, so it loads in vLLM and changes the output a little."""
    rng = random.Random(seed)  # noqa: S311 - reproducible noise, not a secret
    h, kv = model.hidden_size, model.num_key_value_heads * model.head_dim
    tensors: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    for layer in range(model.num_hidden_layers):
        for module, out in (("q_proj", h), ("v_proj", kv)):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            for name, shape in (
                (f"{prefix}.lora_A.weight", (rank, h)),
                (f"{prefix}.lora_B.weight", (out, rank)),
            ):
                values = [rng.gauss(0.0, 0.02) for _ in range(_count(shape))]
                tensors[name] = ("BF16", shape, b"".join(bf16(v) for v in values))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_repo,
        "r": rank,
        "lora_alpha": 2 * rank,
        "lora_dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"],
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
    }
    return {
        "adapter_config.json": _json(config),
        "adapter_model.safetensors": safetensors_bytes(tensors),
        "README.md": b"# a tiny LoRA adapter, for tests\n",
    }


def chat_dataset_files(rows: int = 8) -> dict[str, bytes]:
    """A tiny chat dataset in the messages format fine-tuning reads."""
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"w{4 + i % 8} w{5 + i % 8}"},
                    {"role": "assistant", "content": f"w{6 + i % 8}"},
                ]
            }
        )
        for i in range(rows)
    ]
    return {"train.jsonl": ("\n".join(lines) + "\n").encode(), "README.md": b"# tiny-chat\n"}
