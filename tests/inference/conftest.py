"""Fixtures: a tiny random LLaMA (fast, every run) and the real shipped model (``-m model``)."""

import os

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from inference.loading import LoadedModel, load_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }} {{ m['content'] }}</s> {% endfor %}"
    "{% if add_generation_prompt %}<s>assistant {% endif %}"
)


def tiny_config(**overrides) -> LlamaConfig:
    values = dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    values.update(overrides)
    return LlamaConfig(**values)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    words = ["<pad>", "<s>", "</s>", "<unk>", "user", "assistant", "system"]
    words += [f"w{i}" for i in range(64 - len(words))]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        chat_template=TINY_CHAT_TEMPLATE,
    )


def tiny_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config())
    # Larger weights than the default init, so activations spread over several thresholds.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model.eval()


@pytest.fixture
def tiny() -> LoadedModel:
    return LoadedModel(model=tiny_model(), tokenizer=tiny_tokenizer(), fingerprint="tiny", path="")


@pytest.fixture(scope="session")
def real() -> LoadedModel:
    """The shipped SmolLM2 model, loaded once per session (converted cache under ./var)."""
    return load_model()
