"""One FFN layer of a named shape, batch 1, on CPU: dense vs the gathered active neurons.

    python -m benchmarks ffn [--shape llama-70b] [--active 0.5,0.3,0.1] [--reps 5] [--json]

The dense layer vs ``PredictorMLP.gathered`` (gate/up rows + down rows of the active neurons
only) at each active fraction, timed back to back, with the ideal byte ratio and this machine's
streaming-read bandwidth. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from inference.config import shape_named
from inference.predictor import PredictorMLP
from inference.sparse_mlp import SparseMLP

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def read_bandwidth_bytes_per_s(nbytes: int = 1 << 30, reps: int = 5) -> float:
    """Streaming read bandwidth: best of ``reps`` ``sum()`` passes over ``nbytes`` of fp32."""
    data = torch.ones(nbytes // 4)
    data.sum()  # fault the pages in
    best = min(seconds(data.sum) for _ in range(reps))
    return nbytes / best


class RandomMLP(nn.Module):
    """A LLaMA-style MLP (gate, up, down) with random weights, scaled like 1/sqrt(fan-in)."""

    def __init__(self, d: int, f: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d, f, bias=False, device="meta")
        self.up_proj = nn.Linear(d, f, bias=False, device="meta")
        self.down_proj = nn.Linear(f, d, bias=False, device="meta")
        for linear in (self.gate_proj, self.up_proj, self.down_proj):
            shape = linear.weight.shape
            # Random weights without kaiming init's cost: fill in place, scaled like 1/sqrt(in).
            w = torch.empty(shape, dtype=dtype).normal_(0.0, shape[1] ** -0.5)
            linear.weight = nn.Parameter(w, requires_grad=False)
        self.act_fn = nn.SiLU()


@torch.inference_mode()
def bench_ffn(
    shape_name: str = "llama-70b",
    active: list[float] = (0.5, 0.3, 0.1),
    *,
    reps: int | None = None,
    dtype: str = "float32",
    threads: int | None = None,
) -> dict:
    """Dense vs gathered FFN for one token; medians of ``reps`` interleaved repetitions."""
    reps = reps or 5
    if threads:
        torch.set_num_threads(threads)
    for a in active:
        if not 0.0 < a <= 1.0:
            raise ValueError(f"active fractions must be in (0, 1], got {a}")
    shape = shape_named(shape_name)
    d, f = shape.hidden_size, shape.intermediate_size
    torch.manual_seed(0)
    mlp = PredictorMLP(SparseMLP(RandomMLP(d, f, DTYPES[dtype])))
    element = mlp.gu.element_size()
    dense_bytes = 3 * d * f * element
    x = torch.randn(1, 1, d, dtype=DTYPES[dtype])
    x1 = x.reshape(-1)
    # A buffer well past the caches, but not more than the layer itself needs for big shapes.
    probe_bytes = max(1 << 28, min(1 << 30, dense_bytes))
    bandwidth = read_bandwidth_bytes_per_s(probe_bytes)
    dense_fn = lambda: mlp(x)  # noqa: E731  (predictor off: the dense path)
    contenders = [dense_fn]
    indices = []
    for a in active:
        n = max(1, round(a * f))
        idx = torch.randperm(f)[:n].sort().values  # a random active set: no hot block
        indices.append(idx)
        contenders.append(lambda idx=idx: mlp.gathered(x1, idx))
        contenders.append(lambda n=n: _contiguous(mlp, x1, n))
    for fn in contenders:  # warm-up: buffers allocated, pages faulted in
        fn()
    bandwidth_before = bandwidth
    times = [[] for _ in contenders]
    for _ in range(reps):  # interleaved, so drift hits every contender alike
        for fn, samples in zip(contenders, times, strict=True):
            samples.append(seconds(fn))
    medians = [statistics.median(t) for t in times]
    # Best of a measurement before and after: other jobs on the machine only lower it.
    bandwidth = max(bandwidth_before, read_bandwidth_bytes_per_s(probe_bytes))
    dense_s = medians[0]
    points = []
    for i, (a, idx) in enumerate(zip(active, indices, strict=True)):
        sparse_s, contiguous_s = medians[1 + 2 * i], medians[2 + 2 * i]
        _, read = mlp.gathered(x1, idx)
        sparse_bytes = read * element
        ideal = dense_bytes / sparse_bytes
        points.append(
            {
                "active_fraction": a,
                "active_neurons": idx.numel(),
                "sparse_ms": sparse_s * 1e3,
                "speedup": dense_s / sparse_s,
                "ideal_ratio": ideal,
                "fraction_of_ideal": dense_s / sparse_s / ideal,
                "weight_bytes_read": sparse_bytes,
                "achieved_bytes_per_s": sparse_bytes / sparse_s,
                "fraction_of_bandwidth": sparse_bytes / sparse_s / bandwidth,
                "contiguous_ms": contiguous_s * 1e3,
                "contiguous_speedup": dense_s / contiguous_s,
            }
        )
    return {
        "shape": shape.name,
        "hidden_size": d,
        "intermediate_size": f,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "reps": reps,
        "dense_ms": dense_s * 1e3,
        "dense_weight_bytes": dense_bytes,
        "dense_bytes_per_s": dense_bytes / dense_s,
        "read_bandwidth_bytes_per_s": bandwidth,
        "dense_fraction_of_bandwidth": dense_bytes / dense_s / bandwidth,
        "points": points,
    }


def _contiguous(mlp, x1: torch.Tensor, n: int) -> torch.Tensor:
    """The same work on the first ``n`` neurons as contiguous slices (a hot block): the bound."""
    gu = torch.mv(mlp.gu[:n].view(2 * n, -1), x1).view(n, 2)
    h = mlp.act_fn(gu[:, 0]) * gu[:, 1]
    return torch.mv(mlp.down_t[:n].t(), h)


def format_ffn(r: dict) -> str:
    lines = [
        f"{r['shape']} FFN layer d={r['hidden_size']} f={r['intermediate_size']} {r['dtype']}, "
        f"batch 1, {r['threads']} threads, medians of {r['reps']}",
        f"read bandwidth (sum) {r['read_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s; dense "
        f"{r['dense_ms']:.1f} ms = {r['dense_bytes_per_s'] / 1e9:.1f} GB/s "
        f"({r['dense_fraction_of_bandwidth']:.0%} of bandwidth)",
        "active  sparse ms  speed-up  ideal  of ideal  GB/s  of bandwidth |"
        " contiguous ms  speed-up",
    ]
    for p in r["points"]:
        lines.append(
            f"{p['active_fraction']:6.0%}  {p['sparse_ms']:9.1f}  {p['speedup']:7.2f}x "
            f"{p['ideal_ratio']:5.2f}x  {p['fraction_of_ideal']:8.2f}  "
            f"{p['achieved_bytes_per_s'] / 1e9:4.1f}  {p['fraction_of_bandwidth']:12.0%} |"
            f" {p['contiguous_ms']:13.1f}  {p['contiguous_speedup']:7.2f}x"
        )
    return "\n".join(lines)
