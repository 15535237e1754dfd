"""The Triton site kernels against the torch gather path (``kernels``, ``use_kernel=False``):
under Triton's interpreter on CPU tensors everywhere, and compiled on CUDA where it exists."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inference import kernels, triton_kernels
from inference.triton_kernels import dequantize, quantize_int8

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FLOATS = [torch.float32, torch.float16, torch.bfloat16]
# Kept sets equal exactly (the kernel rounds the threshold as torch does); sums differ by order.
TOLERANCE = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=5e-3, atol=5e-3),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2),
}


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    """CPU tensors run the kernels under Triton's interpreter (this module only)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def draw(*shape, dtype, device, seed=0):
    # Rows 300 and neurons 40 cross the kernels' tiles (16 rows, 256 rows a split) unevenly.
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * shape[-1] ** -0.5).to(device=device, dtype=dtype)


def ffn(dtype, device):
    f, d = 40, 48
    gate, up, down_t = (draw(f, d, dtype=dtype, device=device, seed=s) for s in (1, 2, 3))
    return gate, up, down_t, draw(d, dtype=dtype, device=device, seed=4) * 8


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_input_site_at_threshold_zero_is_dense(device, dtype):
    rows = draw(300, 70, dtype=dtype, device=device)  # W.t(): [in, out]
    x = draw(300, dtype=dtype, device=device, seed=5) * 17
    out, kept = triton_kernels.input_matvec(rows, x, 0.0)
    assert int(kept) == 300
    torch.testing.assert_close(out, F.linear(x, rows.t()), **TOLERANCE[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("threshold", [0.3, 0.7, 1e9])
def test_input_site_equals_gather_reference(device, dtype, threshold):
    rows = draw(300, 70, dtype=dtype, device=device)
    x = draw(300, dtype=dtype, device=device, seed=5) * 17
    out, kept = triton_kernels.input_matvec(rows, x, threshold)
    expected, expected_kept = kernels.input_matvec(rows, x, threshold, use_kernel=False)
    assert int(kept) == expected_kept
    torch.testing.assert_close(out, expected, **TOLERANCE[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("site", ["h", "gate"])
def test_ffn_sites_equal_gather_reference(device, dtype, site):
    gate, up, down_t, x = ffn(dtype, device)
    act = nn.SiLU()
    ours, reference = {
        "h": (triton_kernels.h_ffn, kernels.h_ffn),
        "gate": (triton_kernels.gate_ffn, kernels.gate_ffn),
    }[site]
    for threshold in (0.0, 0.1, 0.4):
        out, kept = ours(gate, up, down_t, x, threshold, act)
        expected, expected_kept = reference(gate, up, down_t, x, threshold, act, use_kernel=False)
        assert int(kept) == expected_kept
        assert 0 < expected_kept < 40 or threshold == 0.0
        torch.testing.assert_close(out, expected, **TOLERANCE[dtype])


@pytest.mark.parametrize("device", DEVICES)
def test_dropped_rows_are_never_read(device):
    """Rows of dropped inputs (and up/down rows of dropped neurons) hold NaN: a kernel that
    loaded them would return NaN (NaN * 0 is NaN)."""
    rows = draw(300, 70, dtype=torch.float16, device=device)
    x = draw(300, dtype=torch.float16, device=device, seed=5) * 17
    expected, _ = kernels.input_matvec(rows, x, 0.5, use_kernel=False)
    rows[x.abs() < 0.5] = float("nan")
    out, _ = triton_kernels.input_matvec(rows, x, 0.5)
    torch.testing.assert_close(out, expected, **TOLERANCE[torch.float16])

    gate, up, down_t, x = ffn(torch.float16, device)
    act = nn.SiLU()
    expected, kept = kernels.gate_ffn(gate, up, down_t, x, 0.2, act, use_kernel=False)
    dropped = act(F.linear(x, gate)).abs() < 0.2
    assert 0 < kept < 40
    up[dropped], down_t[dropped] = float("nan"), float("nan")
    out, _ = triton_kernels.gate_ffn(gate, up, down_t, x, 0.2, act)
    torch.testing.assert_close(out, expected, **TOLERANCE[torch.float16])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_int8_weights_equal_reference_on_their_dequantized_values(device, dtype):
    gate, up, down_t, x = ffn(dtype, device)
    act = nn.SiLU()
    q_gate, q_up = quantize_int8(gate, output_axis=0), quantize_int8(up, output_axis=0)
    q_down_t = quantize_int8(down_t, output_axis=1)  # down.t(): outputs along the columns
    assert q_gate.values.dtype == torch.int8 and q_gate.nbytes == 40 * 48 + 4 * 40
    plain = [
        dequantize(q_gate, output_axis=0, dtype=dtype),
        dequantize(q_up, output_axis=0, dtype=dtype),
        dequantize(q_down_t, output_axis=1, dtype=dtype),
    ]
    torch.testing.assert_close(plain[0], gate, rtol=0, atol=gate.abs().max().item() / 100)
    for ours, reference in (
        (triton_kernels.h_ffn, kernels.h_ffn),
        (triton_kernels.gate_ffn, kernels.gate_ffn),
    ):
        out, kept = ours(q_gate, q_up, q_down_t, x, 0.1, act)
        expected, expected_kept = reference(*plain, x, 0.1, act, use_kernel=False)
        assert int(kept) == expected_kept
        torch.testing.assert_close(out, expected, **TOLERANCE[torch.bfloat16])
    rows = draw(300, 70, dtype=dtype, device=device)
    x = draw(300, dtype=dtype, device=device, seed=5) * 17
    q_rows = quantize_int8(rows, output_axis=1)
    out, _ = triton_kernels.input_matvec(q_rows, x, 0.5)
    plain_rows = dequantize(q_rows, output_axis=1, dtype=dtype)
    expected, _ = kernels.input_matvec(plain_rows, x, 0.5, use_kernel=False)
    torch.testing.assert_close(out, expected, **TOLERANCE[torch.bfloat16])


@pytest.mark.parametrize("device", DEVICES)
def test_threshold_as_device_tensor_equals_float(device):
    """A CUDA graph takes each step's threshold from a tensor; the result is the float's."""
    rows = draw(300, 70, dtype=torch.bfloat16, device=device)
    x = draw(300, dtype=torch.bfloat16, device=device, seed=5) * 17
    t = torch.tensor(0.7, dtype=torch.bfloat16, device=device)
    out, kept = triton_kernels.input_matvec(rows, x, t)
    expected, expected_kept = triton_kernels.input_matvec(rows, x, 0.7)
    assert int(kept) == int(expected_kept)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    gate, up, down_t, x = ffn(torch.bfloat16, device)
    t = torch.tensor(0.2, dtype=torch.bfloat16, device=device)
    out, _ = triton_kernels.gate_ffn(gate, up, down_t, x, t, nn.SiLU())
    expected, _ = triton_kernels.gate_ffn(gate, up, down_t, x, 0.2, nn.SiLU())
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_cpu_tensors_without_the_interpreter_are_refused(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        triton_kernels.input_matvec(torch.ones(4, 3), torch.ones(4), 0.5)


def test_only_cuda_weights_of_known_dtypes_are_routed_here():
    """``kernels`` sends CUDA weights here and keeps CPU ones on its own paths."""
    assert not triton_kernels.supported(torch.ones(2), torch.ones(2, dtype=torch.bfloat16))
    if torch.cuda.is_available():
        assert triton_kernels.supported(torch.ones(2, device="cuda", dtype=torch.bfloat16))
        assert not triton_kernels.supported(torch.ones(2, device="cuda", dtype=torch.float64))
