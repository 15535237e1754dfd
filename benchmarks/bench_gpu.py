"""GPU check of the engine (run on a CUDA machine; never needed by the tests).

    python -m benchmarks.bench_gpu [--json]

1. The tiny random LLaMA of the tests on CUDA: dense, static and budget policies, and a
   predictor policy whose predictor marks every neuron active (must equal dense), with the
   CUDA peak memory and time to first token the engine reports.
2. One LLaMA-70B-shaped FFN layer (bf16, batch 1) on the GPU: dense vs the gathered predictor
   path (``index_select`` of gate/up and down rows) at 50/30/10 % active, CUDA-event timed.
3. The hybrid device path: the tiny model split hot on ``cuda`` / cold on ``cpu`` against the
   same split on the CPU (static and predictor policies): same tokens, bytes per device, the
   share of activations the GPU served.
4. The threshold sites (issue 19) on CUDA: the tiny model per site (h, gate, input) against its
   masked reference on the CPU (same greedy tokens, bytes read per token), and ``bench e2e`` on
   a random TinyLlama-1.1B on the GPU (fp32, dense vs each site at 50 %: tokens/s, bytes,
   speed-up over dense in the same run).
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from benchmarks.bench_e2e import bench_e2e
from inference.generate import generate
from inference.hot_cold import split_hot_cold
from inference.loading import LoadedModel
from inference.policies import BudgetPolicy, DensePolicy, PredictorPolicy, StaticPolicy
from inference.predictor import Predictors
from inference.random_model import tiny_llama, word_tokenizer
from inference.sparse_mlp import sparse_mlps
from inference.sparsify import sparsify


def _tiny_checks(tmp: str) -> dict:
    cpu = LoadedModel(tiny_llama(), word_tokenizer(64), "tiny", "")
    gpu = LoadedModel(tiny_llama().to("cuda"), word_tokenizer(64), "tiny", "")
    prompt = "w1 w2 w3 w4"
    out = {}
    reference = generate(cpu, prompt, DensePolicy(), max_new_tokens=12).token_ids
    for name, policy in {
        "dense": DensePolicy(),
        "static": StaticPolicy(0.2),
        "budget": BudgetPolicy(0.5, threshold=0.2),
    }.items():
        r = generate(gpu, prompt, policy, max_new_tokens=12)
        out[name] = {
            "device": r.device,
            "same_tokens_as_cpu_dense": r.token_ids == reference,
            "achieved_sparsity": r.achieved_sparsity,
            "cuda_peak_bytes": r.cuda_peak_bytes,
            "ttft_s": r.ttft_s,
        }
    n = len(gpu.model.model.layers)
    predictors = Predictors(
        "tiny",
        0.05,
        [torch.randn(4, 32) for _ in range(n)],
        [torch.zeros(4) for _ in range(n)],
        [torch.randn(96, 4) for _ in range(n)],
        [torch.full((96,), 1e4) for _ in range(n)],
    )
    path = f"{tmp}/tiny-pred.safetensors"
    predictors.save(path)
    r = generate(gpu, prompt, PredictorPolicy(0.5, path), max_new_tokens=12)
    out["predictor_all_active"] = {
        "device": r.device,
        "same_tokens_as_cpu_dense": r.token_ids == reference,
        "active_fraction": r.active_fraction,
    }
    return out


def _ffn_70b(reps: int = 20) -> dict:
    d, f = 8192, 28672
    dt = torch.bfloat16
    gu = torch.randn(f, 2, d, device="cuda", dtype=dt) * d**-0.5
    down_t = torch.randn(f, d, device="cuda", dtype=dt) * f**-0.5
    x = torch.randn(d, device="cuda", dtype=dt)

    def dense():
        g = torch.mv(gu.view(2 * f, d), x).view(f, 2)
        return torch.mv(down_t.t(), torch.nn.functional.silu(g[:, 0]) * g[:, 1])

    def gathered(idx):
        g = torch.mv(gu.index_select(0, idx).view(-1, d), x).view(-1, 2)
        h = torch.nn.functional.silu(g[:, 0]) * g[:, 1]
        return torch.mv(down_t.index_select(0, idx).t(), h)

    def timed(fn) -> float:
        fn()
        times = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)

    dense_ms = timed(dense)
    nbytes = 3 * d * f * 2
    points = []
    for a in (0.5, 0.3, 0.1):
        idx = torch.randperm(f, device="cuda")[: round(a * f)].sort().values
        ms = timed(lambda idx=idx: gathered(idx))
        points.append({"active_fraction": a, "gathered_ms": ms, "speedup": dense_ms / ms})
    return {
        "shape": "llama-70b FFN, bf16, batch 1",
        "gpu": torch.cuda.get_device_name(),
        "dense_ms": dense_ms,
        "dense_bytes_per_s": nbytes / dense_ms * 1e3,
        "points": points,
    }


def _hybrid_checks(tmp: str) -> dict:
    frequency = torch.rand(3, 96, generator=torch.Generator().manual_seed(0))
    hot = [24, 48, 72]
    cpu = LoadedModel(
        split_hot_cold(tiny_llama(), frequency, hot_neurons=hot), word_tokenizer(64), "tiny", ""
    )
    gpu_model = split_hot_cold(tiny_llama(), frequency, hot_neurons=hot, hot_device="cuda")
    gpu = LoadedModel(gpu_model, word_tokenizer(64), "tiny", "")
    n = len(gpu_model.model.layers)
    gen = torch.Generator().manual_seed(1)
    predictors = Predictors(
        "tiny",
        0.05,
        [torch.randn(4, 32, generator=gen) for _ in range(n)],
        [torch.zeros(4) for _ in range(n)],
        [torch.randn(96, 4, generator=gen) for _ in range(n)],
        [torch.zeros(96) for _ in range(n)],
    )
    path = f"{tmp}/tiny-hybrid-pred.safetensors"
    predictors.save(path)
    out = {}
    for name, policy in {
        "static": StaticPolicy(0.3),
        "predictor": PredictorPolicy(0.5, path),
    }.items():
        expected = generate(cpu, "w1 w2 w3 w4", policy, max_new_tokens=12)
        r = generate(gpu, "w1 w2 w3 w4", policy, max_new_tokens=12)
        out[name] = {
            "same_tokens_as_cpu_split": r.token_ids == expected.token_ids,
            "weight_bytes_per_device": r.weight_bytes_per_device,
            "hot_activation_share": r.hot_activation_share,
            "cpu_split_hot_activation_share": expected.hot_activation_share,
            "achieved_sparsity": r.achieved_sparsity,
        }
    return out


def _sites_checks() -> dict:
    prompt = "w1 w2 w3 w4"
    out = {}
    for site in ("h", "gate", "input"):
        policy = StaticPolicy(0.3, site=site)
        cpu = LoadedModel(tiny_llama(), word_tokenizer(64), "tiny", "")
        sparsify(cpu.model, policy)
        for mlp in sparse_mlps(cpu.model):
            mlp.skipping = False  # the masked reference
        expected = generate(cpu, prompt, policy, max_new_tokens=12)
        gpu = LoadedModel(tiny_llama().to("cuda"), word_tokenizer(64), "tiny", "")
        r = generate(gpu, prompt, policy, max_new_tokens=12)
        out[site] = {
            "same_tokens_as_cpu_reference": r.token_ids == expected.token_ids,
            "weight_bytes_read_per_token": r.weight_bytes_read_per_token,
            "dense_weight_bytes_per_token": r.dense_weight_bytes_per_token,
            "achieved_sparsity": r.achieved_sparsity,
        }
    return out


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        result = {
            "torch": torch.__version__,
            "tiny": _tiny_checks(tmp),
            "hybrid": _hybrid_checks(tmp),
            "ffn": _ffn_70b(),
            "sites": _sites_checks(),
            "e2e_tinyllama": bench_e2e("tinyllama-1.1b", 0.5, tokens=32, device="cuda"),
        }
    print(json.dumps(result, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
