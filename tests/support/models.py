"""Models for tests, derived without downloads: a tiny random LLaMA saved as a Hugging Face
directory, and a second model made from any model by a seeded perturbation of its weights
(the "aligned" model of a test, or a second registered model)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel

from inference.config import SHAPES
from inference.loading import load_model
from inference.random_model import tiny_llama, word_tokenizer


def save_tiny(path: Path, *, seed: int = 0) -> Path:
    """The tests' tiny random LLaMA (``tiny_llama(seed)``) and its word tokenizer, at ``path``."""
    tiny_llama(seed).save_pretrained(path)
    word_tokenizer(SHAPES["tiny"].vocab_size).save_pretrained(path)
    return path


@torch.no_grad()
def perturbed_copy(
    source: Path, path: Path, *, seed: int, scale: float = 0.05, cache_dir: Path | None = None
) -> Path:
    """Save at ``path`` (a Hugging Face directory) the model at ``source`` (a directory, or a
    GGUF such as the shipped SmolLM2, dequantized through the converted cache under
    ``cache_dir``) with every weight matrix w replaced by w + scale * std(w) * N(0, 1) (seeded
    by ``seed``; norms unchanged), and its tokenizer. Same architecture and shapes, different
    weights and fingerprint."""
    loaded = load_model(source, dtype="float32", cache_dir=cache_dir)
    model: PreTrainedModel = loaded.model
    generator = torch.Generator().manual_seed(seed)
    for _, param in sorted(model.named_parameters()):  # sorted: the noise does not hang on order
        if param.dim() == 2:
            noise = torch.randn(param.shape, generator=generator)
            param.add_(noise * (scale * param.float().std()))
    model.save_pretrained(path)
    loaded.tokenizer.save_pretrained(path)
    return path
