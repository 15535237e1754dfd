import torch

from inference.config import SHAPES, ModelShape
from inference.random_model import random_llama, word_tokenizer


def test_random_llama_has_the_named_shape_and_its_parameter_count():
    model = random_llama("tiny")
    shape = ModelShape.from_hf_config(model.config, name="tiny")
    assert shape == SHAPES["tiny"]
    assert shape.total_params == sum(p.numel() for p in model.parameters())


def test_random_llama_is_seeded_and_scaled():
    a, b, c = random_llama("tiny", seed=3), random_llama("tiny", seed=3), random_llama("tiny")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    up_a, up_c = (m.model.layers[0].mlp.up_proj.weight for m in (a, c))
    assert not torch.equal(up_a, up_c)
    gate = random_llama("tiny", std=0.3).model.layers[0].mlp.gate_proj.weight
    assert abs(float(gate.detach().std()) - 0.3) < 0.05, "std= sets the weights' spread"
    up = a.model.layers[0].mlp.down_proj.weight  # [D, F]: default std is 1/sqrt(F)
    assert abs(float(up.detach().std()) * up.shape[1] ** 0.5 - 1.0) < 0.2
    ids = torch.tensor([[1, 7, 8]])
    with torch.no_grad():
        assert torch.isfinite(a(input_ids=ids).logits).all()


def test_word_tokenizer_maps_words_to_fixed_ids():
    tokenizer = word_tokenizer(64)
    assert tokenizer("w0 w1", add_special_tokens=False)["input_ids"] == [7, 8]
    assert tokenizer.eos_token_id == 2
