"""Alignment vectors: merged weights of two tiny random LLaMAs, their cache and their errors."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from inference.loading import load_model
from inference.merge import MergeMismatch, merge
from inference.policies import StaticPolicy
from inference.random_model import random_llama, word_tokenizer
from inference.sparse_mlp import SparseMLP
from inference.sparsify import sparsify
from tests.support.models import perturbed_copy, save_tiny


def _weights(path):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.state_dict()


@pytest.fixture
def pair(tmp_path):
    base = save_tiny(tmp_path / "base")
    aligned = perturbed_copy(base, tmp_path / "aligned", seed=1, scale=0.5)
    return base, aligned


def test_lam_0_is_base_and_lam_1_is_aligned_bit_for_bit(pair, tmp_path):
    base, aligned = pair
    base_w, aligned_w = _weights(base), _weights(aligned)
    at_0 = _weights(merge(base, aligned, 0.0, cache_dir=tmp_path / "cache").path)
    at_1 = _weights(merge(base, aligned, 1.0, cache_dir=tmp_path / "cache").path)
    assert any(not torch.equal(base_w[n], aligned_w[n]) for n in base_w)
    for name in base_w:
        assert torch.equal(at_0[name], base_w[name]), name
        assert torch.equal(at_1[name], aligned_w[name]), name


def test_lam_half_is_the_midpoint(pair, tmp_path):
    base, aligned = pair
    base_w, aligned_w = _weights(base), _weights(aligned)
    half = _weights(merge(base, aligned, 0.5, cache_dir=tmp_path / "cache").path)
    for name in base_w:
        torch.testing.assert_close(half[name], (base_w[name] + aligned_w[name]) / 2)
    down = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(half[down], base_w[down])
    assert not torch.equal(half[down], aligned_w[down])


def test_second_call_is_a_cache_hit_and_other_weights_never_share_it(pair, tmp_path):
    base, aligned = pair
    cache = tmp_path / "cache"
    first = merge(base, aligned, 0.5, cache_dir=cache)
    second = merge(base, aligned, 0.5, cache_dir=cache)
    assert first.built and not second.built
    assert second.path == first.path
    assert json.loads((first.path / "merged.json").read_text())["lam"] == 0.5

    other = perturbed_copy(base, tmp_path / "other", seed=2, scale=0.5)
    third = merge(base, other, 0.5, cache_dir=cache)
    assert third.built and third.path != first.path
    assert third.aligned_fingerprint != first.aligned_fingerprint
    down = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(_weights(third.path)[down], _weights(first.path)[down])
    assert merge(base, aligned, 0.25, cache_dir=cache).path != first.path


def test_mismatched_shapes_name_the_first_difference(tmp_path):
    base = save_tiny(tmp_path / "base")
    wider = tmp_path / "wider"
    random_llama("tiny", intermediate_size=128).save_pretrained(wider)
    word_tokenizer(64).save_pretrained(wider)
    with pytest.raises(MergeMismatch, match="intermediate_size"):
        merge(base, wider, 0.5, cache_dir=tmp_path / "cache")


def test_lam_must_be_finite(pair, tmp_path):
    with pytest.raises(ValueError, match="finite"):
        merge(*pair, float("nan"), cache_dir=tmp_path / "cache")


def test_a_threshold_policy_composes_with_the_merged_model(pair, tmp_path):
    merged = merge(*pair, 0.5, cache_dir=tmp_path / "cache")
    loaded = load_model(merged.path, cache_dir=tmp_path / "cache")
    ids = torch.tensor([[1, 8, 9, 10, 11]])
    with torch.no_grad():
        dense = loaded.model(input_ids=ids).logits
        sparsify(loaded.model, StaticPolicy(0.5))
        thresholded = loaded.model(input_ids=ids).logits
    assert all(isinstance(layer.mlp, SparseMLP) for layer in loaded.model.model.layers)
    assert not torch.allclose(thresholded, dense)


def test_perturbed_copy_is_seeded_and_keeps_the_architecture(tmp_path):
    base = save_tiny(tmp_path / "base")
    one = _weights(perturbed_copy(base, tmp_path / "one", seed=1))
    again = _weights(perturbed_copy(base, tmp_path / "again", seed=1))
    two = _weights(perturbed_copy(base, tmp_path / "two", seed=2))
    base_w = _weights(base)
    down = "model.layers.0.mlp.down_proj.weight"
    assert all(torch.equal(one[n], again[n]) for n in one)
    assert not torch.equal(one[down], two[down]) and not torch.equal(one[down], base_w[down])
    assert {n: w.shape for n, w in one.items()} == {n: w.shape for n, w in base_w.items()}
