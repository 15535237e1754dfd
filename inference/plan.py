"""Hot-neuron placement plan: which MLP neurons go to the GPU under a byte budget (PowerInfer).

Dense parts (attention, embeddings, norms) go to the GPU first; the rest of the budget holds MLP
neurons in groups of ``GROUP`` (PowerInfer's solver batches 256), chosen greedily by profiled
activation frequency. Every neuron costs the same bytes, so taking groups in descending order of
summed frequency maximises the activations served by the GPU (the ILP's optimum up to grouping).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from gguf import GGMLQuantizationType

from inference.config import ModelShape
from inference.quantized import bytes_per_weight

GROUP = 256
_FORMAT = "placement-1"
# Bytes a weight takes as stored, by format, from gguf's block sizes (Q4_1: 20 bytes a block of
# 32 = 0.625; Q4_K: 144 bytes a super-block of 256 = 0.5625; Q6_K: 210 / 256).
BYTES_PER_WEIGHT = {
    name.lower(): bytes_per_weight(GGMLQuantizationType[name])
    for name in ("F32", "F16", "BF16", "Q8_0", "Q6_K", "Q4_1", "Q4_0", "Q4_K")
}


@dataclass
class Placement:
    shape: ModelShape
    weight_format: str
    gpu_budget_bytes: int
    dense_bytes: int  # attention, embeddings, norms: on the GPU
    hot_neurons_per_layer: list[int]
    gpu_bytes: int
    cpu_bytes: int
    gpu_activation_share: float  # expected share of neuron activations served by the GPU
    synthetic_profile: bool
    # The profile the plan was made from (its file, the |h| eps of its frequencies, the model's
    # fingerprint), so that `generate --plan` orders neurons exactly as the plan counted them.
    profile: str | None = None
    activity_threshold: float | None = None
    profile_fingerprint: str | None = None

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "format": _FORMAT}

    @classmethod
    def from_json(cls, data: dict) -> Placement:
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"not a placement plan (format {_FORMAT!r}); make one with `plan`")
        fields = {k: v for k, v in data.items() if k != "format"}
        try:
            return cls(**{**fields, "shape": ModelShape(**fields["shape"])})
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed placement plan: {exc}") from None

    def save(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path | str) -> Placement:
        if not Path(path).is_file():
            raise FileNotFoundError(f"plan file {path} not found (make one with `plan --out`)")
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not JSON ({exc.msg} at line {exc.lineno})") from None

    def summary(self) -> str:
        gib = 2**30
        hot = sum(self.hot_neurons_per_layer)
        total = self.shape.num_layers * self.shape.intermediate_size
        per_layer = self.hot_neurons_per_layer
        lines = [
            f"plan for {self.shape.name} ({self.weight_format}, "
            f"{self.shape.total_params / 1e9:.1f} B parameters) "
            f"under a GPU budget of {self.gpu_budget_bytes / gib:.1f} GiB",
            f"  dense parts on GPU: {self.dense_bytes / gib:.2f} GiB",
            f"  hot MLP neurons on GPU: {hot} of {total} ({hot / total:.1%}), "
            f"per layer {min(per_layer)}..{max(per_layer)}",
            f"  bytes on GPU: {self.gpu_bytes / gib:.2f} GiB, "
            f"on CPU: {self.cpu_bytes / gib:.2f} GiB",
            f"  expected share of MLP activations served by the GPU: "
            f"{self.gpu_activation_share:.1%}",
        ]
        if self.synthetic_profile:
            lines.append(
                "  NOTE: no profile of this model was given; activation frequencies are a "
                "SYNTHETIC power law (rank**-1, mean 20 % active per neuron; see "
                "synthetic_frequency), so the share is illustrative only."
            )
        return "\n".join(lines)


def parse_bytes(text: str) -> int:
    """``"24GiB"``, ``"24 GB"``, ``"512MiB"`` or a plain number of bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?i?B?)\s*", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"not a size: {text!r} (try 24GiB)")
    number, unit = float(match.group(1)), match.group(2).upper()
    powers = {"": 0, "B": 0, "K": 1, "M": 2, "G": 3, "T": 4}
    base = 1024 if "I" in unit else 1000
    return int(number * base ** powers[unit.replace("I", "").replace("B", "") or ""])


def synthetic_frequency(
    shape: ModelShape, exponent: float = 1.0, mean: float = 0.2
) -> torch.Tensor:
    """``[L, F]`` power-law activation frequencies: neuron of rank r fires with probability
    proportional to ``r ** -exponent``, scaled to a mean of ``mean`` and capped at 1."""
    ranks = torch.arange(1, shape.intermediate_size + 1, dtype=torch.float64)
    layer = ranks**-exponent
    layer = (layer * (mean / layer.mean())).clamp(max=1.0)
    return layer.expand(shape.num_layers, -1).clone()


def plan_placement(
    shape: ModelShape,
    gpu_budget_bytes: int,
    frequency: torch.Tensor | None = None,
    weight_format: str = "q4_0",
) -> Placement:
    """Greedy hot-neuron placement; ``frequency`` is ``[L, F]`` (``None``: synthetic power law)."""
    if weight_format not in BYTES_PER_WEIGHT:
        raise ValueError(f"weight format must be one of {sorted(BYTES_PER_WEIGHT)}")
    synthetic = frequency is None
    if frequency is None:
        frequency = synthetic_frequency(shape)
    if tuple(frequency.shape) != (shape.num_layers, shape.intermediate_size):
        raise ValueError(
            f"profile is {tuple(frequency.shape)} (layers, neurons) but {shape.name} is "
            f"({shape.num_layers}, {shape.intermediate_size})"
        )
    per_weight = BYTES_PER_WEIGHT[weight_format]
    total_bytes = int(shape.total_params * per_weight)
    mlp_bytes = int(shape.num_layers * shape.mlp_params_per_layer * per_weight)
    dense_bytes = total_bytes - mlp_bytes
    if dense_bytes > gpu_budget_bytes:
        raise ValueError(
            f"the dense parts alone need {dense_bytes / 2**30:.2f} GiB, more than the "
            f"{gpu_budget_bytes / 2**30:.2f} GiB budget; try a smaller weight format"
        )
    group_bytes = GROUP * shape.mlp_params_per_neuron * per_weight
    groups_fitting = int((gpu_budget_bytes - dense_bytes) // group_bytes)

    ordered = frequency.double().sort(dim=1, descending=True).values  # [L, F]
    num_groups = -(-shape.intermediate_size // GROUP)
    padded = torch.zeros(shape.num_layers, num_groups * GROUP, dtype=torch.float64)
    padded[:, : shape.intermediate_size] = ordered
    group_value = padded.view(shape.num_layers, num_groups, GROUP).sum(dim=2)  # [L, G]
    # Within a layer values fall with the group index, so the global top groups are prefixes.
    chosen = group_value.flatten().argsort(descending=True)[:groups_fitting]
    hot_groups = torch.bincount(chosen // num_groups, minlength=shape.num_layers)
    hot = [min(int(g) * GROUP, shape.intermediate_size) for g in hot_groups]

    served = sum(float(ordered[layer, :n].sum()) for layer, n in enumerate(hot))
    neuron_bytes = shape.mlp_params_per_neuron * per_weight
    gpu_bytes = dense_bytes + int(sum(hot) * neuron_bytes)
    return Placement(
        shape=shape,
        weight_format=weight_format,
        gpu_budget_bytes=gpu_budget_bytes,
        dense_bytes=dense_bytes,
        hot_neurons_per_layer=hot,
        gpu_bytes=gpu_bytes,
        cpu_bytes=total_bytes - gpu_bytes,
        gpu_activation_share=served / max(float(ordered.sum()), 1e-12),
        synthetic_profile=synthetic,
    )


# --- Whole-model GPU placement (the Triton kernels' path): which of four ways a model fits ---

GPU_WEIGHT_BYTES = {"bf16": 2.0, "int8": 1.0}  # per weight; int8 adds a fp32 scale per row
KV_BYTES_PER_VALUE = 2  # bf16 cache
GPU_RESERVE_BYTES = 2 * 2**30  # CUDA context, cuBLAS workspace, activations, graph pools
# Memory the driver reports (nvidia-smi's total), not the marketing figure: an "80 GB" H100 has
# 81559 MiB (79.6 GiB), a "141 GB" H200 143771 MiB (140.4 GiB).
GPU_MEMORY_BYTES = {
    "h100": 81559 * 2**20,
    "h200": 143771 * 2**20,
    "a100": 81920 * 2**20,
    "l40s": 46068 * 2**20,
    "rtx4090": 24564 * 2**20,
}


def gpu_memory_bytes(text: str) -> int:
    """A GPU's memory: a name of ``GPU_MEMORY_BYTES`` (``h100``) or a size (``80GiB``)."""
    named = GPU_MEMORY_BYTES.get(text.strip().lower())
    return named if named is not None else parse_bytes(text)


@dataclass(frozen=True)
class GpuFit:
    """One way to place a whole model on GPUs for a given GPU memory, and whether it fits."""

    name: str
    fits: bool
    gpus: int
    weight_bytes: int  # all GPUs together (the hybrid: on the GPU)
    kv_bytes: int
    most_on_one_gpu_bytes: int
    detail: str
    device_map: dict[str, int | str] | None = None  # accelerate's format, where it applies


def kv_bytes_per_token(shape: ModelShape) -> int:
    """Bytes the KV cache holds per position: keys and values of every layer (bf16)."""
    return 2 * shape.num_layers * shape.num_kv_heads * shape.head_dim * KV_BYTES_PER_VALUE


def gpu_weight_bytes(shape: ModelShape, weight_format: str) -> int:
    """Bytes of ``shape``'s weights on a GPU in ``weight_format`` (``GPU_WEIGHT_BYTES``): for
    ``int8`` the projections as int8 with a fp32 scale per output row (``triton_kernels``'
    ``Int8Weight``), embeddings, head and norms in bf16."""
    if weight_format not in GPU_WEIGHT_BYTES:
        raise ValueError(f"GPU weight format must be one of {sorted(GPU_WEIGHT_BYTES)}")
    if weight_format == "bf16":
        return 2 * shape.total_params
    projections = shape.num_layers * (shape.mlp_params_per_layer + shape.attention_params_per_layer)
    kv = shape.num_kv_heads * shape.head_dim
    rows = shape.num_layers * (2 * shape.intermediate_size + shape.hidden_size  # gate, up, down
                               + 2 * shape.hidden_size + 2 * kv)  # q, o; k, v  # fmt: skip
    return projections + 4 * rows + 2 * (shape.total_params - projections)


def layer_device_map(shape: ModelShape, gpus: int) -> dict[str, int]:
    """An accelerate ``device_map`` (``from_pretrained(device_map=...)``) putting ``shape``'s
    layers on ``gpus`` GPUs in equal runs, the embeddings on the first, the norm and head on
    the last."""
    per_gpu = -(-shape.num_layers // gpus)
    device_map: dict[str, int] = {"model.embed_tokens": 0}
    for layer in range(shape.num_layers):
        device_map[f"model.layers.{layer}"] = layer // per_gpu
    device_map.update({"model.norm": gpus - 1, "model.rotary_emb": gpus - 1, "lm_head": gpus - 1})
    return device_map


def gpu_placements(
    shape: ModelShape, gpu_bytes: int, *, gpus: int = 1, context_tokens: int = 4096
) -> list[GpuFit]:
    """The four ways to run ``shape`` on GPUs of ``gpu_bytes`` each (``GPU_RESERVE_BYTES`` of
    each kept back), with a KV cache of ``context_tokens`` positions:

    1. one GPU, 8-bit weights (``int8``);
    2. one GPU, bf16 weights, with the most positions its KV cache could then hold;
    3. layer by layer over ``gpus`` GPUs in bf16 (accelerate's device map), or, with ``gpus``
       1, the fewest GPUs of this size that would hold it;
    4. hybrid: hot MLP neurons on one GPU in bf16, cold ones on the CPU (``plan_placement``).
    """
    if gpus < 1 or context_tokens < 1:
        raise ValueError("gpus and context_tokens must be at least 1")
    usable = gpu_bytes - GPU_RESERVE_BYTES
    kv_token = kv_bytes_per_token(shape)
    kv = kv_token * context_tokens
    gib = 2**30
    fits = []
    for fmt, name in (("int8", "one GPU, 8-bit weights"), ("bf16", "one GPU, bf16 weights")):
        weights = gpu_weight_bytes(shape, fmt)
        room = max(0, (usable - weights) // kv_token)
        fits.append(GpuFit(
            name, weights + kv <= usable, 1, weights, kv, weights + kv,
            f"{(weights + kv) / gib:.1f} GiB of {usable / gib:.1f} GiB usable; "
            f"KV room for {room} positions",
        ))  # fmt: skip
    weights = gpu_weight_bytes(shape, "bf16")
    layer_bytes = 2 * (shape.mlp_params_per_layer + shape.attention_params_per_layer)
    ends = 2 * shape.embedding_params  # embeddings on the first GPU, head on the last (at most)
    per_layer = layer_bytes + kv // shape.num_layers

    def most_on_one(n: int) -> int:
        return -(-shape.num_layers // n) * per_layer + ends

    needed = next(
        (n for n in range(1, shape.num_layers + 1) if most_on_one(n) <= usable), None
    )  # None: not even one layer a GPU fits
    n = gpus if gpus > 1 or needed is None else needed
    most = most_on_one(n)
    fits.append(GpuFit(
        f"layer by layer over {n} GPU(s), bf16", most <= usable, n, weights, kv, most,
        f"{-(-shape.num_layers // n)} layers a GPU, at most {most / gib:.1f} GiB on one; "
        + (f"needs {needed} GPU(s) of this size" if needed else "one layer a GPU does not fit"),
        layer_device_map(shape, n),
    ))  # fmt: skip
    try:
        hybrid = plan_placement(shape, max(0, usable - kv), weight_format="f16")
        hot = sum(hybrid.hot_neurons_per_layer) / (shape.num_layers * shape.intermediate_size)
        fits.append(GpuFit(
            "hybrid: hot neurons on one GPU, cold on the CPU (bf16)", True, 1,
            hybrid.gpu_bytes, kv, hybrid.gpu_bytes + kv,
            f"{hot:.0%} of MLP neurons on the GPU, {hybrid.cpu_bytes / gib:.1f} GiB on the CPU, "
            f"{hybrid.gpu_activation_share:.0%} of activations served by the GPU "
            f"({'synthetic' if hybrid.synthetic_profile else 'profiled'} frequencies)",
        ))  # fmt: skip
    except ValueError as exc:  # the dense parts alone exceed the GPU
        fits.append(GpuFit("hybrid: hot neurons on one GPU, cold on the CPU (bf16)", False, 1,
                           0, kv, 0, str(exc)))  # fmt: skip
    return fits


def gpu_fit_summary(shape: ModelShape, gpu_bytes: int, fits: list[GpuFit],
                    context_tokens: int) -> str:  # fmt: skip
    """The lines ``inference plan`` prints: each way, whether it fits, and why."""
    lines = [
        f"{shape.name} on GPUs of {gpu_bytes / 2**30:.1f} GiB "
        f"({GPU_RESERVE_BYTES / 2**30:.0f} GiB kept back each), KV cache of {context_tokens} "
        f"positions ({kv_bytes_per_token(shape) * context_tokens / 2**30:.2f} GiB, bf16):"
    ]
    for fit in fits:
        lines.append(f"  {'fits   ' if fit.fits else 'no     '} {fit.name}: {fit.detail}")
    return "\n".join(lines)
