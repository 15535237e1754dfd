"""GGUF weights kept in their block formats (``inference/quantized.py``,
``csrc/quant_kernels.cpp``): each SIMD path against the scalar reference, each kernel against
torch on the dequantized weights, and a tiny random model of each format against the fp32 model
holding the same stored weights."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

from inference.decoder import LeanDecoder, compiled_step_unsupported
from inference.generate import generate
from inference.kernels import compiled_kernels
from inference.loading import placed_dtype
from inference.policies import SITES, DensePolicy, Policy, StaticPolicy
from inference.quantized import (
    FORMATS,
    QuantLinear,
    block_formats,
    bytes_per_weight,
    is_quantized,
    load_gguf_quantized,
    quantize_model,
    rounded_activation,
    stored_reference,
    write_gguf,
    write_tensors,
)
from inference.random_model import random_llama
from inference.sparse_mlp import sparse_mlps
from inference.sparsify import sparsify
from inference.telemetry import bytes_read_per_token, weight_bytes_per_device

kernels = compiled_kernels()
needs_kernels = pytest.mark.skipif(kernels is None, reason="compiled kernels not built")


def quant_tiny(seed: int = 0):
    """The tiny shape widened so that every output dimension is whole blocks of 32 (the
    transposed layout needs it): hidden 64, kv heads' width 32."""
    return random_llama("tiny", seed=seed, std=0.3, hidden_size=64, intermediate_size=128,
                        max_position_embeddings=64)  # fmt: skip


def random_blocks(fmt: str, rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    weight = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    return torch.from_numpy(quantize(weight.numpy(), FORMATS[fmt]))


@pytest.fixture
def isa():
    """Restore the instruction-set path a test forces."""
    before = kernels.set_quant_isa("scalar")
    yield
    kernels.set_quant_isa(before)


@needs_kernels
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_simd_path_equals_the_scalar_reference(fmt, isa):
    blocks, qtype = random_blocks(fmt, 96, 128), int(FORMATS[fmt])
    x = torch.randn(128)
    x_t = torch.randn(96)
    kernels.set_quant_isa("scalar")
    weight = kernels.quant_dequantize(blocks, qtype)
    dot, axpy = kernels.quant_matvec(blocks, qtype, x), kernels.quant_rows_axpy(blocks, qtype, x_t)
    # The row dot takes x rounded to Q8_0 as gguf rounds it (one byte off would show: ~1e-3).
    torch.testing.assert_close(dot, weight @ rounded_activation(x), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(axpy, x_t @ weight, rtol=1e-5, atol=1e-4)
    assert len(kernels.quant_isas()) > 1  # the build machine has AVX2 at least
    for path in kernels.quant_isas():
        kernels.set_quant_isa(path)
        torch.testing.assert_close(kernels.quant_matvec(blocks, qtype, x), dot)
        torch.testing.assert_close(kernels.quant_rows_axpy(blocks, qtype, x_t), axpy)


@needs_kernels
def test_kernels_refuse_bad_blocks():
    blocks = random_blocks("q4_1", 4, 64)
    with pytest.raises(RuntimeError, match="not supported"):
        kernels.quant_matvec(blocks, 12, torch.randn(64))  # Q4_K: no kernels
    with pytest.raises(RuntimeError, match="whole blocks"):
        kernels.quant_matvec(blocks[:, :30].contiguous(), int(FORMATS["q4_1"]), torch.randn(64))
    with pytest.raises(RuntimeError, match="x must be fp32"):
        kernels.quant_matvec(blocks, int(FORMATS["q4_1"]), torch.randn(63))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_quant_linear_in_both_layouts(fmt):
    qtype = FORMATS[fmt]
    linear = QuantLinear(random_blocks(fmt, 64, 96), qtype, 96, 64)
    assert linear.stored_bytes == 64 * 96 * bytes_per_weight(qtype)
    weight = linear.dequantized()
    x = torch.randn(1, 1, 96)
    expected = F.linear(rounded_activation(x), weight)
    torch.testing.assert_close(linear(x), expected, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(expected, F.linear(x, weight), rtol=1e-5, atol=1e-4)
    file_blocks = linear.blocks
    linear.set_layout("transposed")
    relaid = linear.dequantized()
    assert linear.blocks.shape == (96, 64 * bytes_per_weight(qtype))
    torch.testing.assert_close(linear(x), F.linear(x, relaid), rtol=1e-5, atol=1e-4)  # fp32 x
    # Requantized: close to the file's weights, not equal (docs/engine.md measures the cost).
    scale = weight.abs().max()
    assert (relaid - weight).abs().max() < (0.02 if fmt == "q8_0" else 0.2) * scale
    linear.set_layout("file")
    assert linear.blocks is file_blocks  # back to the file's blocks exactly
    with pytest.raises(ValueError, match="layout must be"):
        linear.set_layout("columns")


def test_quant_linear_refuses_a_format_without_kernels():
    with pytest.raises(ValueError, match="no kernels for GGML type Q4_K"):
        QuantLinear(torch.zeros(4, 144, dtype=torch.uint8), 12, 256, 4)


def greedy(model, ids, n):
    decoder = LeanDecoder(model, ids.shape[1] + n)
    logits, tokens, steps = decoder.prefill(ids), [], []
    for _ in range(n):
        token = logits.argmax(-1, keepdim=True)
        tokens.append(token.item())
        logits = decoder.step(token)
        steps.append(logits)
    return tokens, torch.cat(steps)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_tiny_model_of_each_format_decodes_as_its_stored_weights(fmt, tmp_path):
    source = quant_tiny()
    path = write_gguf(source, tmp_path / f"tiny-{fmt}.gguf", fmt)
    model = load_gguf_quantized(path, source.config)
    reference = rounding_one_token(stored_reference(quant_tiny(), fmt))  # the same weights
    projections = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert len(projections) == 7 * 3 + 1  # every projection and the LM head, as blocks
    assert not any(p.dim() == 2 for p in model.parameters())  # no fp32 matrix anywhere
    ids = torch.tensor([[1, 9, 17, 33, 5]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits)
        tokens, logits = greedy(model, ids, 8)
        ref_tokens, ref_logits = greedy(reference, ids, 8)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
    assert tokens == ref_tokens


def round_one_token(module, args):
    """A forward pre-hook: one token's input rounded to Q8_0 by gguf's own quantizer."""
    (x,) = args
    if x.shape[:-1].numel() != 1:
        return None
    stored = quantize(x.detach().numpy(), GGMLQuantizationType.Q8_0)
    return (torch.from_numpy(dequantize(stored, GGMLQuantizationType.Q8_0)).view(x.shape),)


def rounding_one_token(model):
    """``model`` (fp32) with a decoded token's x rounded before every projection, as the
    blocks' GEMV in the file's layout rounds it."""
    for linear in model.modules():
        if isinstance(linear, torch.nn.Linear):
            linear.register_forward_pre_hook(round_one_token)
    return model


def tiny_stored(fmt: str, tmp_path):
    source = quant_tiny()
    return load_gguf_quantized(
        write_gguf(source, tmp_path / f"tiny-{fmt}.gguf", fmt), source.config
    )


def decode_logits(model, ids, tokens):
    """Logits of each decoded token, the tokens fed in (so two runs decode the same inputs)."""
    decoder = LeanDecoder(model, ids.shape[1] + len(tokens))
    with torch.no_grad():
        decoder.prefill(ids)
        return torch.cat([decoder.step(torch.tensor([[t]])) for t in tokens])


def set_skipping(model, on: bool) -> None:
    for mlp in sparse_mlps(model):
        mlp.skipping = on


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_site_on_blocks_equals_its_masked_reference(fmt, site, tmp_path):
    model = tiny_stored(fmt, tmp_path)
    sparsify(model, StaticPolicy(0.3, site=site))
    ids, tokens = torch.tensor([[1, 9, 17, 33, 5]]), [7, 21, 40, 12, 3]
    mlps = sparse_mlps(model)
    for mlp in mlps:
        mlp.recording = True
    skipping = decode_logits(model, ids, tokens)
    kept = [f for mlp in mlps for f in mlp.active_fractions[1:]]  # [0]: the prompt
    assert 0.05 < sum(kept) / len(kept) < 0.95  # the threshold keeps some, not all
    set_skipping(model, False)
    torch.testing.assert_close(skipping, decode_logits(model, ids, tokens), rtol=1e-4, atol=1e-4)
    layouts = {name: m.layout for name, m in model.named_modules() if isinstance(m, QuantLinear)}
    transposed = {name for name, layout in layouts.items() if layout == "transposed"}
    if site == "input":  # every projection re-laid out; the LM head as stored
        assert len(transposed) == 7 * 3 and "lm_head" not in transposed
    else:  # down only: its rows are the ones skipped
        assert transposed == {f"model.layers.{i}.mlp.down_proj" for i in range(3)}


def test_a_dense_policy_reads_the_files_blocks_after_any_site(tmp_path):
    model = tiny_stored("q4_1", tmp_path)
    ids, tokens = torch.tensor([[1, 9, 17]]), [7, 21, 40]
    sparsify(model, DensePolicy())
    dense = decode_logits(model, ids, tokens)
    for site in SITES:
        sparsify(model, StaticPolicy(0.3, site=site))
        sparsify(model, DensePolicy())
        linears = [m for m in model.modules() if isinstance(m, QuantLinear)]
        assert all(m.layout == "file" and m.blocks is m.file_blocks for m in linears)
        assert torch.equal(decode_logits(model, ids, tokens), dense)


def test_telemetry_counts_bytes_as_stored(tmp_path):
    model = tiny_stored("q4_1", tmp_path)
    sparsify(model, DensePolicy())
    stored = sum(m.stored_bytes for m in model.modules() if isinstance(m, QuantLinear))
    read = bytes_read_per_token(model, sparse_mlps(model), [[] for _ in range(3)])
    assert read["dense_weight_bytes_per_token"] == stored  # 0.625 bytes a Q4_1 weight
    assert weight_bytes_per_device(model)["cpu"] < 1.1 * stored  # no fp32 copy held


def test_predictor_policies_refuse_blocks(tmp_path):
    model = tiny_stored("q8_0", tmp_path)
    with pytest.raises(ValueError, match="MODEL_DTYPE=float32"):
        policy = {"kind": "predictor", "threshold": 0.5, "predictor": str(tmp_path / "p.st")}
        sparsify(model, Policy.from_json(policy))


@needs_kernels
@pytest.mark.parametrize("threshold", [0.0, 0.3])
@pytest.mark.parametrize("site", SITES)
def test_compiled_step_on_blocks_is_the_python_loop_bit_for_bit(site, threshold, tmp_path):
    model = tiny_stored("q4_1", tmp_path)
    sparsify(model, StaticPolicy(threshold, site=site))
    ids, tokens = torch.tensor([[1, 9, 17, 33]]), [7, 21, 40, 12]
    compiled = LeanDecoder(model, 8)
    assert compiled.compiled is not None, compiled_step_unsupported(compiled)
    python = LeanDecoder(model, 8, compiled_step=False)
    with torch.no_grad():
        compiled.prefill(ids), python.prefill(ids)
        for token in tokens:
            step = torch.tensor([[token]])
            assert torch.equal(compiled.step(step), python.step(step))


def test_placed_dtype_keeps_blocks_only_whole_on_the_cpu():
    assert placed_dtype("auto") == "auto"
    assert placed_dtype("auto", device="cuda") == "float32"
    assert placed_dtype("auto", split=True) == "float32"
    assert placed_dtype("bfloat16", device="cuda") == "bfloat16"


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_quantize_model_holds_what_gguf_stores(fmt):
    model = quantize_model(quant_tiny(), fmt)
    assert block_formats(model) == [fmt.upper()]
    assert not any(p.dim() == 2 for p in model.parameters())  # no float matrix left
    assert len([m for m in model.modules() if isinstance(m, QuantLinear)]) == 7 * 3 + 1
    reference = rounding_one_token(stored_reference(quant_tiny(), fmt))
    ids = torch.tensor([[1, 9, 17, 33, 5]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits)
    assert greedy(model, ids, 6)[0] == greedy(reference, ids, 6)[0]


def k_blocks(qtype: GGMLQuantizationType, rows: int, cols: int, seed: int) -> np.ndarray:
    """Random ``qtype`` (Q4_K, Q6_K) blocks ``[rows, row bytes]``: gguf has no quantizer for
    them, so the bytes are drawn and the fp16 scales set to finite values."""
    block, block_bytes = GGML_QUANT_SIZES[qtype]
    blocks = np.random.default_rng(seed).integers(0, 256, (rows, cols // block, block_bytes))
    blocks = blocks.astype(np.uint8)
    scale = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
    if qtype == GGMLQuantizationType.Q4_K:  # d, dmin first
        blocks[..., 0:2] = blocks[..., 2:4] = scale
    else:  # Q6_K: d last
        blocks[..., -2:] = scale
    return blocks.reshape(rows, -1)


@pytest.mark.parametrize("qtype", [GGMLQuantizationType.Q4_K, GGMLQuantizationType.Q6_K])
def test_a_k_quant_file_is_refused_or_converted_as_asked(qtype, tmp_path):
    source = random_llama("tiny", hidden_size=256, intermediate_size=512)
    shapes = {name: tuple(t.shape) for name, t in source.state_dict().items()}
    drawn = {}

    def draw(name):
        rows, *cols = shapes[name]
        if not cols:
            return np.ones(rows, dtype=np.float32)
        drawn[name] = k_blocks(qtype, rows, cols[0], seed=len(drawn))
        return drawn[name]

    path = write_tensors(source.config, shapes, draw, tmp_path / "k.gguf", qtype)
    with pytest.raises(ValueError, match=f"{qtype.name}, which has no kernels.*MODEL_QUANTIZE"):
        load_gguf_quantized(path, source.config)
    model = load_gguf_quantized(path, source.config, convert="q8_0")
    assert block_formats(model) == ["Q8_0"]
    expected = quantize(dequantize(drawn["model.layers.1.mlp.down_proj.weight"], qtype),
                        GGMLQuantizationType.Q8_0)  # fmt: skip
    assert np.array_equal(model.model.layers[1].mlp.down_proj.blocks.numpy(), expected)
    ids = torch.tensor([[1, 9, 17]])
    for site in SITES:
        sparsify(model, StaticPolicy(0.3, site=site))
        assert len(greedy(model, ids, 3)[0]) == 3


@pytest.fixture(scope="module")
def shipped():
    from inference.loading import load_model

    loaded = load_model(dtype="auto")  # the shipped Q4_1 file, its blocks as stored
    assert is_quantized(loaded.model)
    return loaded


@pytest.mark.model
@needs_kernels
@pytest.mark.parametrize("site", SITES)
def test_real_model_all_hot_site_decodes_as_dense_on_its_blocks(shipped, site):
    # Threshold 0 reads the site's blocks with the dense kernels; a threshold below every
    # activation runs the site's skipping kernels, keeping every row: the same greedy tokens.
    prompt = "Write a Python function that returns the largest of three numbers."
    dense = generate(shipped, prompt, StaticPolicy(0.0, site=site), max_new_tokens=16)
    hot = generate(shipped, prompt, StaticPolicy(1e-30, site=site), max_new_tokens=16)
    assert hot.achieved_sparsity < 1e-3  # all hot (an exact zero may be skipped)
    assert hot.token_ids == dense.token_ids, f"site {site}: greedy tokens differ"
