"""Hot/cold neuron split and the hybrid device path (PowerInfer's layout).

``split_hot_cold(model, frequency, hot_fraction | hot_neurons, hot_device, cold_device)`` reorders
each layer's neurons by profiled activation frequency, so the hot set is the contiguous block
``[0, num_hot)``, and swaps in a ``HotColdMLP`` that keeps the hot block on ``hot_device`` (a GPU
when there is one) and the cold block on ``cold_device`` (the CPU). Attention, embeddings and
norms move to ``hot_device``. With both devices ``cpu`` the same code runs on a CPU-only machine.
``split_by_plan`` takes the per-layer hot counts from a placement plan (``inference.plan``).

The split changes where work runs, never what is computed: the output is the policy's, exactly
as ``SparseMLP`` (magnitude thresholds) or ``PredictorMLP`` (a predictor) would give it. For one
decoded token:

- hot block: dense GEMVs on ``hot_device`` (masking there is free; all hot weights are read);
- cold block, on ``cold_device``: under a predictor only the predicted-active neurons' gate, up
  and down rows are read (``kernels.gathered_ffn``); under a magnitude threshold gate and up are
  dense (``|h|`` needs both) and of down only the active rows are read (``kernels.bag_sum``);
- the MLP input goes to the cold device and the cold partial output comes back, ``[D]`` each.

Prompts (several tokens at once) run both blocks densely (masked), which is faster there.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from inference.devices import DeviceNames, device_misuse
from inference.int8 import is_int8
from inference.kernels import bag_sum, gathered_ffn
from inference.plan import Placement, synthetic_frequency
from inference.policies import DensePolicy
from inference.predictor import predicted_mask, swiglu
from inference.profile import Profile
from inference.sparse_mlp import SparseMLP, is_split_hot_cold, sparse_mlps
from inference.sparsify import sparsify


class HotColdMLP(SparseMLP):
    """A ``SparseMLP`` with neurons permuted by ``order`` (hot first), split over two devices.

    ``order[i]`` is the original index of neuron ``i`` (a CPU tensor). Parameters: ``gu_hot:
    [H, 2, D]`` (gate and up rows of a neuron side by side) and ``down_t_hot: [H, D]`` (down
    transposed) on the hot device; ``gu_cold: [C, 2, D]`` and ``down_t_cold: [C, D]`` on the
    cold device. The original ``gate_proj``/``up_proj``/``down_proj`` are dropped (no second
    copy). Inputs and outputs live on the hot device. ``predict_threshold`` and
    ``set_predictor`` work as on ``PredictorMLP`` (the predictor lives on the hot device).

    Records per call, while ``recording``: ``active_fractions``, ``skipped_weights`` (weights not
    read; decode steps only), and ``hot_active``/``all_active`` (kept neurons in the hot block
    and in total: the share of activations the hot device served).
    """

    def __init__(
        self,
        mlp: SparseMLP,
        order: torch.Tensor,
        num_hot: int,
        *,
        hot_device: str | torch.device = "cpu",
        cold_device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(mlp, threshold=mlp.threshold)
        num_neurons = self.down_proj.in_features
        order = order.to("cpu", torch.long)
        if order.shape != (num_neurons,) or not torch.equal(
            order.sort().values, torch.arange(num_neurons)
        ):
            raise ValueError("order must be a permutation of the layer's neurons")
        if not 0 <= num_hot <= num_neurons:
            raise ValueError(f"num_hot must be in [0, {num_neurons}], got {num_hot}")
        for linear in (self.gate_proj, self.up_proj, self.down_proj):
            assert linear.bias is None, "LLaMA MLPs have no biases"
        gate, up, down = self.gate_proj.weight, self.up_proj.weight, self.down_proj.weight
        del self.gate_proj, self.up_proj, self.down_proj
        with torch.no_grad():
            for part, index, device in (
                ("hot", order[:num_hot], hot_device),
                ("cold", order[num_hot:], cold_device),
            ):
                index = index.to(gate.device)
                gu = torch.stack((gate[index], up[index]), dim=1).to(device)  # [n, 2, D]
                down_t = down.t()[index].to(device)  # [n, D]
                setattr(self, f"gu_{part}", nn.Parameter(gu, requires_grad=False))
                setattr(self, f"down_t_{part}", nn.Parameter(down_t, requires_grad=False))
        self.order = order
        self.num_hot = num_hot
        self.buffer = self.gu_cold.new_empty(0)  # scratch of the PyTorch gather path
        self.predictor: tuple[torch.Tensor, ...] | None = None  # w1, b1, w2 (permuted), b2
        self.predict_threshold: float | None = None
        self.use_kernel = True
        self.skipped_weights: list[int] = []
        self.hot_active: list[int] = []
        self.all_active: list[int] = []

    @property
    def hot_device(self) -> torch.device:
        return self.gu_hot.device

    @property
    def cold_device(self) -> torch.device:
        return self.gu_cold.device

    @property
    def num_neurons(self) -> int:
        return self.order.numel()

    @property
    def dense_weights(self) -> int:
        return 3 * self.num_neurons * self.gu_hot.shape[-1]

    @property
    def predictor_weights(self) -> int:
        return 0 if self.predictor is None else sum(t.numel() for t in self.predictor)

    def set_predictor(self, w1, b1, w2, b2) -> None:
        """Attach a predictor trained on the unpermuted neurons (its rows are permuted here)."""
        device, dtype = self.hot_device, self.gu_hot.dtype
        w2, b2 = w2[self.order], b2[self.order]
        self.predictor = tuple(t.to(device=device, dtype=dtype) for t in (w1, b1, w2, b2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, S, D] on the hot device -> out: [B, S, D] on the hot device
        x2 = x.reshape(-1, x.shape[-1])  # [N, D]
        predicting = self.predict_threshold is not None and self.predictor is not None
        keep = predicted_mask(self.predictor, x2, self.predict_threshold) if predicting else None
        # Inputs for the cold device first, so that on a GPU the hot GEMVs queued next run
        # while the CPU works on the cold block.
        x_cold = x2.to(self.cold_device)
        keep_cold = None if keep is None else keep[:, self.num_hot :].to(self.cold_device)
        out_hot, keep_hot = self._hot(x2, None if keep is None else keep[:, : self.num_hot])
        out_cold, keep_cold, cold_read = self._cold(x_cold, keep_cold)
        out = out_hot + out_cold.to(self.hot_device)
        if self.recording:
            self._record(x2.shape[0], keep_hot, keep_cold, cold_read, predicting)
        return out.view(x.shape)

    def _hot(self, x: torch.Tensor, keep: torch.Tensor | None):
        """Dense block on the hot device. x: [N, D] -> out [N, D], kept mask [N, H] or None."""
        h = swiglu(self.gu_hot, x, self.act_fn)  # [N, H]
        if keep is None and self.threshold > 0.0:
            keep = h.abs() >= self.threshold
        if keep is not None:
            h = h * keep
        return F.linear(h, self.down_t_hot.t()), keep

    def _cold(self, x: torch.Tensor, keep: torch.Tensor | None):
        """Cold block on the cold device. x: [N, D] -> out [N, D], kept mask [N, C] or None,
        weights read."""
        tokens, d = x.shape
        dense_read = 3 * self.gu_cold.shape[0] * d
        if keep is not None and tokens == 1:  # predicted: read only the active neurons' rows
            active = keep[0].nonzero().squeeze(1)  # [n]
            out, self.buffer = gathered_ffn(
                self.gu_cold,
                self.down_t_cold,
                x[0],
                active,
                self.act_fn,
                buffer=self.buffer,
                use_kernel=self.use_kernel,
            )
            return out.view(1, d), keep, 3 * active.numel() * d
        h = swiglu(self.gu_cold, x, self.act_fn)  # [N, C]
        if keep is None and self.threshold > 0.0:
            keep = h.abs() >= self.threshold
        if keep is None:
            return F.linear(h, self.down_t_cold.t()), None, dense_read
        if tokens == 1 and x.device.type == "cpu":  # magnitude: only the active rows of down
            active = keep[0].nonzero().squeeze(1)  # [n]
            out = bag_sum(self.down_t_cold, active, h[0, active]) if active.numel() else None
            out = x.new_zeros(d) if out is None else out
            return out.view(1, d), keep, dense_read - (keep.shape[1] - active.numel()) * d
        return F.linear(h * keep, self.down_t_cold.t()), keep, dense_read

    def _record(self, tokens: int, keep_hot, keep_cold, cold_read: int, predicting: bool) -> None:
        hot = tokens * self.num_hot if keep_hot is None else int(keep_hot.sum())
        cold_neurons = self.num_neurons - self.num_hot
        cold = tokens * cold_neurons if keep_cold is None else int(keep_cold.sum())
        read = 3 * self.num_hot * self.gu_hot.shape[-1] + cold_read
        read += self.predictor_weights if predicting else 0
        self.active_fractions.append((hot + cold) / (tokens * self.num_neurons))
        self.skipped_weights.append(self.dense_weights - read if tokens == 1 else 0)
        self.read_weights.append(read if tokens == 1 else self.dense_weights)
        self.hot_active.append(hot)
        self.all_active.append(hot + cold)

    def extra_repr(self) -> str:
        return (
            f"threshold={self.threshold:g}, num_hot={self.num_hot}/{self.num_neurons}, "
            f"hot_device={self.hot_device}, cold_device={self.cold_device}"
        )


def hot_order(frequency: torch.Tensor) -> torch.Tensor:
    """Neuron indices of one layer, most frequently active first (stable on ties). -> [F]"""
    return torch.sort(frequency, descending=True, stable=True).indices


def split_hot_cold(
    model: nn.Module,
    frequency: torch.Tensor,
    hot_fraction: float | None = None,
    *,
    hot_neurons: list[int] | None = None,
    hot_device: str | torch.device = "cpu",
    cold_device: str | torch.device = "cpu",
) -> nn.Module:
    """Reorder every layer's neurons by ``frequency`` (``[L, F]``, e.g. ``Profile.frequency``)
    and swap in ``HotColdMLP`` whose hot block is the top ``hot_fraction`` of neurons, or the top
    ``hot_neurons[layer]`` (a placement plan's counts), on ``hot_device``; the rest on
    ``cold_device``. Everything outside the MLPs moves to ``hot_device``.

    Load the model on the CPU first: each layer's hot rows are copied to ``hot_device`` and the
    original weights freed, so the hot device never holds more than the hot blocks and the
    dense parts. Keeps each layer's threshold; ``sparsify`` re-configures a split model as
    usual (a predictor policy attaches again). Returns ``model``. A model can be split once;
    do not call ``model.to(device)`` afterwards (it would move the cold blocks too).
    """
    layers = model.model.layers
    if (hot_fraction is None) == (hot_neurons is None):
        raise ValueError("give exactly one of hot_fraction and hot_neurons")
    if hot_fraction is not None and not 0.0 <= hot_fraction <= 1.0:
        raise ValueError(f"hot_fraction must be in [0, 1], got {hot_fraction}")
    if frequency.shape[0] != len(layers):
        raise ValueError(f"frequency has {frequency.shape[0]} layers, the model {len(layers)}")
    if hot_neurons is not None and len(hot_neurons) != len(layers):
        raise ValueError(f"hot_neurons has {len(hot_neurons)} layers, the model {len(layers)}")
    if is_split_hot_cold(model):
        raise ValueError("model is already split into hot and cold neurons")
    if is_int8(model):
        raise ValueError("a hot/cold split holds float weights, not int8 ones")
    if not sparse_mlps(model):
        sparsify(model, DensePolicy())
    for i, (layer, layer_frequency) in enumerate(zip(layers, frequency, strict=True)):
        num_neurons = layer.mlp.num_neurons
        if layer_frequency.numel() != num_neurons:
            raise ValueError(f"frequency has {layer_frequency.numel()} neurons, not {num_neurons}")
        num_hot = round(hot_fraction * num_neurons) if hot_neurons is None else hot_neurons[i]
        layer.mlp = HotColdMLP(
            layer.mlp,
            hot_order(layer_frequency),
            num_hot,
            hot_device=hot_device,
            cold_device=cold_device,
        )
    _move_all_but_mlps(model, hot_device)
    # Predictors attached before the split lived on the replaced modules: attach them again.
    for name in ("_predictor_path", "_predictor_source"):
        if hasattr(model, name):
            delattr(model, name)
    return model


def _move_all_but_mlps(model: nn.Module, device: str | torch.device) -> None:
    """Attention, norms, embeddings, rotary tables and the LM head to ``device``."""
    for name, child in model.named_children():
        if name != "model":
            child.to(device)
    for name, child in model.model.named_children():
        if name != "layers":
            child.to(device)
    for layer in model.model.layers:
        for name, child in layer.named_children():
            if name != "mlp":
                child.to(device)


def split_by_plan(
    model: nn.Module,
    placement: Placement,
    frequency: torch.Tensor | None = None,
    *,
    fingerprint: str | None = None,
    hot_device: str | torch.device = "cpu",
    cold_device: str | torch.device = "cpu",
) -> nn.Module:
    """``split_hot_cold`` with the plan's hot neurons per layer; refuses a plan for another
    shape. ``frequency`` (``[L, F]``) orders the neurons; by default it is read from the profile
    file the plan names (refused unless made on the model with ``fingerprint``, when given), and
    a plan made without a profile keeps the index order (its synthetic power law's ranking)."""
    config, shape = model.config, placement.shape
    mine = (config.num_hidden_layers, config.hidden_size, config.intermediate_size)
    planned = (shape.num_layers, shape.hidden_size, shape.intermediate_size)
    if mine != planned:
        raise ValueError(
            f"the plan is for {shape.name} (layers, hidden, intermediate) = {planned}, "
            f"the model is {mine}"
        )
    if frequency is None:
        frequency = _plan_frequency(placement, fingerprint)
    return split_hot_cold(
        model,
        frequency,
        hot_neurons=placement.hot_neurons_per_layer,
        hot_device=hot_device,
        cold_device=cold_device,
    )


_NAMES = DeviceNames("device", "a placement plan (`plan --out`)", "hot_device / cold_device")


def model_place(
    model: nn.Module,
    *,
    fingerprint: str | None = None,
    device: str = "cpu",
    plan: Path | str | None = None,
    hot_device: str = "cpu",
    cold_device: str = "cpu",
) -> Placement | None:
    """Put a loaded model where it will run, the one way for the CLI and the worker: whole
    on ``device``, or split by a saved plan (``plan --out``) with each layer's hot neurons
    (and attention, embeddings) on ``hot_device`` and cold ones on ``cold_device``.
    Returns the plan used, or None."""
    misuse = device_misuse(device=device, split=plan is not None, hot_device=hot_device,
                           cold_device=cold_device, names=_NAMES)
    if misuse:
        raise ValueError(misuse)
    if plan is None:
        if str(device) != "cpu":
            model.to(device)
        return None
    placement = Placement.load(plan)
    split_by_plan(
        model, placement, fingerprint=fingerprint, hot_device=hot_device, cold_device=cold_device
    )
    return placement


def _plan_frequency(placement: Placement, fingerprint: str | None) -> torch.Tensor:
    if placement.profile is None:
        if not placement.synthetic_profile:
            raise ValueError("this plan was made from a profile it does not name: pass frequency")
        return synthetic_frequency(placement.shape)
    profile = Profile.load(placement.profile)
    if fingerprint is not None and profile.fingerprint != fingerprint:
        raise ValueError(f"the plan's profile is of {profile.fingerprint}, the model {fingerprint}")
    return profile.frequency(placement.activity_threshold)
