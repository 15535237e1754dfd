import copy
import dataclasses

import pytest
import torch

from inference.config import SHAPES
from inference.generate import generate
from inference.hot_cold import HotColdMLP, hot_order, split_by_plan, split_hot_cold
from inference.loading import LoadedModel
from inference.plan import Placement
from inference.policies import DensePolicy, PredictorPolicy, StaticPolicy
from inference.predictor import Predictors
from inference.sparse_mlp import is_split_hot_cold, sparse_mlps
from inference.sparsify import sparsify
from tests.inference.conftest import tiny_model, tiny_tokenizer

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


def test_split_model_logits_unchanged_and_state_dict_round_trip():
    reference, split = pair(0.3)
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(split(ids).logits, reference(ids).logits)
    mlp_keys = {k.split("mlp.")[1] for k in split.state_dict() if ".mlp." in k}
    assert mlp_keys == {"gu_hot", "down_t_hot", "gu_cold", "down_t_cold"}  # no second copy
    other = split_hot_cold(sparsify(tiny_model(seed=5), StaticPolicy(0.3)), FREQUENCY, 0.25)
    other.load_state_dict(split.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(other(ids).logits, split(ids).logits, rtol=0, atol=0)


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
    # Unsplit, the h site skips every inactive neuron's down row; split, only the cold ones.
    assert 0.0 < result.mlp_bytes_skipped_per_token < reference.mlp_bytes_skipped_per_token
    assert result.mlp_flops_skipped_per_token == pytest.approx(
        2 * result.mlp_bytes_skipped_per_token / 4
    )
    # Only down's inactive cold columns are skipped: at most a third of the MLP.
    assert 0.0 < result.mlp_bytes_skipped_fraction <= 1 / 3
    dense = generate(tiny, "w1 w2 w3", DensePolicy(), max_new_tokens=3)
    assert dense.mlp_bytes_skipped_fraction == 0.0


def test_split_is_refused_twice_and_checks_shapes():
    reference, split = pair(0.3)
    assert is_split_hot_cold(split) and not is_split_hot_cold(reference)
    assert not is_split_hot_cold(tiny_model())  # not even sparsified
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


# --- the hybrid device path (hot block on one device, cold on another) ---------------------

PROMPT = "w1 w2 w3 w4"
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny_loaded(seed: int = 0) -> LoadedModel:
    return LoadedModel(tiny_model(seed), tiny_tokenizer(), "tiny", "")


def tiny_plan(hot_neurons: list[int]) -> Placement:
    """A plan for the tiny shape as `plan` would save it (synthetic profile: index order)."""
    return Placement(SHAPES["tiny"], "f32", 10**6, 0, hot_neurons, 0, 0, 0.5, True)


def tiny_predictors(tmp_path, bias: float = 0.0) -> str:
    gen = torch.Generator().manual_seed(1)
    path = tmp_path / "pred.safetensors"
    Predictors(
        "tiny",
        0.05,
        [torch.randn(4, 32, generator=gen) for _ in range(3)],
        [torch.zeros(4) for _ in range(3)],
        [torch.randn(96, 4, generator=gen) for _ in range(3)],
        [torch.full((96,), bias) for _ in range(3)],
    ).save(path)
    return str(path)


def test_plan_sets_each_layers_hot_count():
    model = split_by_plan(tiny_model(), tiny_plan([0, 40, 96]))
    mlps = sparse_mlps(model)
    assert [m.num_hot for m in mlps] == [0, 40, 96]
    assert [tuple(m.gu_hot.shape) for m in mlps] == [(0, 2, 32), (40, 2, 32), (96, 2, 32)]
    assert [m.down_t_cold.shape[0] for m in mlps] == [96, 56, 0]
    assert torch.equal(mlps[1].order, torch.arange(96))  # synthetic plan: index order


@pytest.mark.parametrize("hot_neurons", [[0, 0, 0], [24, 48, 72], [96, 96, 96]])
def test_all_hot_or_threshold_zero_equals_dense(hot_neurons):
    reference = tiny_model()
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.no_grad():
        dense = reference(ids).logits
        split = split_hot_cold(tiny_model(), FREQUENCY, hot_neurons=hot_neurons)
        torch.testing.assert_close(split(ids).logits, dense)
    loaded = LoadedModel(split, tiny_tokenizer(), "tiny", "")
    plain = generate(tiny_loaded(), PROMPT, DensePolicy(), max_new_tokens=6)
    result = generate(loaded, PROMPT, DensePolicy(), max_new_tokens=6)
    assert result.token_ids == plain.token_ids
    assert result.active_fraction == 1.0 and result.mlp_bytes_skipped_fraction == 0.0
    # Every neuron kept: the hot blocks served their share of the neurons.
    assert result.hot_activation_share == pytest.approx(sum(hot_neurons) / (3 * 96))


@pytest.mark.parametrize("threshold", [0.2, 0.5])
def test_hybrid_equals_masked_sparse_path(threshold):
    plain = generate(tiny_loaded(), PROMPT, StaticPolicy(threshold), max_new_tokens=8)
    loaded = tiny_loaded()
    split_by_plan(loaded.model, tiny_plan([30, 60, 90]), hot_device="cpu", cold_device="cpu")
    result = generate(loaded, PROMPT, StaticPolicy(threshold), max_new_tokens=8)
    assert result.token_ids == plain.token_ids
    assert result.active_fraction_per_layer == pytest.approx(plain.active_fraction_per_layer)
    assert 0.0 < result.hot_activation_share < 1.0
    assert result.mlp_bytes_skipped_fraction > 0.0  # inactive cold rows of down not read
    tensors = (*loaded.model.parameters(), *loaded.model.buffers())
    total = sum(t.numel() * t.element_size() for t in tensors)
    assert result.weight_bytes_per_device == {"cpu": total}
    assert plain.hot_activation_share == 1.0  # not split


def test_hybrid_predictor_equals_predictor_mlp(tmp_path):
    policy = PredictorPolicy(0.5, tiny_predictors(tmp_path))
    plain_model = tiny_loaded()
    plain = generate(plain_model, PROMPT, policy, max_new_tokens=8)
    loaded = tiny_loaded()
    split_hot_cold(loaded.model, FREQUENCY, hot_neurons=[10, 50, 90])
    result = generate(loaded, PROMPT, policy, max_new_tokens=8)
    assert result.token_ids == plain.token_ids
    assert result.active_fraction_per_layer == pytest.approx(plain.active_fraction_per_layer)
    assert result.mlp_bytes_skipped_fraction > 0.0
    x = torch.randn(1, 1, 32)
    for a, b in zip(sparse_mlps(plain_model.model), sparse_mlps(loaded.model), strict=True):
        with torch.no_grad():
            torch.testing.assert_close(b(x), a(x))
            torch.testing.assert_close(b(x.expand(1, 3, 32)), a(x.expand(1, 3, 32)))
    sparsify(loaded.model, StaticPolicy(0.0))  # predictor off again: dense output
    dense = generate(tiny_loaded(), PROMPT, DensePolicy(), max_new_tokens=6)
    assert generate(loaded, PROMPT, DensePolicy(), max_new_tokens=6).token_ids == dense.token_ids


def test_split_after_predictor_reattaches_it(tmp_path):
    policy = PredictorPolicy(0.5, tiny_predictors(tmp_path))
    loaded = tiny_loaded()
    before = generate(loaded, PROMPT, policy, max_new_tokens=6)
    split_hot_cold(loaded.model, FREQUENCY, 0.5)
    assert generate(loaded, PROMPT, policy, max_new_tokens=6).token_ids == before.token_ids


def test_plan_orders_neurons_by_its_profile(tmp_path):
    from inference.profile import EDGES, Profile

    counts = (FREQUENCY * 100).long().unsqueeze(-1)  # [L, F, 1]: one profiled eps
    hist = torch.zeros(3, len(EDGES) - 1, dtype=torch.int64)
    Profile("tiny", (0.05,), 100, 4, counts, hist).save(tmp_path / "profile.safetensors")
    plan = dataclasses.replace(
        tiny_plan([24, 24, 24]),
        synthetic_profile=False,
        profile=str(tmp_path / "profile.safetensors"),
        activity_threshold=0.05,
    )
    mlp = sparse_mlps(split_by_plan(tiny_model(), plan, fingerprint="tiny"))[0]
    assert set(mlp.order[:24].tolist()) == set(counts[0, :, 0].topk(24).indices.tolist())
    with pytest.raises(ValueError, match="profile is of tiny, the model other"):
        split_by_plan(tiny_model(), plan, fingerprint="other")


def test_plan_for_another_shape_is_refused():
    with pytest.raises(ValueError, match="the plan is for llama-70b"):
        split_by_plan(
            tiny_model(), Placement(SHAPES["llama-70b"], "f32", 0, 0, [0] * 80, 0, 0, 0, True)
        )
    with pytest.raises(ValueError, match="does not name"):
        split_by_plan(tiny_model(), Placement(SHAPES["tiny"], "f32", 0, 0, [0] * 3, 0, 0, 0, False))
    with pytest.raises(ValueError, match="exactly one"):
        split_hot_cold(tiny_model(), FREQUENCY)


@CUDA
@pytest.mark.parametrize("threshold", [0.0, 0.3])
def test_hot_on_cuda_cold_on_cpu_equals_cpu(threshold, tmp_path):
    cpu = tiny_loaded()
    split_hot_cold(cpu.model, FREQUENCY, hot_neurons=[24, 48, 72])
    gpu = tiny_loaded()
    split_hot_cold(gpu.model, FREQUENCY, hot_neurons=[24, 48, 72], hot_device="cuda")
    mlp = sparse_mlps(gpu.model)[1]
    assert mlp.gu_hot.is_cuda and not mlp.gu_cold.is_cuda
    assert gpu.model.model.embed_tokens.weight.is_cuda and gpu.model.lm_head.weight.is_cuda
    for policy in (StaticPolicy(threshold), PredictorPolicy(0.5, tiny_predictors(tmp_path))):
        expected = generate(cpu, PROMPT, policy, max_new_tokens=8)
        result = generate(gpu, PROMPT, policy, max_new_tokens=8)
        assert result.token_ids == expected.token_ids
        assert result.device.startswith("cuda") and result.cuda_peak_bytes > 0
        assert set(result.weight_bytes_per_device) == {"cpu", "cuda:0"}
        assert result.hot_activation_share == pytest.approx(expected.hot_activation_share)


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


@pytest.mark.model
def test_real_model_hybrid_by_plan_equals_masked_path():
    from inference.loading import load_model
    from inference.plan import parse_bytes, plan_placement

    plain, split = load_model(), load_model()  # own copies: splitting permutes weights
    plan = plan_placement(SHAPES["smollm2-135m"], parse_bytes("300MiB"), weight_format="f32")
    assert 0 < sum(plan.hot_neurons_per_layer) < 30 * 1536
    split_by_plan(split.model, plan, hot_device="cpu", cold_device="cpu")
    policy = StaticPolicy(0.05)
    expected = generate(plain, "Name a colour.", policy, max_new_tokens=8)
    result = generate(split, "Name a colour.", policy, max_new_tokens=8)
    assert result.token_ids == expected.token_ids
    # Same masks up to neurons within float rounding of the threshold (sums split hot/cold).
    assert result.active_fraction == pytest.approx(expected.active_fraction, abs=1e-3)
    assert 0.0 < result.hot_activation_share < 1.0 and result.mlp_bytes_skipped_fraction > 0.0
