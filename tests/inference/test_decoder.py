"""The lean decoder computes what transformers' forward computes, at every site."""

import pytest
import torch

from inference.decoder import HFDecoder, LeanDecoder, decoder_for, lean_unsupported
from inference.generate import generate
from inference.loading import LoadedModel
from inference.policies import DensePolicy, StaticPolicy
from inference.sparsify import sparsify
from tests.inference.conftest import tiny_model, tiny_tokenizer

PROMPT = [1, 9, 17, 30, 41, 5, 12, 7]
STEPS = [3, 44, 2, 19, 60]


def _logits(decoder, prompt=PROMPT, steps=STEPS) -> list[torch.Tensor]:
    """The prompt's last logits, then each step's."""
    with torch.inference_mode():
        out = [decoder.prefill(torch.tensor([prompt]))]
        out += [decoder.step(torch.tensor([[t]])) for t in steps]
    return out


@pytest.mark.parametrize(
    "policy",
    [DensePolicy(), StaticPolicy(0.3, site="h"), StaticPolicy(0.3, site="gate"),
     StaticPolicy(0.3, site="input")],
    ids=["dense", "h", "gate", "input"],
)  # fmt: skip
def test_lean_decoder_equals_transformers_prompt_and_steps(policy):
    model = sparsify(tiny_model(), policy)
    lean = _logits(LeanDecoder(model, len(PROMPT) + len(STEPS)))
    reference = _logits(HFDecoder(model))
    for i, (a, b) in enumerate(zip(lean, reference, strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"position {i} differs")


def test_lean_decoder_refuses_more_positions_than_it_holds():
    decoder = LeanDecoder(tiny_model(), len(PROMPT) + 1)
    _logits(decoder, steps=[3])
    with pytest.raises(ValueError, match="exceed"):
        _logits_step(decoder)


def _logits_step(decoder):
    with torch.inference_mode():
        return decoder.step(torch.tensor([[4]]))


def test_generate_gives_the_same_tokens_on_either_decoder(monkeypatch):
    loaded = LoadedModel(tiny_model(), tiny_tokenizer(), "tiny", "")
    policy = StaticPolicy(0.2, site="input")
    lean = generate(loaded, "w1 w2 w3 w4", policy, max_new_tokens=12)
    monkeypatch.setenv("INFERENCE_LEAN_DECODER", "0")
    reference = generate(loaded, "w1 w2 w3 w4", policy, max_new_tokens=12)
    assert lean.token_ids == reference.token_ids
    assert lean.weight_bytes_read_per_token == reference.weight_bytes_read_per_token


def test_what_the_lean_decoder_does_not_cover_falls_back_to_transformers(monkeypatch):
    model = tiny_model()
    assert lean_unsupported(model) is None
    assert isinstance(decoder_for(model, 16), LeanDecoder)
    monkeypatch.setenv("INFERENCE_LEAN_DECODER", "0")
    assert isinstance(decoder_for(model, 16), HFDecoder)
    monkeypatch.delenv("INFERENCE_LEAN_DECODER")
    model.config.attention_bias = True
    assert lean_unsupported(model) == "projections with biases"
    assert isinstance(decoder_for(model, 16), HFDecoder)
    model.config.attention_bias = False
    model.config.model_type = "qwen2"
    assert "not LLaMA" in lean_unsupported(model)


@pytest.mark.model
def test_real_model_greedy_tokens_equal_on_both_decoders(monkeypatch):
    from inference.loading import load_model
    from inference.profile import calibrated_policy, humaneval_prompts, profile_model

    loaded = load_model()
    profile = profile_model(loaded, humaneval_prompts(1), max_new_tokens=2)
    prompt = "Write a Python function that returns the largest of three numbers."
    for site in (None, "h", "gate", "input"):
        policy = calibrated_policy(profile, 0.5, site) if site else DensePolicy()
        monkeypatch.delenv("INFERENCE_LEAN_DECODER", raising=False)
        lean = generate(loaded, prompt, policy, max_new_tokens=16)
        monkeypatch.setenv("INFERENCE_LEAN_DECODER", "0")
        reference = generate(loaded, prompt, policy, max_new_tokens=16)
        assert lean.token_ids == reference.token_ids, f"site {site}: greedy tokens differ"


def test_lean_decoder_in_bfloat16_rotates_as_transformers_does():
    model = sparsify(tiny_model().to(torch.bfloat16), StaticPolicy(0.3, site="input"))
    lean = _logits(LeanDecoder(model, len(PROMPT) + len(STEPS)))
    reference = _logits(HFDecoder(model))
    for i, (a, b) in enumerate(zip(lean, reference, strict=True)):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2, msg=f"position {i} differs")
