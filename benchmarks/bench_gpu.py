"""The GPU path, measured (issue 32): one script, under 8 minutes of an H100.

    python -m benchmarks.bench_gpu [--out DIR] [--layers N] [--tokens N]
    python -m benchmarks.bench_gpu --dry-run      # tiny shapes on the CPU, kernels interpreted

1. ``correctness``: the Triton kernels against the torch gather path on CUDA (every site, fp16,
   bf16 and int8, at 70B widths), and greedy tokens of the tiny random model on the CUDA-graph
   decode step against the Python layer loop, for every site, in fp32 and with its projections
   int8 (``int8.quantize_model_int8``).
2. ``layers``: one LLaMA-70B layer (d 8192, f 28672, 64/8 heads, bf16, batch 1), CUDA-event
   timed: dense (cuBLAS ``F.linear``, all seven projections) and each site at 0/25/40/50/65 %
   of its thresholded values dropped (thresholds at those quantiles of the token's values),
   with the bytes each read, its speed-up over dense, its byte ratio (dense bytes / its bytes)
   and the fraction of that ratio it reaches; the same for 8-bit weights at 50 % (``Int8Linear``
   projections laid out as an int8 model holds them).
3. ``copy_bandwidth_bytes_per_s``: a 4 GiB device-to-device copy (bytes read + written per
   second): the roof the dense decode is held to.
4. ``decode``: a random 70B-shaped model with as many layers as fit (bf16), batch-1 greedy
   decode through ``LeanDecoder`` (``StaticStep``: CUDA graphs), dense and each site with
   per-layer thresholds calibrated to drop ~50 % (on the prompt's values): tokens/s, weight
   bytes per token, speed-up over dense, and dense's share of the copy bandwidth.
   ``decode_int8``: the same with the model's projections int8 (``quantize_model_int8``), its
   weight bytes counted as int8 values plus fp32 scales.

Writes ``bench_gpu.json`` to ``--out`` (default ``$OUT``, else the working directory) and prints
a table. ``--dry-run`` runs every step on tiny shapes on the CPU with the kernels under Triton's
interpreter (``TRITON_INTERPRET=1``, which it sets), so the script is checked where no GPU is:
its timings there mean nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from torch import nn
from transformers import LlamaForCausalLM
from transformers.initialization import no_init_weights

from inference import kernels, triton_kernels
from inference.config import SHAPES, ModelShape
from inference.decoder import LeanDecoder
from inference.int8 import Int8Linear, quantize_model_int8
from inference.policies import DensePolicy, StaticPolicy
from inference.random_model import llama_config, tiny_llama
from inference.sparse_mlp import set_thresholds, sparse_mlps
from inference.sparsify import sparsify

SPARSITIES = (0.0, 0.25, 0.4, 0.5, 0.65)
_RECORDED = 4  # decode tokens recorded for the bytes read (after the timed ones)
SITES = ("h", "gate", "input")
TINY_LAYER = ModelShape("tiny-layer", 128, 352, 1, 4, 2, 64)  # --dry-run's "70B layer"


class Clock:
    """Median time of a call: CUDA events on a GPU, ``perf_counter`` on the CPU."""

    def __init__(self, device: torch.device, reps: int) -> None:
        self.device, self.reps = device, reps

    def __call__(self, fn) -> float:
        fn()  # compile / warm up
        times = []
        for _ in range(self.reps):
            if self.device.type == "cuda":
                start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        return statistics.median(times)


def _quantile_threshold(values: torch.Tensor, drop: float) -> float:
    """The threshold below which ``drop`` of ``|values|`` fall (0: keep all)."""
    if drop <= 0:
        return 0.0
    return float(torch.quantile(values.float().abs(), drop))


# --- 1. correctness ---------------------------------------------------------------------------


def kernel_checks(device: torch.device, d: int, f: int) -> dict:
    """Each site's Triton kernel against the torch gather path at 50 % dropped, per dtype:
    the largest difference relative to the output's scale, and whether the kept counts agree."""
    g = torch.Generator(device=device).manual_seed(0)
    act = torch.nn.SiLU()
    out = {}
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16), ("int8", None)):
        wdt = dtype or torch.bfloat16

        def draw(*shape, wdt=wdt):
            return (torch.randn(*shape, generator=g, device=device) * shape[-1] ** -0.5).to(wdt)

        gate, up, down_t = draw(f, d), draw(f, d), draw(f, d)
        w_t, x = draw(d, d), draw(d) * d**0.5
        if dtype is None:  # int8: the kernels read the quantized weights, the reference their
            q = [triton_kernels.quantize_int8(w, output_axis=a)  # dequantized values
                 for w, a in ((gate, 0), (up, 0), (down_t, 1), (w_t, 1))]  # fmt: skip
            ours_w = q
            ref_w = [triton_kernels.dequantize(qq, output_axis=a, dtype=wdt)
                     for qq, a in zip(q, (0, 0, 1, 1), strict=True)]  # fmt: skip
        else:
            ours_w = ref_w = [gate, up, down_t, w_t]
        result = {}
        a = act(F.linear(x, ref_w[0]))
        h = a * F.linear(x, ref_w[1])
        t_x, t_h, t_a = (_quantile_threshold(v, 0.5) for v in (x, h, a))
        calls = {
            "input": (partial(triton_kernels.input_matvec, ours_w[3], x, t_x),
                      partial(kernels.input_matvec, ref_w[3], x, t_x, use_kernel=False)),
            "h": (partial(triton_kernels.h_ffn, *ours_w[:3], x, t_h, act),
                  partial(kernels.h_ffn, *ref_w[:3], x, t_h, act, use_kernel=False)),
            "gate": (partial(triton_kernels.gate_ffn, *ours_w[:3], x, t_a, act),
                     partial(kernels.gate_ffn, *ref_w[:3], x, t_a, act, use_kernel=False)),
        }  # fmt: skip
        for site, (ours, ref) in calls.items():
            (o, kept), (e, expected_kept) = ours(), ref()
            error = float((o.float() - e.float()).abs().max() / e.float().abs().max())
            result[site] = {
                "max_error_relative_to_max": error,
                "same_kept": int(kept) == int(expected_kept),
                "ok": int(kept) == int(expected_kept) and error < 2e-2,
            }
        out[name] = result
    return out


def decode_checks(device: torch.device) -> dict:
    """Greedy tokens of the tiny random model in fp32 (no TF32): the static step (CUDA graphs
    on CUDA) against the Python layer loop, every site at 0.3, with fp32 weights and with the
    whole model's projections int8 (``quantize_model_int8``). (In bf16 the two sum attention
    in different orders, and a threshold may then keep a different entry.)"""
    dtype = torch.float32
    prompt = torch.tensor([[1, 9, 17, 30, 41, 5, 12, 7]], device=device)
    out = {}
    policies = {"dense": DensePolicy(), **{s: StaticPolicy(0.3, site=s) for s in SITES}}
    runs = [(name, policy, False) for name, policy in policies.items()]
    runs += [(f"int8 {name}", policy, True) for name, policy in policies.items()]
    for name, policy, int8 in runs:
        model = tiny_llama().to(device=device, dtype=dtype)
        model = sparsify(quantize_model_int8(model) if int8 else model, policy)
        tokens = []
        for static in (True, False):
            decoder = LeanDecoder(model, 24, compiled_step=static, static_step=static)
            with torch.inference_mode():
                logits, ids = decoder.prefill(prompt), []
                for _ in range(12):
                    ids.append(int(logits.argmax()))
                    logits = decoder.step(torch.tensor([[ids[-1]]], device=device))
            tokens.append(ids)
        out[name] = {"same_greedy_tokens": tokens[0] == tokens[1], "tokens": tokens[0]}
    return out


# --- 2. one layer -----------------------------------------------------------------------------


def layer_timings(device: torch.device, shape: ModelShape, clock: Clock) -> dict:
    """One layer's projections at batch 1: dense and each site at each sparsity (bf16), and
    8-bit weights dense and at 50 %."""
    d, f = shape.hidden_size, shape.intermediate_size
    kv = shape.num_kv_heads * shape.head_dim
    dt = torch.bfloat16
    g = torch.Generator(device=device).manual_seed(1)

    def draw(*s):
        return (torch.randn(*s, generator=g, device=device) * s[-1] ** -0.5).to(dt)

    attention = {"q": draw(d, d), "k": draw(kv, d), "v": draw(kv, d), "o": draw(d, d)}
    gate, up, down = draw(f, d), draw(f, d), draw(d, f)
    down_t = down.t().contiguous()
    transposed = {k: w.t().contiguous() for k, w in attention.items()}
    gate_t, up_t = gate.t().contiguous(), up.t().contiguous()
    x = torch.randn(d, generator=g, device=device).to(dt)
    o_in = torch.randn(d, generator=g, device=device).to(dt)
    act = torch.nn.SiLU()
    a = act(F.linear(x, gate))
    h = a * F.linear(x, up)
    attention_weights = 2 * d * d + 2 * kv * d
    dense_weights = attention_weights + 3 * f * d

    def attention_dense():
        for name in ("q", "k", "v"):
            F.linear(x, attention[name])
        F.linear(o_in, attention["o"])

    def dense():
        attention_dense()
        F.linear(act(F.linear(x, gate)) * F.linear(x, up), down)

    dense_s = clock(dense)
    points = []
    for site in SITES:
        for drop in SPARSITIES:
            if site == "input":
                t_x, t_o, t_h = (_quantile_threshold(v, drop) for v in (x, o_in, h))

                def run(t_x=t_x, t_o=t_o, t_h=t_h):
                    for name in ("q", "k", "v"):
                        triton_kernels.input_matvec(transposed[name], x, t_x)
                    triton_kernels.input_matvec(transposed["o"], o_in, t_o)
                    gx = triton_kernels.input_matvec(gate_t, x, t_x)[0]
                    ux = triton_kernels.input_matvec(up_t, x, t_x)[0]
                    triton_kernels.input_matvec(down_t, act(gx) * ux, t_h)

                kept_x = float((x.abs() >= t_x).float().mean())
                kept_o = float((o_in.abs() >= t_o).float().mean())
                kept_h = float((h.abs() >= t_h).float().mean())
                read = (kept_x * (d * d + 2 * kv * d + 2 * f * d) + kept_o * d * d
                        + kept_h * f * d)  # fmt: skip
            else:
                values = h if site == "h" else a
                t = _quantile_threshold(values, drop)
                kernel = triton_kernels.h_ffn if site == "h" else triton_kernels.gate_ffn

                def run(t=t, kernel=kernel):
                    attention_dense()
                    kernel(gate, up, down_t, x, t, act)

                kept = float((values.abs() >= t).float().mean())
                read = attention_weights + (2 + kept) * f * d if site == "h" else (
                    attention_weights + (1 + 2 * kept) * f * d)  # fmt: skip
            seconds = clock(run)
            points.append(_point(site, drop, seconds, dense_s, read, dense_weights))
    int8 = _int8_layer(clock, x, o_in, attention, gate, up, down_t, act)
    return {
        "shape": f"{shape.name}: d {d}, f {f}, heads {shape.num_heads}/{shape.num_kv_heads}",
        "dtype": "bf16",
        "dense_s": dense_s,
        "dense_weight_bytes": 2 * dense_weights,
        "dense_bytes_per_s": 2 * dense_weights / dense_s,
        "points": points,
        "int8": int8,
    }


def _point(site, drop, seconds, dense_s, read_weights, dense_weights) -> dict:
    speedup = dense_s / seconds
    byte_ratio = dense_weights / read_weights
    return {
        "site": site,
        "sparsity": drop,
        "seconds": seconds,
        "weight_bytes_read": 2 * read_weights,
        "speedup_over_dense": speedup,
        "byte_ratio": byte_ratio,
        "fraction_of_byte_ratio": speedup / byte_ratio,
    }


def _int8_layer(clock, x, o_in, attention, gate, up, down_t, act) -> dict:
    """8-bit weights as an int8 model holds them (``int8.Int8Linear``: 1 byte a weight plus a
    fp32 scale per output row; row-major for the dense GEMV and the sites' gate and up, down
    transposed; every projection transposed at the input site): dense and each site at 50 %,
    against bf16 dense's bytes."""

    def int8(weight: torch.Tensor, *, transposed: bool = False) -> Int8Linear:
        q = triton_kernels.quantize_int8(weight, output_axis=0)
        linear = Int8Linear(q.values, q.scale)
        linear.set_transposed(transposed)
        return linear

    q = {name: int8(w) for name, w in attention.items()}
    q_t = {name: int8(w, transposed=True) for name, w in attention.items()}
    q_gate, q_up = int8(gate), int8(up)
    q_gate_t, q_up_t = int8(gate, transposed=True), int8(up, transposed=True)
    q_down = int8(down_t.t(), transposed=True)  # as a SparseMLP holds down: [F, D] rows

    def attention_dense():
        for name in ("q", "k", "v"):
            q[name].matvec(x)
        q["o"].matvec(o_in)

    def dense():
        attention_dense()
        q_down.matvec(act(q_gate.matvec(x)) * q_up.matvec(x))

    a = act(q_gate.matvec(x))
    h = a * q_up.matvec(x)
    t_a, t_h, t_x, t_o = (_quantile_threshold(v, 0.5) for v in (a, h, x, o_in))
    gate_up_down = (q_gate.kernel_weight, q_up.kernel_weight, q_down.kernel_weight)

    def input_site():
        for name in ("q", "k", "v"):
            triton_kernels.input_matvec(q_t[name].kernel_weight, x, t_x)
        triton_kernels.input_matvec(q_t["o"].kernel_weight, o_in, t_o)
        gx = triton_kernels.input_matvec(q_gate_t.kernel_weight, x, t_x)[0]
        ux = triton_kernels.input_matvec(q_up_t.kernel_weight, x, t_x)[0]
        triton_kernels.input_matvec(q_down.kernel_weight, act(gx) * ux, t_h)

    runs = {
        "dense": dense,
        "h": lambda: (attention_dense(), triton_kernels.h_ffn(*gate_up_down, x, t_h, act)),
        "gate": lambda: (attention_dense(), triton_kernels.gate_ffn(*gate_up_down, x, t_a, act)),
        "input": input_site,
    }
    seconds = {name: clock(fn) for name, fn in runs.items()}
    int8_bytes = sum(m.weight.numel() + 4 * m.scales.numel()
                     for m in (*q.values(), q_gate, q_up, q_down))  # fmt: skip
    return {
        "weight_bytes": int8_bytes,  # a byte a weight and a fp32 scale an output row
        "seconds_at_50_percent": seconds,
        "dense_bytes_per_s": int8_bytes / seconds["dense"],
    }


# --- 3. copy bandwidth ------------------------------------------------------------------------


def copy_bandwidth(device: torch.device, nbytes: int, clock: Clock) -> float:
    """Bytes read plus bytes written per second by a device-to-device copy of ``nbytes``."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * nbytes / clock(lambda: dst.copy_(src))


# --- 4. end to end ----------------------------------------------------------------------------


def random_model_on(device: torch.device, shape: ModelShape, layers: int) -> LlamaForCausalLM:
    """A ``shape``-shaped LLaMA of ``layers`` layers in bf16 (fp32 on the CPU) built and drawn
    on ``device`` (a 70B's layers never pass through CPU memory)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = llama_config(shape, num_hidden_layers=layers)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device), no_init_weights():
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, p.shape[1] ** -0.5, generator=g)
            else:
                p.fill_(1.0)
    return model.eval()


def calibrated_thresholds(model, site: str, prompt: torch.Tensor, drop: float) -> list:
    """Per-layer thresholds dropping ``drop`` of the prompt's thresholded values (``h`` or
    ``act(gate x)``; for ``input`` each group's input), read by hooks on the dense model."""
    seen: dict[tuple[int, str], torch.Tensor] = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        mlp, attn = layer.mlp, layer.self_attn
        taps = {"h": mlp.down_proj, "qkv": attn.q_proj, "o": attn.o_proj,
                "gate_up": mlp.gate_proj, "down": mlp.down_proj}  # fmt: skip
        for name, module in taps.items():
            hooks.append(module.register_forward_pre_hook(
                lambda _m, args, key=(i, name): seen.__setitem__(key, args[0].detach())
            ))  # fmt: skip
        hooks.append(mlp.act_fn.register_forward_hook(
            lambda _m, _a, out, key=(i, "a"): seen.__setitem__(key, out.detach())
        ))  # fmt: skip
    with torch.inference_mode():
        model(input_ids=prompt)
    for hook in hooks:
        hook.remove()
    out = []
    for i in range(len(model.model.layers)):
        if site == "input":
            out.append(tuple(_quantile_threshold(seen[i, g], drop)
                             for g in ("qkv", "o", "gate_up", "down")))  # fmt: skip
        else:
            out.append(_quantile_threshold(seen[i, "h" if site == "h" else "a"], drop))
    return out


def decode_speed(
    device: torch.device, shape: ModelShape, layers: int, tokens: int, *, int8: bool = False
) -> dict:
    """Greedy batch-1 decode of ``tokens`` tokens on a random ``shape`` model of ``layers``
    layers: dense, then each site at ~50 % (thresholds calibrated on the prompt). ``int8``:
    the model's projections int8 with per-output scales (``quantize_model_int8``)."""
    model = random_model_on(device, shape, layers)
    if int8:
        quantize_model_int8(model)
    prompt = torch.randint(7, shape.vocab_size, (1, 32), device=device,
                           generator=torch.Generator(device=device).manual_seed(2))  # fmt: skip
    thresholds = {site: calibrated_thresholds(model, site, prompt, 0.5) for site in SITES}
    runs = {}
    for name in ("dense", *SITES):
        if name == "dense":
            sparsify(model, DensePolicy())
        else:
            sparsify(model, StaticPolicy(0.0, site=name))
            set_thresholds(model, thresholds[name])
        decoder = LeanDecoder(model, prompt.shape[1] + tokens + 2 + _RECORDED)
        with torch.inference_mode():
            logits = decoder.prefill(prompt)
            token = logits.argmax(-1, keepdim=True)
            logits = decoder.step(token)  # the first step captures the graph
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(tokens):
                token = logits.argmax(-1, keepdim=True)
                logits = decoder.step(token)
            _sync(device)
            seconds = time.perf_counter() - t0
            for mlp in sparse_mlps(model):  # what the timed tokens read, on a few more
                mlp.recording = True
            for _ in range(_RECORDED):
                logits = decoder.step(logits.argmax(-1, keepdim=True))
        reads = [sum(m.read_weights) / len(m.read_weights) for m in sparse_mlps(model)]
        kept = [sum(m.active_fractions) / len(m.active_fractions) for m in sparse_mlps(model)]
        for mlp in sparse_mlps(model):
            mlp.recording, mlp.read_weights, mlp.active_fractions = False, [], []
        runs[name] = {
            "tokens_per_s": tokens / seconds,
            "static_step": decoder.static is not None,
            "mlp_weights_read_per_token": sum(reads),
            "mean_active_fraction": sum(kept) / len(kept),
        }
    for timed in runs.values():
        timed["speedup_over_dense"] = timed["tokens_per_s"] / runs["dense"]["tokens_per_s"]
    weight_bytes = _weight_bytes(model)
    weights = "int8" if int8 else str(model.model.norm.weight.dtype).removeprefix("torch.")
    del model
    return {"shape": shape.name, "layers": layers, "tokens": tokens, "weights": weights,
            "weight_bytes": weight_bytes, "runs": runs}  # fmt: skip


def _weight_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s weights as stored: its parameters, and each ``Int8Linear``'s int8
    values and fp32 scales."""
    int8 = [m for m in model.modules() if isinstance(m, Int8Linear)]
    return sum(p.numel() * p.element_size() for p in model.parameters()) + sum(
        m.weight.numel() + 4 * m.scales.numel() for m in int8
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def layers_that_fit(shape: ModelShape, device: torch.device, headroom_bytes: int) -> int:
    """As many bf16 layers of ``shape`` as the free GPU memory holds after the embeddings,
    head and ``headroom_bytes`` (KV cache, graphs, calibration activations)."""
    free, _ = torch.cuda.mem_get_info(device)
    layer = 2 * (shape.mlp_params_per_layer + shape.attention_params_per_layer)
    room = free - headroom_bytes - 2 * shape.embedding_params
    return max(1, min(shape.num_layers, room // layer))


# --- the run ----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        raise SystemExit("no CUDA device (use --dry-run to check the script on the CPU)")
    device = torch.device("cpu" if dry else "cuda")
    shape = TINY_LAYER if dry else SHAPES["llama-70b"]
    clock = Clock(device, reps=1 if dry else 50)
    started = time.perf_counter()
    result: dict = {
        "dry_run": dry,
        "device": torch.cuda.get_device_name() if not dry else "cpu (Triton interpreter)",
        "torch": torch.__version__,
        "triton": triton.__version__,
    }
    with torch.inference_mode():
        result["correctness"] = {
            "kernels": kernel_checks(device, 64 if dry else 8192, 96 if dry else 28672),
            "decode": decode_checks(device),
        }
        print("correctness done", f"{time.perf_counter() - started:.0f} s", flush=True)
        result["layers"] = layer_timings(device, shape, clock)
        print("layers done", f"{time.perf_counter() - started:.0f} s", flush=True)
        result["copy_bandwidth_bytes_per_s"] = copy_bandwidth(
            device, 2**20 if dry else 4 * 2**30, clock)  # fmt: skip
    if dry:
        layers, e2e_shape = 2, SHAPES["tiny"]
    else:
        torch.cuda.empty_cache()
        layers = args.layers or layers_that_fit(shape, device, 6 * 2**30)
        e2e_shape = shape
    for key, int8 in (("decode", False), ("decode_int8", True)):
        decode = decode_speed(device, e2e_shape, layers, 4 if dry else args.tokens, int8=int8)
        dense_bytes_per_s = decode["weight_bytes"] * decode["runs"]["dense"]["tokens_per_s"]
        decode["dense_weight_bytes_per_s"] = dense_bytes_per_s
        decode["dense_share_of_copy_bandwidth"] = (
            dense_bytes_per_s / result["copy_bandwidth_bytes_per_s"]
        )
        result[key] = decode
        gc.collect()  # a decoder and its static step refer to each other (and its graphs)
        if not dry:
            torch.cuda.empty_cache()
        print(key, "done", f"{time.perf_counter() - started:.0f} s", flush=True)
    result["wall_s"] = time.perf_counter() - started
    return result


def table(result: dict) -> str:
    layers = result["layers"]
    lines = [
        f"{result['device']}: one layer of {layers['shape']} ({layers['dtype']}, batch 1); "
        f"dense {layers['dense_s'] * 1e3:.3f} ms, {layers['dense_bytes_per_s'] / 1e12:.2f} TB/s",
        f"{'site':6} {'sparsity':>8} {'ms':>8} {'speed-up':>9} {'byte ratio':>11} {'fraction':>9}",
    ]
    for p in layers["points"]:
        lines.append(
            f"{p['site']:6} {p['sparsity']:8.0%} {p['seconds'] * 1e3:8.3f} "
            f"{p['speedup_over_dense']:9.2f} {p['byte_ratio']:11.2f} "
            f"{p['fraction_of_byte_ratio']:9.2f}"
        )
    int8 = layers["int8"]
    lines.append("8-bit weights, ms (dense; sites at 50 %): " + ", ".join(
        f"{k} {v * 1e3:.3f}" for k, v in int8["seconds_at_50_percent"].items()))  # fmt: skip
    lines.append(f"copy bandwidth {result['copy_bandwidth_bytes_per_s'] / 1e12:.2f} TB/s")
    for decode in (result["decode"], result["decode_int8"]):
        lines.append(
            f"decode, {decode['shape']} with {decode['layers']} layers "
            f"({decode['weights']} weights), {decode['tokens']} tokens; "
            f"dense at {decode['dense_share_of_copy_bandwidth']:.0%} of the copy bandwidth"
        )
        for name, run_ in decode["runs"].items():
            lines.append(
                f"  {name:6} {run_['tokens_per_s']:8.2f} tok/s  "
                f"x{run_['speedup_over_dense']:.2f}  active {run_['mean_active_fraction']:.0%}  "
                f"static step {run_['static_step']}"
            )
    checks = result["correctness"]
    ok = all(c["ok"] for per in checks["kernels"].values() for c in per.values())
    same = all(c["same_greedy_tokens"] for c in checks["decode"].values())
    lines.append(f"kernels correct: {ok}; greedy tokens equal (graph step vs loop): {same}")
    lines.append(f"wall {result['wall_s']:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_gpu")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument("--layers", type=int, default=None, help="decode model layers (fit)")
    parser.add_argument("--tokens", type=int, default=64, help="decoded tokens per run")
    args = parser.parse_args(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # CPU tensors run the kernels interpreted
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_gpu.json"
    path.write_text(json.dumps(result, indent=1))
    print(table(result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
