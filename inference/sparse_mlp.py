"""Threshold activation sparsity as a drop-in replacement of a LLaMA MLP (TEAL/CATS style).

``inference.sparsify.sparsify(model, policy)`` swaps each layer's ``LlamaMLP`` for a ``SparseMLP``
that shares the same ``nn.Linear`` modules (no weight copies, identical state-dict keys), so the
rest of the code sees an ordinary ``transformers`` model.
"""

from __future__ import annotations

import torch
from torch import nn


class SparseMLP(nn.Module):
    """``down_proj(mask(act_fn(gate_proj(x)) * up_proj(x)))``, ``mask`` zeroing ``|h| < threshold``.

    At ``threshold == 0`` no mask is computed, so the output is bit-identical to the dense module.
    Each call appends the fraction of kept entries of ``h`` to ``active_fractions`` while
    ``recording`` is true (1.0 at threshold 0).
    """

    def __init__(self, mlp: nn.Module, threshold: float = 0.0) -> None:
        super().__init__()
        for name in ("gate_proj", "up_proj", "down_proj", "act_fn"):
            if not hasattr(mlp, name):
                raise TypeError(f"{type(mlp).__name__} has no {name}; expected a LLaMA-style MLP")
        self.gate_proj = mlp.gate_proj
        self.up_proj = mlp.up_proj
        self.down_proj = mlp.down_proj
        self.act_fn = mlp.act_fn
        self.threshold = float(threshold)
        self.recording = False
        self.active_fractions: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, S, D] -> h: [B, S, F] -> out: [B, S, D]
        h = self.act_fn(self.gate_proj(x)) * self.up_proj(x)
        if self.threshold > 0.0:
            keep = h.abs() >= self.threshold
            h = h * keep
            if self.recording:
                self.active_fractions.append(keep.float().mean().item())
        elif self.recording:
            self.active_fractions.append(1.0)
        return self.down_proj(h)

    @property
    def num_neurons(self) -> int:
        return self.down_proj.in_features

    @property
    def dense_weights(self) -> int:
        """Weights one dense call reads: gate, up and down."""
        return 3 * self.down_proj.weight.numel()

    def extra_repr(self) -> str:
        return f"threshold={self.threshold:g}"


def sparse_mlps(model: nn.Module) -> list[SparseMLP]:
    """The ``SparseMLP`` of each decoder layer, in layer order (empty before ``sparsify``)."""
    return [layer.mlp for layer in model.model.layers if isinstance(layer.mlp, SparseMLP)]


def set_thresholds(model: nn.Module, thresholds: list[float]) -> None:
    """Set each layer's threshold on an already sparsified model (used per decode step)."""
    mlps = sparse_mlps(model)
    if len(mlps) != len(thresholds):
        raise ValueError(f"{len(thresholds)} thresholds for {len(mlps)} sparse MLP layers")
    for mlp, threshold in zip(mlps, thresholds, strict=True):
        mlp.threshold = threshold
