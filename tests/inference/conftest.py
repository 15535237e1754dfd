"""Fixtures: a tiny random LLaMA (fast, every run) and the real shipped model (``-m model``)."""

import os

import pytest
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from inference.config import SHAPES
from inference.loading import LoadedModel, load_model
from inference.random_model import tiny_llama, word_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")



def tiny_model(seed: int = 0) -> LlamaForCausalLM:
    return tiny_llama(seed)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return word_tokenizer(SHAPES["tiny"].vocab_size)


@pytest.fixture
def tiny_dir(tmp_path):
    """The tiny model and tokenizer saved as a Hugging Face directory."""
    path = tmp_path / "tiny-llama"
    tiny_model().save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture
def tiny() -> LoadedModel:
    return LoadedModel(model=tiny_model(), tokenizer=tiny_tokenizer(), fingerprint="tiny", path="")


@pytest.fixture(scope="session")
def real() -> LoadedModel:
    """The shipped SmolLM2 model, loaded once per session (converted cache under ./var)."""
    return load_model()
