"""A LLaMA of a named shape (``config.SHAPES``) with seeded random weights, and a word tokenizer.

The tests run on ``random_llama("tiny")``; benchmarks build bigger shapes the same way
(``tinyllama-1.1b`` for the end-to-end decode benchmark), so no download is ever needed.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.initialization import no_init_weights

from inference.config import ModelShape, shape_named

CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }} {{ m['content'] }}</s> {% endfor %}"
    "{% if add_generation_prompt %}<s>assistant {% endif %}"
)
_SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "user", "assistant", "system"]


def llama_config(shape: ModelShape | str, **overrides) -> LlamaConfig:
    """A ``transformers`` LLaMA config of ``shape`` (pad 0, bos 1, eos 2, as ``word_tokenizer``)."""
    shape = shape_named(shape) if isinstance(shape, str) else shape
    values = dict(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        tie_word_embeddings=shape.tie_word_embeddings,
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    values.update(overrides)
    return LlamaConfig(**values)


def random_llama(shape: ModelShape | str, *, seed: int = 0, std: float | None = None,
                 **overrides) -> LlamaForCausalLM:
    """A LLaMA of ``shape`` in eval mode whose matrices are drawn from N(0, std²), seeded.

    ``std=None`` scales each matrix by 1/sqrt(fan-in) (activations keep their size through the
    layers, as in a trained model); the tests use a fixed, larger ``std`` so activations spread
    over several thresholds.
    """
    with no_init_weights():  # filled below: skip the (slow, for big shapes) default init
        model = LlamaForCausalLM(llama_config(shape, **overrides))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, std if std is not None else p.shape[1] ** -0.5, generator=generator)
            else:  # norms
                p.fill_(1.0)
    return model.eval()


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """The tests' model: the ``tiny`` shape with weights larger than a trained model's (std 0.3),
    so that activations spread over several thresholds."""
    return random_llama("tiny", seed=seed, std=0.3, max_position_embeddings=256)


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """Whitespace tokenizer over ``<pad> <s> </s> <unk> user assistant system w0 w1 ...`` with a
    minimal chat template: prompts like ``"w1 w2 w3"`` map to fixed ids."""
    words = _SPECIAL + [f"w{i}" for i in range(vocab_size - len(_SPECIAL))]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
    )
