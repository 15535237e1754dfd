"""End-to-end decode speed of each threshold site against dense, on one model in one run.

    python -m benchmarks e2e --shape tinyllama-1.1b --sparsity 0.5 [--format q4_0]
        [--tokens N] [--json]

The model is a LLaMA of the named shape (``config.SHAPES``) with seeded random weights built in
memory, fp32 (or, with ``--format q4_0|q4_1|q8_0``, streamed tensor by tensor to a GGUF in that
block format and loaded as stored: a ``llama-2-7b`` Q4_0 never exists in fp32; the GGUF is
temporary, or kept under ``--gguf-dir`` and reused by later runs), batch
1, on the threads torch has (``--threads``, default 2). Thresholds for each site are calibrated
on the model's own activations (a profile of a few prompts, ``calibrate``'s per-layer
quantiles). Dense and each site then decode the same prompt greedily in alternating
rounds (dense, h, gate, input, dense, ...), so drift on a shared machine hits all alike; each
figure is the median over rounds and ``speedup`` is over dense in the same run. ``tokens_per_s``
counts decode steps only (the prompt is 8 words). ``transformers_tokens_per_s`` is plain
``transformers`` ``generate`` on the same weights before the engine touches them, timed the same
way (decode steps only), once, first (fp32 only). Results: docs/benchmarks.md.
"""

from __future__ import annotations

import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from inference.config import shape_named
from inference.generate import generate, prompt_ids
from inference.loading import LoadedModel
from inference.policies import DensePolicy, Policy, StaticPolicy
from inference.profile import calibrated_policy, profile_model
from inference.provenance import resident_bytes
from inference.quantized import is_quantized, load_gguf_quantized, write_random_gguf
from inference.random_model import llama_config, random_llama, word_tokenizer
from inference.sparsify import sparsify

PROMPT = " ".join(f"w{i}" for i in range(1, 9))
CALIBRATION_PROMPTS = [" ".join(f"w{i}" for i in range(j, j + 24)) for j in (20, 200, 2000)]
SITES = ("h", "gate", "input")


def _transformers_tokens_per_s(loaded: LoadedModel, tokens: int) -> float:
    """Plain ``generate`` for 1 and for ``tokens`` new tokens: decode steps per second."""
    ids = prompt_ids(loaded.tokenizer, PROMPT)
    seconds = []
    with torch.inference_mode():
        for new in (1, tokens):
            start = time.perf_counter()
            loaded.model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                min_new_tokens=new, do_sample=False, pad_token_id=0,
            )  # fmt: skip
            seconds.append(time.perf_counter() - start)
    return (tokens - 1) / (seconds[1] - seconds[0])


def _decode(loaded: LoadedModel, policy: Policy, tokens: int) -> dict:
    if isinstance(policy, DensePolicy) and not is_quantized(loaded.model):  # attention row-major
        sparsify(loaded.model, StaticPolicy(0.0))
    result = generate(loaded, PROMPT, policy, max_new_tokens=tokens)
    return {
        "tokens_per_s": 1.0 / result.decode_latency_s_per_token,
        "weight_bytes_read_per_token": result.weight_bytes_read_per_token,
        "achieved_sparsity": result.achieved_sparsity,
        "new_tokens": result.new_tokens,
    }


def kept_random_gguf(shape: str, weight_format: str, seed: int, gguf_dir: Path) -> Path:
    """``<gguf_dir>/<shape>-<format>-s<seed>.gguf``, streamed there once (``write_random_gguf``)
    under a temporary name renamed when complete, so a killed run leaves no half file."""
    path = gguf_dir / f"{shape}-{weight_format}-s{seed}.gguf"
    if not path.is_file():
        gguf_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            write_random_gguf(shape_named(shape), partial, weight_format, seed=seed)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    return path


def bench_e2e(
    shape: str = "tinyllama-1.1b",
    sparsity: float = 0.5,
    *,
    tokens: int = 32,
    rounds: int = 3,
    threads: int | None = 2,
    seed: int = 0,
    device: str = "cpu",
    weight_format: str = "float32",
    gguf_dir: Path | None = None,
) -> dict:
    """Dense vs each site at ``sparsity`` on a random model of ``shape`` (see the module), on
    ``device`` (``cuda``: the skipping paths gather rows with torch ops), its weights in
    ``weight_format`` (``float32`` or a GGUF block format, ``quantized.FORMATS``), the GGUF
    kept in ``gguf_dir`` (written once) or temporary."""
    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity must be in (0, 1), got {sparsity}")
    if tokens < 2:
        raise ValueError("--tokens must be at least 2 (one decode step)")
    if threads:
        torch.set_num_threads(threads)
    if weight_format == "float32":
        model = random_llama(shape, seed=seed).to(device)
    elif gguf_dir is not None:
        path = kept_random_gguf(shape, weight_format, seed, Path(gguf_dir))
        model = load_gguf_quantized(path, llama_config(shape))
    else:
        with tempfile.TemporaryDirectory() as tmp:  # the map keeps the file's pages
            path = write_random_gguf(shape_named(shape), Path(tmp) / "model.gguf", weight_format)
            model = load_gguf_quantized(path, llama_config(shape))
    loaded = LoadedModel(model, word_tokenizer(model.config.vocab_size), f"{shape}-s{seed}", "")
    transformers_tps = (
        _transformers_tokens_per_s(loaded, tokens) if weight_format == "float32" else None
    )
    profile = profile_model(loaded, CALIBRATION_PROMPTS, max_new_tokens=2)
    policies: dict[str, Policy] = {"dense": DensePolicy()}
    policies.update({site: calibrated_policy(profile, sparsity, site) for site in SITES})
    runs: dict[str, list[dict]] = {name: [] for name in policies}
    for policy in policies.values():  # warm-up: layouts, kernels, page faults
        _decode(loaded, policy, 2)
    for _ in range(rounds):
        for name, policy in policies.items():
            runs[name].append(_decode(loaded, policy, tokens))

    def median(name: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[name])

    dense_tps = median("dense", "tokens_per_s")
    dense_bytes = median("dense", "weight_bytes_read_per_token")
    return {
        "shape": shape,
        "weight_format": weight_format,
        "resident_bytes": resident_bytes(),
        "peak_resident_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "device": device,
        "threads": torch.get_num_threads(),
        "tokens": tokens,
        "rounds": rounds,
        "target_sparsity": sparsity,
        "transformers_tokens_per_s": transformers_tps,
        "dense": {
            "tokens_per_s": dense_tps,
            "weight_bytes_read_per_token": dense_bytes,
            "relative_to_transformers": dense_tps / transformers_tps if transformers_tps else None,
        },
        "policies": [
            {
                "site": site,
                "achieved_sparsity": median(site, "achieved_sparsity"),
                "tokens_per_s": median(site, "tokens_per_s"),
                "weight_bytes_read_per_token": median(site, "weight_bytes_read_per_token"),
                "speedup": median(site, "tokens_per_s") / dense_tps,
                "byte_ratio": dense_bytes / median(site, "weight_bytes_read_per_token"),
            }
            for site in SITES
        ],
    }


def format_e2e(r: dict) -> str:
    dense = r["dense"]
    baseline = (
        f"transformers generate {r['transformers_tokens_per_s']:.2f} tok/s; "
        if r["transformers_tokens_per_s"]
        else ""
    )
    lines = [
        f"{r['shape']} (random weights, {r['weight_format']}, batch 1, {r['threads']} threads): "
        f"{r['tokens']} tokens, medians of {r['rounds']} alternating rounds, target sparsity "
        f"{r['target_sparsity']:.0%}; resident {r['resident_bytes'] / 2**30:.2f} GiB "
        f"(peak {r['peak_resident_bytes'] / 2**30:.2f} GiB)",
        f"{baseline}engine dense {dense['tokens_per_s']:.2f} tok/s, "
        f"{dense['weight_bytes_read_per_token'] / 1e9:.3f} GB/token",
        "site   sparsity  tok/s  speed-up  GB/token  byte ratio  of byte ratio",
    ]
    for p in r["policies"]:
        lines.append(
            f"{p['site']:6s} {p['achieved_sparsity']:8.1%}  {p['tokens_per_s']:5.2f}  "
            f"{p['speedup']:7.2f}x  {p['weight_bytes_read_per_token'] / 1e9:8.3f}  "
            f"{p['byte_ratio']:9.2f}x  {p['speedup'] / p['byte_ratio']:13.2f}"
        )
    return "\n".join(lines)
