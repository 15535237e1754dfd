import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache

from inference.generate import generate
from inference.policies import CalibratedPolicy, DensePolicy, StaticPolicy
from inference.sparse_mlp import SparseLinear, SparseMLP, set_thresholds, sparse_mlps
from inference.sparsify import sparsify
from tests.inference.conftest import tiny_model


def logits(model: nn.Module, seed: int = 1) -> torch.Tensor:
    ids = torch.randint(
        0, model.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(seed)
    )
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_threshold_zero_equals_dense():
    model = tiny_model()
    dense = logits(model)
    sparsify(model, StaticPolicy(0.0))
    assert all(isinstance(layer.mlp, SparseMLP) for layer in model.model.layers)
    torch.testing.assert_close(logits(model), dense, rtol=0, atol=0)
    sparsify(model, DensePolicy())
    torch.testing.assert_close(logits(model), dense, rtol=0, atol=0)


def test_positive_threshold_changes_output_and_zero_restores_it():
    model = tiny_model()
    dense = logits(model)
    sparsify(model, StaticPolicy(0.5))
    assert not torch.allclose(logits(model), dense)
    sparsify(model, StaticPolicy(0.0))
    torch.testing.assert_close(logits(model), dense, rtol=0, atol=0)


def test_sparsify_twice_is_idempotent():
    model = tiny_model()
    sparsify(model, StaticPolicy(0.1))
    mlps = sparse_mlps(model)
    weights = [m.gate_proj.weight for m in mlps]
    once = logits(model)
    sparsify(model, StaticPolicy(0.1))
    assert sparse_mlps(model) == mlps
    assert all(not isinstance(m.gate_proj, SparseMLP) for m in sparse_mlps(model))
    assert [m.gate_proj.weight for m in sparse_mlps(model)] == weights
    torch.testing.assert_close(logits(model), once, rtol=0, atol=0)
    sparsify(model, StaticPolicy(0.3))  # re-configures, does not wrap again
    assert sparse_mlps(model) == mlps
    assert [m.threshold for m in mlps] == [0.3] * len(mlps)


def test_weights_are_shared_and_state_dict_keys_unchanged():
    model = tiny_model()
    keys = set(model.state_dict())
    gate = model.model.layers[0].mlp.gate_proj.weight
    sparsify(model, StaticPolicy(0.1))
    assert model.model.layers[0].mlp.gate_proj.weight is gate
    assert set(model.state_dict()) == keys
    fresh = tiny_model(seed=5)
    fresh.load_state_dict(model.state_dict())
    sparsify(fresh, StaticPolicy(0.1))
    torch.testing.assert_close(logits(fresh), logits(model), rtol=0, atol=0)


def test_matches_explicit_masking():
    model = tiny_model()
    mlp = model.model.layers[0].mlp
    x = torch.randn(1, 5, model.config.hidden_size)
    h = mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)
    expected = mlp.down_proj(torch.where(h.abs() < 0.2, 0.0, h))
    torch.testing.assert_close(SparseMLP(mlp, threshold=0.2)(x), expected)


def test_active_fraction_recorded():
    model = tiny_model()
    sparsify(model, StaticPolicy(0.0))
    for m in sparse_mlps(model):
        m.recording = True
    logits(model)
    assert [m.active_fractions for m in sparse_mlps(model)] == [[1.0]] * 3

    set_thresholds(model, [0.2, 0.2, 0.2])
    for m in sparse_mlps(model):
        m.active_fractions = []
    logits(model)
    fractions = [f for m in sparse_mlps(model) for f in m.active_fractions]
    assert len(fractions) == 3
    assert all(0.0 < f < 1.0 for f in fractions)


def test_rejects_non_llama_mlp():
    with pytest.raises(TypeError, match="gate_proj"):
        SparseMLP(nn.Linear(2, 2))


def test_set_thresholds_checks_layer_count():
    model = sparsify(tiny_model(), StaticPolicy(0.1))
    with pytest.raises(ValueError, match="3 sparse MLP layers"):
        set_thresholds(model, [0.1])


SITES = ("h", "gate", "input")


def _one_token_logits(model: nn.Module, ids: list[int]) -> torch.Tensor:
    """Prompt then one decoded token through the cache: the decode step takes the skipping path."""
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=torch.tensor([ids[:-1]]), past_key_values=cache, use_cache=True)
        return model(input_ids=torch.tensor([ids[-1:]]), past_key_values=cache).logits


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("use_kernel", [False, True])
def test_skipping_path_equals_the_masked_reference(site, use_kernel):
    model = tiny_model()
    sparsify(model, StaticPolicy(0.3, site=site))
    for mlp in sparse_mlps(model):
        mlp.use_kernel = use_kernel
    ids = [1, 9, 17, 30, 41, 5]
    skipping = _one_token_logits(model, ids)
    for mlp in sparse_mlps(model):
        mlp.skipping = False
    reference = _one_token_logits(model, ids)
    torch.testing.assert_close(skipping, reference, rtol=1e-5, atol=1e-5)
    dense = _one_token_logits(sparsify(tiny_model(), DensePolicy()), ids)
    assert not torch.allclose(skipping, dense, atol=1e-3), f"site {site}: threshold had no effect"


@pytest.mark.parametrize("site", SITES)
def test_threshold_zero_is_bit_identical_to_dense_at_every_site(site):
    model = tiny_model()
    ids = [1, 9, 17, 30, 41, 5]
    sparsify(model, StaticPolicy(0.3, site=site))  # lay the weights out for the site
    sparsify(model, StaticPolicy(0.0, site=site))
    zero = _one_token_logits(model, ids)
    sparsify(model, DensePolicy())  # keeps the layout
    torch.testing.assert_close(zero, _one_token_logits(model, ids), rtol=0, atol=0)
    torch.testing.assert_close(logits(model), logits(tiny_model()), rtol=1e-5, atol=1e-5)


def test_sites_switch_in_place_without_copying_the_model():
    model = tiny_model()
    keys = {k: v.clone() for k, v in model.state_dict().items()}
    sparsify(model, StaticPolicy(0.2, site="input"))
    attention = model.model.layers[0].self_attn
    assert isinstance(attention.q_proj, SparseLinear) and isinstance(attention.o_proj, SparseLinear)
    assert attention.q_proj.weight.t().is_contiguous(), "columns are stored as rows"
    assert set(model.state_dict()) == set(keys)
    for name, value in model.state_dict().items():
        assert torch.equal(value, keys[name]), f"{name} changed value when laid out"
    params_bytes = sum(p.numel() for p in model.parameters())
    sparsify(model, StaticPolicy(0.2, site="gate"))
    assert not isinstance(model.model.layers[0].self_attn.q_proj, SparseLinear)
    assert model.model.layers[0].mlp.gate_proj.weight.is_contiguous()
    assert sum(p.numel() for p in model.parameters()) == params_bytes
    for name, value in model.state_dict().items():
        assert torch.equal(value, keys[name]), f"{name} changed value switching back"


def test_input_site_takes_four_thresholds_per_layer():
    model = tiny_model()
    policy = CalibratedPolicy(0.5, ((0.1, 0.2, 0.3, 0.4),) * 3, site="input")
    sparsify(model, policy)
    layer = model.model.layers[1]
    assert [layer.self_attn.k_proj.threshold, layer.self_attn.o_proj.threshold] == [0.1, 0.2]
    assert [layer.mlp.up_proj.threshold, layer.mlp.down_proj.threshold] == [0.3, 0.4]
    set_thresholds(model, policy.layer_thresholds(3), 2.0)
    assert layer.mlp.down_proj.threshold == 0.8


@pytest.mark.parametrize("site", SITES)
def test_generate_records_the_bytes_each_site_reads(tiny, site):
    dense = generate(tiny, "w1 w2 w3", DensePolicy(), max_new_tokens=5)
    sparse = generate(tiny, "w1 w2 w3", StaticPolicy(0.4, site=site), max_new_tokens=5)
    assert dense.weight_bytes_read_per_token == dense.dense_weight_bytes_per_token
    assert dense.mlp_bytes_skipped_fraction == 0.0
    assert sparse.dense_weight_bytes_per_token == dense.dense_weight_bytes_per_token
    assert sparse.weight_bytes_read_per_token < dense.weight_bytes_read_per_token
    total = (
        sparse.mlp_weight_bytes_read_per_token
        + sparse.attention_weight_bytes_read_per_token
        + 4 * tiny.model.lm_head.weight.numel()
    )
    assert sparse.weight_bytes_read_per_token == pytest.approx(total)
    skipped_attention = (
        sparse.attention_weight_bytes_read_per_token < dense.attention_weight_bytes_read_per_token
    )
    assert skipped_attention == (site == "input"), "only the input site skips attention bytes"
    mlp = sparse.mlp_weight_bytes_read_per_token / dense.mlp_weight_bytes_read_per_token
    kept = sparse.active_fraction
    if site == "h":  # gate and up whole, down for kept neurons
        assert mlp == pytest.approx((2 + kept) / 3)
    elif site == "gate":  # gate whole, up and down for kept neurons
        assert mlp == pytest.approx((1 + 2 * kept) / 3)
    else:
        assert mlp < 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("site", SITES)
def test_each_site_on_cuda_equals_the_cpu_masked_reference(site):
    ids = [1, 9, 17, 30, 41, 5]
    cpu = sparsify(tiny_model(), StaticPolicy(0.3, site=site))
    for mlp in sparse_mlps(cpu):
        mlp.skipping = False
    gpu = sparsify(tiny_model().to("cuda"), StaticPolicy(0.3, site=site))
    cache = DynamicCache(config=gpu.config)
    with torch.no_grad():
        gpu(input_ids=torch.tensor([ids[:-1]], device="cuda"), past_key_values=cache)
        out = gpu(input_ids=torch.tensor([ids[-1:]], device="cuda"), past_key_values=cache)
    torch.testing.assert_close(out.logits.cpu(), _one_token_logits(cpu, ids), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("threshold", [0.0, 0.4, 0.8, 1000.0])
def test_threshold_kernels_equal_their_pytorch_paths(threshold):
    from inference.kernels import compiled_kernels, gate_ffn, h_ffn, input_matvec

    if compiled_kernels() is None:
        pytest.skip("the compiled kernel could not be built here")
    g = torch.Generator().manual_seed(1)
    f, d = 300, 64
    gate, up, down_t = (torch.randn(f, d, generator=g) / 8 for _ in range(3))
    x = torch.randn(d, generator=g)
    rows = torch.randn(d, 96, generator=g)
    for name, call in [
        ("input_matvec", lambda k: input_matvec(rows, x, threshold, use_kernel=k)),
        ("h_ffn", lambda k: h_ffn(gate, up, down_t, x, threshold / 8, nn.SiLU(), use_kernel=k)),
        ("gate_ffn", lambda k: gate_ffn(gate, up, down_t, x, threshold, nn.SiLU(), use_kernel=k)),
    ]:
        (out, kept), (ref, ref_kept) = call(True), call(False)
        assert kept == ref_kept, f"{name}: kept {kept} rows, the PyTorch path {ref_kept}"
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5, msg=f"{name} differs")
        if threshold == 0.0:
            assert kept == rows.shape[0] if name == "input_matvec" else kept == f
        if threshold == 1000.0:
            assert kept == 0 and not out.any(), f"{name}: nothing passes, yet it kept rows"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(4, 16), (7, 33), (1536, 576), (61, 1030)])
def test_dense_gemv_equals_aten_in_both_layouts(shape, threads):
    from inference.kernels import compiled_kernels, dense_linear

    if compiled_kernels() is None:
        pytest.skip("the compiled kernel could not be built here")
    g = torch.Generator().manual_seed(2)
    weight = torch.randn(*shape, generator=g)
    transposed = weight.t().contiguous().t()  # the input site's and down's layout
    x = torch.randn(1, 1, shape[1], generator=g)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        exact = F.linear(x.double(), weight.double())
        for w in (weight, transposed):
            out = dense_linear(x, w)
            assert out.shape == (1, 1, shape[0])
            # fp32 sums in another order than ATen's: as close to the exact sum as ATen's is
            aten_error = (F.linear(x, w).double() - exact).abs().max().item()
            error = (out.double() - exact).abs().max().item()
            assert error <= 2 * aten_error + 1e-6, f"error {error:.2g}, ATen's {aten_error:.2g}"
    finally:
        torch.set_num_threads(previous)
    prompt = torch.randn(3, shape[1], generator=g)  # several rows: ATen's own
    assert torch.equal(dense_linear(prompt, weight), F.linear(prompt, weight))
