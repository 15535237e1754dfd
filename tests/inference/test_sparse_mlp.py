import pytest
import torch
from torch import nn

from inference.policies import DensePolicy, StaticPolicy
from inference.sparse_mlp import SparseMLP, set_thresholds, sparse_mlps
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
