"""The GPU benchmark's CPU-runnable parts (its ``--dry-run`` runs them all): kernel checks
under Triton's interpreter, calibration to ~50 %, and the decode measurement's bookkeeping."""

import pytest
import torch

from benchmarks import bench_gpu
from inference.config import SHAPES


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def test_kernel_checks_pass_on_cpu():
    with torch.inference_mode():
        checks = bench_gpu.kernel_checks(torch.device("cpu"), 32, 48)
    assert set(checks) == {"fp16", "bf16", "int8"}
    assert all(c["ok"] and c["same_kept"] for per in checks.values() for c in per.values())


@pytest.mark.parametrize("int8", [False, True])
def test_decode_runs_every_site_at_about_half_sparsity(int8):
    result = bench_gpu.decode_speed(torch.device("cpu"), SHAPES["tiny"], 2, 2, int8=int8)
    runs = result["runs"]
    assert set(runs) == {"dense", "h", "gate", "input"}
    assert runs["dense"]["mean_active_fraction"] == 1.0
    assert runs["dense"]["speedup_over_dense"] == 1.0
    dense_reads = runs["dense"]["mlp_weights_read_per_token"]
    for site in bench_gpu.SITES:  # thresholds from the prompt, applied to new tokens
        assert 0.25 < runs[site]["mean_active_fraction"] < 0.75
        assert runs[site]["mlp_weights_read_per_token"] < dense_reads
    model = bench_gpu.random_model_on(torch.device("cpu"), SHAPES["tiny"], 2)
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    if not int8:
        assert result["weight_bytes"] == fp32_bytes
        return
    # Each of the 2 x 7 projections: a byte a weight (not 4) and a fp32 scale an output row.
    projections = [m for layer in model.model.layers for m in layer.modules()
                   if isinstance(m, torch.nn.Linear)]  # fmt: skip
    assert len(projections) == 14
    weights = sum(m.weight.numel() for m in projections)
    outputs = sum(m.out_features for m in projections)
    assert result["weight_bytes"] == fp32_bytes - 3 * weights + 4 * outputs
