"""The engine's dense GEMV (``kernels.dense_linear``, compiled ``dense_matvec``) against ATen's
``F.linear`` on every matrix one decoded token reads, in one run.

    python -m benchmarks.bench_gemv [--threads 2] [--rounds 15]

Loads the shipped model, lays it out as the dense condition does (down stored transposed), and
times one pass over all its projections and the LM head (the weights of one token: ~0.54 GB in
fp32) with each implementation, alternating, ``--rounds`` times; prints the medians, the
bandwidth they imply and the ratio. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from inference.kernels import compiled_kernels, dense_linear
from inference.loading import load_model
from inference.policies import DensePolicy
from inference.sparsify import sparsify


def token_weights(model) -> list[torch.Tensor]:
    """Every matrix one decoded token multiplies, as the modules hold them."""
    weights = []
    for layer in model.model.layers:
        attention, mlp = layer.self_attn, layer.mlp
        for module in (attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj,
                       mlp.gate_proj, mlp.up_proj, mlp.down_proj):  # fmt: skip
            weights.append(module.weight)
    return [*weights, model.lm_head.weight]


def bench_gemv(*, threads: int = 2, rounds: int = 15) -> dict:
    torch.set_num_threads(threads)
    if compiled_kernels() is None:
        raise SystemExit("the compiled kernels are not built: nothing to compare")
    weights = token_weights(sparsify(load_model().model, DensePolicy()))
    inputs = {w.shape[1]: torch.randn(1, w.shape[1]) for w in weights}
    for w in weights:  # same numbers, within rounding (a different summation order)
        x = inputs[w.shape[1]]
        torch.testing.assert_close(dense_linear(x, w), F.linear(x, w), rtol=1e-4, atol=1e-4)
    passes = {
        "aten": lambda: [F.linear(inputs[w.shape[1]], w) for w in weights],
        "engine": lambda: [dense_linear(inputs[w.shape[1]], w) for w in weights],
    }
    times: dict[str, list[float]] = {name: [] for name in passes}
    for _ in range(rounds):
        for name, run in passes.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    gigabytes = sum(w.numel() * w.element_size() for w in weights) / 1e9
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {
        "threads": threads,
        "gigabytes": gigabytes,
        **{f"{name}_ms": 1e3 * m for name, m in medians.items()},
        **{f"{name}_gb_per_s": gigabytes / m for name, m in medians.items()},
        "engine_speedup": medians["aten"] / medians["engine"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    r = bench_gemv(threads=args.threads, rounds=args.rounds)
    print(
        f"{r['threads']} threads, {r['gigabytes']:.3f} GB a token: ATen {r['aten_ms']:.1f} ms "
        f"({r['aten_gb_per_s']:.1f} GB/s), engine {r['engine_ms']:.1f} ms "
        f"({r['engine_gb_per_s']:.1f} GB/s): {r['engine_speedup']:.2f}x"
    )


if __name__ == "__main__":
    main()
