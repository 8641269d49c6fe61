"""A tiny random Llama and tokenizer built on the spot: nothing is downloaded.

The tokenizer is trained on the test vocabulary, the model is randomly initialised.
"""

import importlib
from pathlib import Path

import pytest
from finetune_support import CHAT_TEMPLATE, SPECIAL, WORDS, FineTuneRunner, restore_offline_env_after


@pytest.fixture(autouse=True)
def _offline_env_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    restore_offline_env_after(monkeypatch)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """On a shared 2-core machine, a second busy-waiting OpenMP thread makes tiny models 10x slower."""
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")

    base = tmp_path_factory.mktemp("base")
    raw = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token="<unk>"))
    raw.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    raw.train_from_iterator([" ".join(WORDS)], tokenizers.trainers.WordLevelTrainer(special_tokens=SPECIAL))
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(base)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        # Wide enough initial weights that logits can move far from uniform through the adapter alone.
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(base)
    return base


@pytest.fixture
def finetune(tmp_path: Path, tiny_base: Path, monkeypatch: pytest.MonkeyPatch) -> FineTuneRunner:
    runner = FineTuneRunner(tmp_path, tiny_base)
    monkeypatch.setenv("MOORAGE_TERMINATION_LOG", str(runner.log))
    return runner
