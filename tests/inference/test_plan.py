import pytest
import torch

from inference.__main__ import main
from inference.config import SHAPES, ModelShape
from inference.plan import (
    GROUP,
    Placement,
    gpu_memory_bytes,
    gpu_placements,
    gpu_weight_bytes,
    layer_device_map,
    parse_bytes,
    plan_placement,
    synthetic_frequency,
)
from inference.random_model import random_llama

SMALL = ModelShape("small", 64, 1024, 4, 4, 4, 100)


def test_parse_bytes():
    assert parse_bytes("24GiB") == 24 * 2**30
    assert parse_bytes("1.5 GB") == 1_500_000_000
    assert parse_bytes("512MiB") == 512 * 2**20
    assert parse_bytes("1000") == 1000
    with pytest.raises(ValueError, match="not a size"):
        parse_bytes("lots")


def test_greedy_puts_the_most_active_groups_on_gpu():
    frequency = torch.zeros(4, 1024)
    frequency[2] = 1.0  # only layer 2 ever fires
    frequency[1, :GROUP] = 0.5
    neuron_bytes = SMALL.mlp_params_per_neuron * 4
    dense = int(SMALL.total_params * 4) - SMALL.num_layers * SMALL.mlp_params_per_layer * 4
    budget = dense + 5 * GROUP * neuron_bytes
    plan = plan_placement(SMALL, budget, frequency, weight_format="f32")
    assert plan.hot_neurons_per_layer == [0, GROUP, 1024, 0]
    assert plan.gpu_activation_share == pytest.approx(1.0)
    assert plan.gpu_bytes <= budget
    assert plan.gpu_bytes + plan.cpu_bytes == int(SMALL.total_params * 4)
    assert not plan.synthetic_profile


def test_bigger_budget_serves_more():
    shares = [
        plan_placement(SHAPES["llama-70b"], parse_bytes(f"{gib}GiB")).gpu_activation_share
        for gib in (12, 24, 48)
    ]
    assert shares == sorted(shares) and shares[-1] <= 1.0


def test_synthetic_profile_is_a_capped_power_law():
    frequency = synthetic_frequency(SMALL)
    assert frequency.shape == (4, 1024)
    assert (frequency[:, :-1] >= frequency[:, 1:]).all() and frequency.max() <= 1.0


def test_errors_are_messages():
    with pytest.raises(ValueError, match="dense parts alone"):
        plan_placement(SHAPES["llama-70b"], parse_bytes("1GiB"))
    with pytest.raises(ValueError, match="profile is"):
        plan_placement(SMALL, parse_bytes("1GiB"), torch.zeros(3, 1024))


def test_cli_plan_says_when_profile_is_synthetic(capsys):
    assert main(["plan", "--gpu-mem", "24GiB", "--shape", "llama-70b"]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "served by the GPU" in out


@pytest.mark.parametrize("budget", ["16GiB", "24GiB", "40GiB", "80GiB"])
@pytest.mark.parametrize("weight_format", ["q4_0", "f16"])
def test_plan_for_70b_fits_the_budget_it_was_given(budget, weight_format):
    shape = SHAPES["llama-70b"]
    try:
        plan = plan_placement(shape, parse_bytes(budget), weight_format=weight_format)
    except ValueError as exc:  # f16 dense parts alone exceed a small budget: said, not ignored
        assert "dense parts alone" in str(exc)
        return
    assert plan.gpu_bytes <= parse_bytes(budget)
    assert len(plan.hot_neurons_per_layer) == 80
    assert all(0 <= n <= shape.intermediate_size for n in plan.hot_neurons_per_layer)
    assert 0.0 <= plan.gpu_activation_share <= 1.0


def test_plan_json_round_trip_and_bad_files(tmp_path):
    plan = plan_placement(SHAPES["llama-70b"], parse_bytes("24GiB"))
    path = tmp_path / "plan.json"
    plan.save(path)
    assert Placement.load(path) == plan
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a placement plan"):
        Placement.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="plan --out"):
        Placement.load(tmp_path / "missing.json")


def _fits(fits):
    return {fit.name.split(",")[0] if "layer" in fit.name else fit.name: fit for fit in fits}


def test_70b_on_one_80gb_gpu_needs_8bit_weights():
    fits = _fits(gpu_placements(SHAPES["llama-70b"], gpu_memory_bytes("h100")))
    assert fits["one GPU, 8-bit weights"].fits
    assert not fits["one GPU, bf16 weights"].fits
    assert fits["layer by layer over 2 GPU(s)"].fits  # bf16 needs two of them
    assert fits["one GPU, 8-bit weights"].most_on_one_gpu_bytes <= 81559 * 2**20 - 2 * 2**30
    hybrid = fits["hybrid: hot neurons on one GPU, cold on the CPU (bf16)"]
    assert hybrid.fits and hybrid.weight_bytes < gpu_weight_bytes(SHAPES["llama-70b"], "bf16")


def test_70b_bf16_on_one_141gb_gpu_with_its_kv_cache():
    shape = SHAPES["llama-70b"]
    fit = _fits(gpu_placements(shape, gpu_memory_bytes("h200"), context_tokens=8192))[
        "one GPU, bf16 weights"
    ]
    assert fit.fits and fit.kv_bytes == 8192 * 2 * 80 * 8 * 128 * 2  # keys and values, bf16
    assert fit.most_on_one_gpu_bytes == gpu_weight_bytes(shape, "bf16") + fit.kv_bytes
    # A context too long for what the weights leave is said not to fit.
    too_long = _fits(gpu_placements(shape, gpu_memory_bytes("h200"), context_tokens=40_000))
    assert not too_long["one GPU, bf16 weights"].fits


def test_layer_by_layer_device_map_covers_every_layer_within_each_gpu():
    shape = SHAPES["llama-70b"]
    fit = next(f for f in gpu_placements(shape, parse_bytes("40GiB"), gpus=4) if f.device_map)
    assert fit.fits and fit.gpus == 4
    layers = [v for k, v in fit.device_map.items() if k.startswith("model.layers.")]
    assert len(layers) == 80 and [layers.count(g) for g in range(4)] == [20] * 4
    assert layers == sorted(layers)  # runs of consecutive layers
    assert fit.most_on_one_gpu_bytes <= parse_bytes("40GiB") - 2 * 2**30
    assert not next(f for f in gpu_placements(shape, parse_bytes("40GiB"), gpus=3)
                    if f.device_map).fits  # fmt: skip


def test_device_map_names_the_modules_of_a_real_model():
    model = random_llama("tiny")
    names = {name for name, _ in model.named_modules()}
    device_map = layer_device_map(SHAPES["tiny"], 2)
    assert set(device_map) <= names
    assert {f"model.layers.{i}" for i in range(3)} <= set(device_map)


def test_cli_plan_says_which_gpu_placement_fits(capsys):
    assert main(["plan", "--gpu-mem", "h100", "--context-tokens", "2048"]) == 0
    out = capsys.readouterr().out
    assert "fits    one GPU, 8-bit weights" in out
    assert "no      one GPU, bf16 weights" in out
    assert "2048 positions" in out


def test_gpu_placements_on_a_gpu_too_small_for_anything():
    fits = gpu_placements(SHAPES["tiny"], parse_bytes("300KiB"))
    assert len(fits) == 4 and not any(fit.fits for fit in fits)
    assert "does not fit" in fits[2].detail


@pytest.mark.parametrize(
    ("weight_format", "block_bytes", "block"),
    [("q4_1", 20, 32), ("q8_0", 34, 32), ("q4_k", 144, 256), ("q6_k", 210, 256), ("bf16", 2, 1)],
)
def test_plan_counts_bytes_as_the_format_stores_them(weight_format, block_bytes, block):
    plan = plan_placement(SMALL, parse_bytes("1GiB"), weight_format=weight_format)
    total = plan.gpu_bytes + plan.cpu_bytes
    assert total == int(SMALL.total_params * block_bytes / block)


def test_plan_refuses_an_unknown_format():
    with pytest.raises(ValueError, match="q4_1"):
        plan_placement(SMALL, parse_bytes("1GiB"), weight_format="q3_k")
