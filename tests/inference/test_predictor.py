"""Predictor MLP (gate/up/down gathered for predicted-active neurons) and predictor files."""

import pytest
import torch
import torch.nn.functional as F

from inference.generate import generate
from inference.loading import LoadedModel
from inference.policies import DensePolicy, Policy, PredictorPolicy, StaticPolicy
from inference.predictor import (
    PredictorMLP,
    Predictors,
    attach_predictors,
    predictor_policy_for_recall,
)
from inference.sparse_mlp import SparseMLP, sparse_mlps
from inference.sparsify import sparsify
from tests.inference.conftest import tiny_model

# fp32 sums in a different order (gathered kernel / embedding_bag vs one matmul).
TOL = dict(rtol=1e-5, atol=1e-5)


def _mlp(seed: int = 0) -> PredictorMLP:
    model = tiny_model(seed)
    return PredictorMLP(SparseMLP(model.model.layers[0].mlp))


def _reference(mlp: PredictorMLP, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Masked dense reference: the unmodified weights, h zeroed outside ``keep``."""
    h = F.silu(F.linear(x, mlp.gate_proj.weight)) * F.linear(x, mlp.up_proj.weight)
    return F.linear(h * keep, mlp.down_proj.weight)


def _random_predictor(mlp: PredictorMLP, rank: int = 8, bias: float = 0.0, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    f, _, d = mlp.gu.shape
    mlp.set_predictor(
        torch.randn(rank, d, generator=gen),
        torch.zeros(rank),
        torch.randn(f, rank, generator=gen),
        torch.full((f,), bias),
    )


@pytest.mark.parametrize("use_kernel", [False, True])
def test_gathered_equals_masked_dense_reference(use_kernel):
    mlp = _mlp()
    mlp.use_kernel = use_kernel
    x = torch.randn(32)
    for n in (0, 1, 17, 96):
        active = torch.randperm(96)[:n].sort().values
        keep = torch.zeros(96)
        keep[active] = 1.0
        out, read = mlp.gathered(x, active)
        torch.testing.assert_close(out, _reference(mlp, x, keep), **TOL)
        assert read == 3 * n * 32  # no predictor attached: only the gathered rows


def test_layout_keeps_weights_and_dense_output():
    model = tiny_model()
    x = torch.randn(1, 5, 32)
    expected = model.model.layers[0].mlp(x)
    mlp = PredictorMLP(SparseMLP(model.model.layers[0].mlp))
    assert mlp.gu.is_contiguous() and mlp.gu.shape == (96, 2, 32)
    torch.testing.assert_close(mlp(x), expected, **TOL)
    torch.testing.assert_close(mlp(x[:, :1]), model.model.layers[0].mlp(x[:, :1]), **TOL)


def test_all_predicted_active_equals_dense():
    mlp = _mlp()
    dense = lambda x: _reference(mlp, x, torch.ones(96))  # noqa: E731
    _random_predictor(mlp, bias=1e4)  # every sigmoid ~1
    mlp.predict_threshold = 0.5
    for x in (torch.randn(1, 1, 32), torch.randn(1, 4, 32)):
        torch.testing.assert_close(mlp(x), dense(x), **TOL)


def test_predicted_mask_and_bytes_read_accounting():
    mlp = _mlp()
    _random_predictor(mlp)
    mlp.predict_threshold = 0.5
    mlp.recording = True
    x = torch.randn(1, 1, 32)
    keep = mlp.predict(x)
    n = int(keep.sum())
    assert 0 < n < 96
    torch.testing.assert_close(mlp(x), _reference(mlp, x, keep.float()), **TOL)
    predictor_weights = 8 * 32 + 8 + 96 * 8 + 96
    # Gathered shapes: gate/up rows [n, 2, 32], down rows [n, 32], plus the predictor.
    assert mlp.read_weights == [n * 2 * 32 + n * 32 + predictor_weights]
    assert mlp.skipped_weights == [3 * 96 * 32 - mlp.read_weights[0]]
    assert mlp.active_fractions == [n / 96]


def _predictors(loaded, bias: float = 0.0) -> Predictors:
    layers = loaded.model.model.layers
    gen = torch.Generator().manual_seed(1)
    n = len(layers)
    return Predictors(
        fingerprint=loaded.fingerprint,
        eps=0.05,
        w1=[torch.randn(4, 32, generator=gen) for _ in range(n)],
        b1=[torch.zeros(4) for _ in range(n)],
        w2=[torch.randn(96, 4, generator=gen) for _ in range(n)],
        b2=[torch.full((96,), bias) for _ in range(n)],
    )


def test_save_load_round_trip_and_fingerprint_check(tiny, tmp_path):
    path = tmp_path / "pred.safetensors"
    predictors = _predictors(tiny)
    predictors.metrics = {"mean_recall": 0.9}
    predictors.save(path)
    again = Predictors.load(path)
    assert again.fingerprint == "tiny" and again.metrics == {"mean_recall": 0.9}
    torch.testing.assert_close(again.w2[2], predictors.w2[2])
    with pytest.raises(ValueError, match="trained on tiny"):
        attach_predictors(tiny.model, again, "another-model")
    with pytest.raises(FileNotFoundError):
        Predictors.load(tmp_path / "missing.safetensors")


def test_predictor_policy_all_active_generates_like_dense(tiny, tmp_path):
    dense = generate(tiny, "w1 w2 w3", DensePolicy(), max_new_tokens=6)
    path = tmp_path / "pred.safetensors"
    _predictors(tiny, bias=1e4).save(path)
    policy = Policy.from_json({"kind": "predictor", "threshold": 0.5, "predictor": str(path)})
    result = generate(tiny, "w1 w2 w3", policy, max_new_tokens=6)
    assert result.token_ids == dense.token_ids
    assert result.active_fraction == 1.0
    assert all(isinstance(m, PredictorMLP) for m in sparse_mlps(tiny.model))
    # Back to dense: the predictors are switched off, the layout stays, output is unchanged.
    sparsify(tiny.model, DensePolicy())
    assert generate(tiny, "w1 w2 w3", DensePolicy(), max_new_tokens=6).token_ids == dense.token_ids


def test_predictor_policy_skips_weights(tiny, tmp_path):
    path = tmp_path / "pred.safetensors"
    _predictors(tiny).save(path)
    result = generate(tiny, "w1 w2", PredictorPolicy(0.5, str(path)), max_new_tokens=5)
    assert 0.0 < result.active_fraction < 1.0
    assert result.achieved_sparsity == pytest.approx(1 - result.active_fraction)
    assert result.mlp_bytes_skipped_fraction > 0.0


def test_per_layer_predictor_thresholds(tiny, tmp_path):
    path = tmp_path / "pred.safetensors"
    predictors = _predictors(tiny)
    predictors.metrics = {"thresholds_for_recall": {"0.95": [0.0, 0.5, 1.0]}}
    predictors.save(path)
    policy = predictor_policy_for_recall(Predictors.load(path), str(path), 0.95)
    assert policy.to_dict() == {
        "kind": "predictor",
        "predictor": str(path),
        "target_recall": 0.95,
        "thresholds": [0.0, 0.5, 1.0],
    }
    assert Policy.from_json(policy.to_dict()) == policy
    result = generate(tiny, "w1 w2", policy, max_new_tokens=4)
    assert [m.predict_threshold for m in sparse_mlps(tiny.model)] == [0.0, 0.5, 1.0]
    assert result.active_fraction_per_layer[0] == 1.0  # threshold 0: every neuron
    assert result.active_fraction_per_layer[2] < result.active_fraction_per_layer[1]
    with pytest.raises(ValueError, match="no thresholds for recall 0.9"):
        predictor_policy_for_recall(Predictors.load(path), str(path), 0.9)
    with pytest.raises(ValueError, match="not both"):
        Policy.from_json(
            {"kind": "predictor", "predictor": "p", "threshold": 0.3, "thresholds": [0.1]}
        )


@pytest.mark.parametrize("site", ["h", "gate", "input"])
def test_a_magnitude_policy_after_a_predictor_skips_as_on_a_fresh_model(tmp_path, site):
    fresh, used = tiny_model(), tiny_model()
    path = tmp_path / "pred.safetensors"
    _predictors(LoadedModel(used, None, "tiny", "")).save(path)
    sparsify(used, PredictorPolicy(0.5, str(path)), "tiny")
    policy = StaticPolicy(0.3, site=site)
    sparsify(used, policy)
    assert not any(isinstance(m, PredictorMLP) for m in sparse_mlps(used))
    assert all(m.gate_proj.weight.is_contiguous() == (site != "input") for m in sparse_mlps(used))
    ids = torch.tensor([[1, 9, 17, 30]])
    with torch.no_grad():
        expected = sparsify(fresh, policy)(input_ids=ids).logits
        torch.testing.assert_close(used(input_ids=ids).logits, expected, **TOL)
    sparsify(used, PredictorPolicy(0.5, str(path)), "tiny")  # and back: attached again
    assert all(isinstance(m, PredictorMLP) for m in sparse_mlps(used))
