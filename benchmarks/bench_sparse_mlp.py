"""Dense vs hot/cold MLP for one decoded token, measured side by side in one run (CPU).

    .venv/bin/python -m benchmarks.bench_sparse_mlp [--shape llama-2-7b] [--reps 30]

For each target sparsity the threshold is the matching quantile of |h| for a fixed random input;
each repetition times the dense module and the split module back to back, and the ratio of
medians is printed. "down" columns time only the down projection, the part ``HotColdMLP`` skips.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from benchmarks.bench_ffn import RandomMLP, seconds
from inference.config import shape_named
from inference.hot_cold import HotColdMLP
from inference.kernels import bag_sum
from inference.sparse_mlp import SparseMLP


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="llama-2-7b")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--hot-fraction", type=float, default=0.1)
    args = parser.parse_args()
    shape = shape_named(args.shape)
    d, f = shape.hidden_size, shape.intermediate_size
    torch.manual_seed(0)
    dense = SparseMLP(RandomMLP(d, f, torch.float32)).eval()
    x = torch.randn(1, 1, d)
    h = (dense.act_fn(dense.gate_proj(x)) * dense.up_proj(x)).reshape(-1)
    print(f"{shape.name}: one MLP layer d={d} f={f} fp32, {torch.get_num_threads()} threads")
    print(f"hot block {args.hot_fraction:.0%} of neurons")
    print(
        "sparsity  mlp dense ms  mlp split ms  speed-up | down dense ms  down sparse ms  speed-up"
    )
    # Without a profile the hot block is a random set of neurons; it is read densely either way.
    split = HotColdMLP(_copy_of(dense), torch.randperm(f), round(args.hot_fraction * f))
    down_w = dense.down_proj.weight
    down_t = down_w.t().contiguous()
    for sparsity in (0.0, 0.5, 0.7, 0.8, 0.9, 0.95):
        threshold = float(h.abs().quantile(sparsity)) if sparsity else 0.0
        dense.threshold = threshold
        split.threshold = threshold
        active = (h.abs() >= threshold).nonzero().squeeze(1)
        masked = h * (h.abs() >= threshold)
        contenders = [
            lambda: dense(x),
            lambda: split(x),
            lambda masked=masked: F.linear(masked, down_w),
            lambda active=active: bag_sum(down_t, active, h[active]),
        ]
        times = [[] for _ in contenders]
        for _ in range(args.reps):  # interleaved, so drift hits every contender alike
            for fn, samples in zip(contenders, times, strict=True):
                samples.append(seconds(fn))
        m = [statistics.median(t) * 1e3 for t in times]
        print(
            f"{sparsity:8.0%}  {m[0]:12.2f}  {m[1]:12.2f}  {m[0] / m[1]:7.2f}x |"
            f" {m[2]:13.2f}  {m[3]:14.2f}  {m[2] / m[3]:7.2f}x"
        )


def _copy_of(mlp: SparseMLP) -> SparseMLP:
    source = RandomMLP(mlp.down_proj.out_features, mlp.down_proj.in_features, torch.float32)
    source.load_state_dict(mlp.state_dict())
    return SparseMLP(source)


if __name__ == "__main__":
    main()
