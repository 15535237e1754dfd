"""The lean decoder computes what transformers' forward computes, at every site."""

import pytest
import torch

from inference.decoder import (
    HFDecoder,
    LeanDecoder,
    compiled_step_unsupported,
    decoder_for,
    lean_unsupported,
)
from inference.generate import generate
from inference.loading import LoadedModel
from inference.policies import DensePolicy, StaticPolicy
from inference.sparse_mlp import set_thresholds
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


def _recorded(model) -> tuple[list, list]:
    """What every MLP recorded (and forget it)."""
    mlps = [layer.mlp for layer in model.model.layers]
    taken = [list(m.active_fractions) for m in mlps], [list(m.read_weights) for m in mlps]
    for m in mlps:
        m.active_fractions, m.read_weights = [], []
    return taken


@pytest.mark.parametrize(
    "policy",
    [DensePolicy(), StaticPolicy(0.3, site="h"), StaticPolicy(0.3, site="gate"),
     StaticPolicy(0.3, site="input"), StaticPolicy(0.0, site="input")],
    ids=["dense", "h", "gate", "input", "input-at-0"],
)  # fmt: skip
def test_compiled_step_equals_the_python_layer_loop_bit_for_bit(policy):
    model = sparsify(tiny_model(), policy)
    for layer in model.model.layers:
        layer.mlp.recording = True
    compiled = LeanDecoder(model, len(PROMPT) + len(STEPS))
    assert compiled.compiled is not None, compiled_step_unsupported(compiled)
    fast, fast_records = _logits(compiled), _recorded(model)
    loop = LeanDecoder(model, len(PROMPT) + len(STEPS), compiled_step=False)
    slow, slow_records = _logits(loop), _recorded(model)
    for i, (a, b) in enumerate(zip(fast, slow, strict=True)):
        assert torch.equal(a, b), f"position {i}: the compiled step's logits differ"
    assert fast_records == slow_records, "the compiled step recorded other kept counts or bytes"
    assert len(fast_records[0][0]) == 1 + len(STEPS)


def test_compiled_step_follows_thresholds_changed_between_tokens():
    # An adaptive policy moves the thresholds per step: the compiled step reads them each call.
    model = sparsify(tiny_model(), StaticPolicy(0.1, site="gate"))
    for layer in model.model.layers:
        layer.mlp.recording = True
    runs = []
    for compiled in (True, False):
        decoder = LeanDecoder(model, 8, compiled_step=compiled)
        set_thresholds(model, [0.1] * len(model.model.layers))
        with torch.inference_mode():
            decoder.prefill(torch.tensor([PROMPT[:4]]))
            first = decoder.step(torch.tensor([[3]]))
            set_thresholds(model, [0.1] * len(model.model.layers), factor=3.0)
            second = decoder.step(torch.tensor([[5]]))
        runs.append((first, second, _recorded(model)[0][0]))
    (a1, a2, fractions), (b1, b2, reference) = runs
    assert torch.equal(a1, b1) and torch.equal(a2, b2), "the compiled step missed a change"
    assert fractions == reference
    assert fractions[2] < fractions[1], f"tripled threshold kept as many neurons: {fractions}"


def test_compiled_step_stands_aside_for_what_it_does_not_compute():
    model = sparsify(tiny_model(), StaticPolicy(0.3, site="gate"))
    assert compiled_step_unsupported(LeanDecoder(model, 8)) is None
    handle = model.model.layers[1].mlp.gate_proj.register_forward_hook(lambda *args: None)
    try:
        decoder = LeanDecoder(model, 8)
        assert compiled_step_unsupported(decoder) == "forward hooks"
        assert decoder.compiled is None
    finally:
        handle.remove()
    bf16 = LeanDecoder(sparsify(tiny_model().to(torch.bfloat16), DensePolicy()), 8)
    assert compiled_step_unsupported(bf16) == "not fp32 on the CPU"
    assert bf16.compiled is None
