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

from inference.config import ModelShape

GROUP = 256
_FORMAT = "placement-1"
BYTES_PER_WEIGHT = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


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

    def to_json(self) -> dict:
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
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

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
