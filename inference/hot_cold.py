"""Hot/cold neuron split with an MLP that really skips work on CPU (PowerInfer's layout).

``split_hot_cold(model, profile, hot_fraction)`` reorders each layer's neurons by profiled
activation frequency, so the hot set is the contiguous block ``[0, num_hot)``, and swaps in a
``HotColdMLP``. It keeps ``SparseMLP``'s exact semantics (zero ``|h| < threshold``); what changes
is the work for one decoded token:

- gate and up stay dense (``|h|`` needs both; ``inference.predictor`` skips them too);
- down: the hot block is one contiguous dense GEMV; of the cold block only the active neurons'
  columns are read, summed by ``F.embedding_bag`` over the transposed down weights (one bag per
  thread), so inactive cold neurons cost no weight bytes.

Prompts (several tokens at once) use the dense down matmul, which is faster there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from inference.policies import DensePolicy
from inference.sparse_mlp import SparseMLP, sparse_mlps, sparsify


class HotColdMLP(SparseMLP):
    """A ``SparseMLP`` with neurons permuted by ``order`` (hot first) and a skipping decode path.

    ``order[i]`` is the original index of neuron ``i``. Weights are permuted once, in place of the
    originals (no second copy); down is stored transposed, ``[F, D]``, and ``down_proj.weight`` is
    a ``[D, F]`` view of it. Records ``skipped_weights`` (weights not read) per call.
    """

    def __init__(self, mlp: SparseMLP, order: torch.Tensor, num_hot: int) -> None:
        super().__init__(mlp, threshold=mlp.threshold)
        num_neurons = self.down_proj.in_features
        if sorted(order.tolist()) != list(range(num_neurons)):
            raise ValueError("order must be a permutation of the layer's neurons")
        if not 0 <= num_hot <= num_neurons:
            raise ValueError(f"num_hot must be in [0, {num_neurons}], got {num_hot}")
        for linear in (self.gate_proj, self.up_proj, self.down_proj):
            assert linear.bias is None, "LLaMA MLPs have no biases"
        with torch.no_grad():
            self.gate_proj.weight = nn.Parameter(self.gate_proj.weight[order].contiguous(), False)
            self.up_proj.weight = nn.Parameter(self.up_proj.weight[order].contiguous(), False)
            down_t = self.down_proj.weight[:, order].t().contiguous()  # [F, D]
            self.down_proj.weight = nn.Parameter(down_t.t(), requires_grad=False)
        self.down_t = down_t
        self.register_buffer("order", order.clone(), persistent=False)
        self.num_hot = num_hot
        self.skipped_weights: list[int] = []

    @property
    def dense_weights(self) -> int:
        """Weights one dense MLP call reads: gate, up and down."""
        return 3 * self.down_t.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, S, D] -> h: [B, S, F] -> out: [B, S, D]
        h = self.act_fn(self.gate_proj(x)) * self.up_proj(x)
        if self.threshold == 0.0:
            self._record(1.0, 0)
            return self.down_proj(h)
        keep = h.abs() >= self.threshold
        h = h * keep
        if x.shape[:-1].numel() != 1:  # a prompt: dense matmul
            self._record(keep.float().mean().item(), 0)
            return self.down_proj(h)
        h1, keep1 = h.reshape(-1), keep.reshape(-1)  # [F]
        hot = self.num_hot
        out = F.linear(h1[:hot], self.down_t[:hot].t())  # [D]
        cold_active = keep1[hot:].nonzero().squeeze(1)  # [n] indices into the cold block
        if cold_active.numel():
            out = out + _bag_sum(self.down_t[hot:], cold_active, h1[hot:][cold_active])
        inactive_cold = (keep1.numel() - hot) - cold_active.numel()
        self._record(keep1.float().mean().item(), inactive_cold * self.down_t.shape[1])
        return out.view(*x.shape[:-1], -1)

    def _record(self, active_fraction: float, skipped_weights: int) -> None:
        if self.recording:
            self.active_fractions.append(active_fraction)
            self.skipped_weights.append(skipped_weights)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold:g}, num_hot={self.num_hot}"


def _bag_sum(rows: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_i weights[i] * rows[index[i]]`` without gathering a matrix. -> [D]"""
    # One bag runs on one thread, so split the indices into one bag per thread.
    bags = max(1, min(torch.get_num_threads(), index.numel()))
    offsets = torch.arange(bags, dtype=torch.long) * index.numel() // bags
    summed = F.embedding_bag(index, rows, offsets, mode="sum", per_sample_weights=weights)
    return summed.sum(dim=0)


def hot_order(frequency: torch.Tensor) -> torch.Tensor:
    """Neuron indices of one layer, most frequently active first (stable on ties). -> [F]"""
    return torch.sort(frequency, descending=True, stable=True).indices


def split_hot_cold(
    model: nn.Module,
    frequency: torch.Tensor,
    hot_fraction: float,
) -> nn.Module:
    """Reorder every layer's neurons by ``frequency`` (``[L, F]``, e.g. ``Profile.frequency``)
    and swap in ``HotColdMLP`` with the top ``hot_fraction`` of neurons as the hot block.

    Keeps each layer's threshold; ``sparsify`` re-configures a split model as usual.
    Returns ``model``. A model can be split once.
    """
    if not 0.0 <= hot_fraction <= 1.0:
        raise ValueError(f"hot_fraction must be in [0, 1], got {hot_fraction}")
    if not sparse_mlps(model):
        sparsify(model, DensePolicy())
    layers = model.model.layers
    if frequency.shape[0] != len(layers):
        raise ValueError(f"frequency has {frequency.shape[0]} layers, the model {len(layers)}")
    for layer, layer_frequency in zip(layers, frequency, strict=True):
        if isinstance(layer.mlp, HotColdMLP):
            raise ValueError("model is already split into hot and cold neurons")
        num_neurons = layer.mlp.down_proj.in_features
        if layer_frequency.numel() != num_neurons:
            raise ValueError(f"frequency has {layer_frequency.numel()} neurons, not {num_neurons}")
        num_hot = round(hot_fraction * num_neurons)
        layer.mlp = HotColdMLP(layer.mlp, hot_order(layer_frequency), num_hot)
    return model
