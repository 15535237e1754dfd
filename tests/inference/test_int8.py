"""Whole-model int8 weights (``inference.int8``): gpt-fast's two steps, the int8 model against
the fp32 one, and each site through the int8 Triton kernels against its masked reference (on
CPU under Triton's interpreter; on CUDA, compiled, where it exists)."""

import weakref

import pytest
import torch
from torch import nn

from inference import int8, triton_kernels
from inference.decoder import LeanDecoder
from inference.int8 import (
    PROJECTIONS,
    Int8Linear,
    convert_for_runtime,
    create_int8_state_dict,
    is_int8,
    quantize_model_int8,
)
from inference.loading import load_model
from inference.policies import DensePolicy, PredictorPolicy, StaticPolicy
from inference.provenance import machine_provenance
from inference.sparse_mlp import SparseInt8Linear, sparse_mlps
from inference.sparsify import sparsify
from inference.static_decoder import StaticStep
from inference.telemetry import bytes_read_per_token, weight_bytes_per_device
from tests.inference.conftest import tiny_model, tiny_tokenizer

PROMPT = [1, 9, 17, 30, 41, 5, 12, 7]
SITES = ("h", "gate", "input")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    """CPU tensors run the kernels under Triton's interpreter (this module only)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def int8_model(device="cpu") -> nn.Module:
    return quantize_model_int8(tiny_model().to(device))


def greedy(decoder: LeanDecoder, steps: int = 4) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy tokens after ``PROMPT`` and the logits of each position."""
    with torch.inference_mode():
        logits = [decoder.prefill(torch.tensor([PROMPT], device=decoder.device))]
        tokens = []
        for _ in range(steps):
            tokens.append(int(logits[-1].argmax()))
            logits.append(decoder.step(torch.tensor([[tokens[-1]]], device=decoder.device)))
    return tokens, logits


def test_state_dict_and_runtime_conversion_are_the_one_step_model():
    """Offline ``create_int8_state_dict`` then ``convert_for_runtime`` + ``load_state_dict``
    give the model ``quantize_model_int8`` makes; the float model is left as it was."""
    model = tiny_model()
    state = create_int8_state_dict(model)
    assert type(model.model.layers[0].self_attn.q_proj) is nn.Linear
    for i in range(len(model.model.layers)):
        for name in PROJECTIONS:
            assert state[f"model.layers.{i}.{name}.weight"].dtype == torch.int8
            assert state[f"model.layers.{i}.{name}.scales"].dtype == torch.float32
    assert state["model.embed_tokens.weight"].dtype == torch.float32
    runtime = convert_for_runtime(tiny_model(seed=1))
    runtime.load_state_dict(state, assign=True)
    one_step = int8_model()
    for (key, a), (key_b, b) in zip(
        runtime.state_dict().items(), one_step.state_dict().items(), strict=True
    ):
        assert key == key_b
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=key)
    assert sum(isinstance(m, Int8Linear) for m in one_step.modules()) == 7 * len(
        one_step.model.layers
    )


def test_quantizing_frees_each_float_matrix_as_it_goes(monkeypatch):
    """A model filling a GPU in bf16 has room for one more matrix, not for an int8 copy of all
    of them: each float matrix is freed once its int8 one is in place."""
    model = tiny_model()
    weights = [weakref.ref(linear.weight) for _, linear in int8._projections(model)]
    quantize = triton_kernels.quantize_int8
    alive_done = []

    def counting(weight, *, output_axis):
        alive_done.append(sum(ref() is not None for ref in weights[: len(alive_done)]))
        return quantize(weight, output_axis=output_axis)

    monkeypatch.setattr(triton_kernels, "quantize_int8", counting)
    quantize_model_int8(model)
    assert len(alive_done) == len(weights) == 7 * len(model.model.layers)
    assert max(alive_done) <= 1  # at most the one just swapped out, held by the loop


def test_bytes_are_int8_values_plus_fp32_scales():
    fp32, model = tiny_model(), int8_model()
    projections = [m for m in model.modules() if isinstance(m, Int8Linear)]
    int8_bytes = sum(m.out_features * m.in_features + 4 * m.out_features for m in projections)
    float_bytes = 4 * sum(m.out_features * m.in_features for m in projections)
    assert weight_bytes_per_device(model) == {
        "cpu": weight_bytes_per_device(fp32)["cpu"] - float_bytes + int8_bytes
    }
    gate = model.model.layers[0].mlp.gate_proj
    assert gate.bytes_per_weight == 1 + 4 / gate.in_features
    # The telemetry counts a dense token's MLP bytes as int8 plus scales, not fp32.
    sparsify(model, DensePolicy())
    mlps = sparse_mlps(model)
    read = bytes_read_per_token(model, mlps, [[] for _ in mlps])
    assert read["mlp_weight_bytes_read_per_token"] == pytest.approx(
        sum(m.dense_weights for m in mlps) * (1 + 4 / gate.in_features)
    )


@pytest.mark.parametrize("device", DEVICES)
def test_int8_dense_is_close_to_fp32_dense(device):
    """Per-output int8 moves each weight by at most half a step (max |row| / 254); on the tiny
    model (rows of 32 to 64 weights, whose rounding errors hardly average out) the logits move
    by at most 10 % of their largest (measured: 6 %), and greedy tokens stay the same."""
    fp32 = sparsify(tiny_model().to(device), DensePolicy())
    model = sparsify(int8_model(device), DensePolicy())
    expected_tokens, expected = greedy(LeanDecoder(fp32, 16, compiled_step=False))
    ours = LeanDecoder(model, 16)
    assert isinstance(ours.static, StaticStep) == (device == "cuda")
    tokens, logits = greedy(ours)
    assert tokens == expected_tokens
    for a, b in zip(logits, expected, strict=True):
        scale = b.abs().max().item()
        assert (a - b).abs().max().item() <= 0.1 * scale
        assert (a - b).abs().max().item() > 0  # the weights are int8 indeed


def _reference_and_ours(site: str, device: str, threshold: float):
    model = sparsify(int8_model(device), StaticPolicy(threshold, site=site))
    reference = LeanDecoder(model, 16, compiled_step=False)
    ours = LeanDecoder(model, 16, static_step=True)
    return model, reference, ours


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("site", SITES)
def test_each_site_equals_its_masked_int8_reference(site, device):
    """The static step (every projection and site through the int8 Triton kernels) and the
    Python loop's skipping path against the masked reference (every int8 weight read, the
    dropped activations zeroed), in fp32 activations."""
    model, reference, ours = _reference_and_ours(site, device, 0.3)
    mlps = sparse_mlps(model)
    if site == "input":
        assert isinstance(model.model.layers[0].self_attn.q_proj, SparseInt8Linear)
    for mlp in mlps:
        mlp.recording = True
    tokens, logits = greedy(ours)
    reads = [mlp.read_weights for mlp in mlps]
    for mlp in mlps:
        mlp.recording, mlp.read_weights = False, []
    assert min(reads[0][1:]) < mlps[0].dense_weights  # something was skipped
    skipping = greedy(reference)
    for mlp in mlps:
        mlp.skipping = False
    expected_tokens, expected = greedy(LeanDecoder(model, 16, compiled_step=False))
    assert tokens == skipping[0] == expected_tokens
    for i, (a, b, c) in enumerate(zip(logits, skipping[1], expected, strict=True)):
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5, msg=f"static, position {i}")
        torch.testing.assert_close(b, c, rtol=1e-5, atol=1e-5, msg=f"loop, position {i}")


@pytest.mark.parametrize("site", SITES)
def test_threshold_zero_equals_dense(site):
    dense = sparsify(int8_model(), DensePolicy())
    _, expected = greedy(LeanDecoder(dense, 16, static_step=True))
    _, _, ours = _reference_and_ours(site, "cpu", 0.0)
    _, logits = greedy(ours)
    for a, b in zip(logits, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_site_changes_re_lay_int8_weights_exactly():
    """h -> input -> gate -> dense: each int8 matrix is transposed back and forth, never
    requantized."""
    model = int8_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for site in ("h", "input", "gate"):
        sparsify(model, StaticPolicy(0.3, site=site))
    sparsify(model, DensePolicy())
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0, msg=key)
    assert model.model.layers[0].mlp.down_proj.transposed
    assert not model.model.layers[0].self_attn.q_proj.transposed


def test_what_int8_does_not_take_is_refused():
    model = sparsify(tiny_model(), DensePolicy())
    with pytest.raises(TypeError, match="before sparsify"):
        quantize_model_int8(model)
    with pytest.raises(ValueError, match="fp32 weights"):
        sparsify(int8_model(), PredictorPolicy(predictor="p.pt"))


@pytest.mark.parametrize("tied", [False, True])
def test_the_loader_writes_an_int8_checkpoint_once_and_reads_it(tmp_path, tied):
    """``load_model(dtype="int8")``: the offline checkpoint (quantized from the weights as
    stored, the rest bf16) read onto a meta-built model equals quantizing the loaded model."""
    source = tmp_path / "model"
    fp32 = tiny_model()
    if tied:
        fp32.config.tie_word_embeddings = True
        fp32.tie_weights()
    fp32.save_pretrained(source)
    tiny_tokenizer().save_pretrained(source)
    loaded = load_model(source, dtype="int8", cache_dir=tmp_path / "cache")
    (entry,) = (tmp_path / "cache").glob("*.int8")
    written = {p.name: p.stat().st_mtime_ns for p in entry.iterdir()}
    expected = quantize_model_int8(fp32).state_dict()
    state = loaded.model.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        exact = key.endswith(".scales") or value.dtype == torch.int8
        want = value if exact else value.to(torch.bfloat16)
        torch.testing.assert_close(state[key], want, rtol=0, atol=0, msg=key)
    if tied:
        assert loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight
    again = load_model(source, dtype="int8", cache_dir=tmp_path / "cache").model
    assert {p.name: p.stat().st_mtime_ns for p in entry.iterdir()} == written
    with torch.inference_mode():
        ids = torch.tensor([PROMPT])
        torch.testing.assert_close(again(input_ids=ids).logits, loaded.model(input_ids=ids).logits)


def test_the_loader_gives_int8_projections_and_bf16_rest(tiny_dir, tmp_path):
    loaded = load_model(tiny_dir, dtype="int8", cache_dir=tmp_path)
    model = loaded.model
    assert is_int8(model)
    assert isinstance(model.model.layers[0].mlp.down_proj, Int8Linear)
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert model.lm_head.weight.dtype == torch.bfloat16
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([PROMPT])).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    # A generation's provenance names the weights as they are, not the bf16 left around them.
    assert machine_provenance(model, str(tiny_dir))["weight_format"] == (
        "int8 projections with fp32 scales, torch.bfloat16 elsewhere from a directory"
    )
