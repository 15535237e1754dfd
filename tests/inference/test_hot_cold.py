import copy

import pytest
import torch

from inference.generate import generate
from inference.hot_cold import HotColdMLP, hot_order, split_hot_cold
from inference.policies import DensePolicy, StaticPolicy
from inference.sparse_mlp import sparse_mlps, sparsify
from tests.inference.conftest import tiny_model

FREQUENCY = torch.rand(3, 96, generator=torch.Generator().manual_seed(0))


def pair(threshold: float):
    reference = sparsify(tiny_model(), StaticPolicy(threshold))
    split = split_hot_cold(copy.deepcopy(reference), FREQUENCY, hot_fraction=0.25)
    return reference, split


@pytest.mark.parametrize("threshold", [0.0, 0.3])
@pytest.mark.parametrize("tokens", [1, 6])
def test_split_layer_output_unchanged(threshold, tokens):
    reference, split = pair(threshold)
    x = torch.randn(1, tokens, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for ref_layer, split_layer in zip(reference.model.layers, split.model.layers, strict=True):
            assert isinstance(split_layer.mlp, HotColdMLP)
            torch.testing.assert_close(split_layer.mlp(x), ref_layer.mlp(x))


def test_split_model_logits_and_state_dict_keys_unchanged():
    reference, split = pair(0.3)
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(split(ids).logits, reference(ids).logits)
    assert set(split.state_dict()) == set(reference.state_dict())


def test_hot_block_holds_the_most_frequent_neurons():
    _, split = pair(0.3)
    mlp = split.model.layers[1].mlp
    assert mlp.num_hot == 24
    assert set(mlp.order[:24].tolist()) == set(FREQUENCY[1].topk(24).indices.tolist())
    assert torch.equal(hot_order(torch.tensor([0.1, 0.9, 0.5])), torch.tensor([1, 2, 0]))


def test_generate_reports_skipped_work_and_same_tokens(tiny):
    reference = generate(tiny, "w1 w2 w3", StaticPolicy(0.3), max_new_tokens=6)
    split_hot_cold(tiny.model, FREQUENCY, hot_fraction=0.25)
    result = generate(tiny, "w1 w2 w3", StaticPolicy(0.3), max_new_tokens=6)
    assert result.token_ids == reference.token_ids
    assert result.active_fraction == pytest.approx(reference.active_fraction)
    assert reference.mlp_bytes_skipped_per_token == 0.0
    assert result.mlp_bytes_skipped_per_token > 0.0
    assert result.mlp_flops_skipped_per_token == pytest.approx(
        2 * result.mlp_bytes_skipped_per_token / 4
    )
    # Only down's inactive cold columns are skipped: at most a third of the MLP.
    assert 0.0 < result.mlp_bytes_skipped_fraction <= 1 / 3
    dense = generate(tiny, "w1 w2 w3", DensePolicy(), max_new_tokens=3)
    assert dense.mlp_bytes_skipped_fraction == 0.0


def test_split_is_refused_twice_and_checks_shapes():
    _, split = pair(0.3)
    with pytest.raises(ValueError, match="already split"):
        split_hot_cold(split, FREQUENCY, 0.5)
    with pytest.raises(ValueError, match="layers"):
        split_hot_cold(tiny_model(), FREQUENCY[:2], 0.5)
    with pytest.raises(ValueError, match="hot_fraction"):
        split_hot_cold(tiny_model(), FREQUENCY, 1.5)


def test_sparsify_reconfigures_a_split_model():
    _, split = pair(0.3)
    mlps = sparse_mlps(split)
    sparsify(split, StaticPolicy(0.1))
    assert sparse_mlps(split) == mlps
    assert all(m.threshold == 0.1 for m in mlps)


@pytest.mark.model
def test_real_model_profile_calibrate_split():
    from inference.loading import load_model
    from inference.profile import calibrated_policy, humaneval_prompts, profile_model

    loaded = load_model()  # own copy: splitting permutes weights in place
    profile = profile_model(loaded, humaneval_prompts(2), max_new_tokens=2)
    assert profile.counts.shape[:2] == (30, 1536)
    policy = calibrated_policy(profile, 0.5)
    ids = torch.tensor([[1, 504, 3575, 282, 4649, 314]])
    sparsify(loaded.model, policy)
    with torch.no_grad():
        before = loaded.model(ids).logits
        split_hot_cold(loaded.model, profile.frequency(0.05), hot_fraction=0.2)
        after = loaded.model(ids).logits
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    result = generate(loaded, "Name a colour.", policy, max_new_tokens=6)
    assert 0.3 < result.active_fraction < 0.7
    assert result.mlp_bytes_skipped_fraction > 0.0
