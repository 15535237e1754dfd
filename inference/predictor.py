"""Low-rank activation predictors (Deja Vu / PowerInfer style) and an MLP that skips gate/up too.

Per layer, ``logit = W2 · act(W1 · x + b1) + b2`` (``Linear(d, r) → ReLU → Linear(r, f)``)
predicts from the MLP input ``x`` which neurons will have ``|h| >= eps`` (``h`` = the input of
``down_proj``). Trained on profiling data (MLP inputs and labels captured while decoding
calibration prompts densely) with class-weighted BCE; recall and precision are measured on
held-out prompts.

``PredictorMLP`` computes, for one decoded token, only the neurons predicted active: their gate
and up rows are one contiguous ``[2, D]`` block per neuron (pre-arranged layout ``gu: [F, 2, D]``),
gathered into a preallocated buffer with ``index_select(out=)`` and multiplied by ``x``; their down
rows (transposed down, ``[F, D]``) are summed by ``F.embedding_bag``. Bytes read shrink with the
predicted active set in all three matrices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from inference.kernels import gathered_ffn
from inference.policies import PredictorPolicy
from inference.sparse_mlp import SparseMLP

_FORMAT = "predictor-1"


@dataclass
class Predictors:
    """Per-layer low-rank predictors: ``w1: [r, D]``, ``b1: [r]``, ``w2: [F, r]``, ``b2: [F]``."""

    fingerprint: str
    eps: float
    w1: list[torch.Tensor]
    b1: list[torch.Tensor]
    w2: list[torch.Tensor]
    b2: list[torch.Tensor]
    metrics: dict = field(default_factory=dict)  # held-out recall/precision per layer etc.

    @property
    def rank(self) -> int:
        return self.w1[0].shape[0]

    def logits(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        # x: [N, D] -> [N, F]
        return F.linear(
            F.relu(F.linear(x, self.w1[layer], self.b1[layer])), self.w2[layer], self.b2[layer]
        )

    def save(self, path: Path) -> None:
        tensors = {}
        for i in range(len(self.w1)):
            tensors.update(
                {
                    f"{i}.w1": self.w1[i],
                    f"{i}.b1": self.b1[i],
                    f"{i}.w2": self.w2[i],
                    f"{i}.b2": self.b2[i],
                }
            )
        metadata = {
            "format": _FORMAT,
            "fingerprint": self.fingerprint,
            "eps": repr(self.eps),
            "layers": str(len(self.w1)),
            "metrics": json.dumps(self.metrics),
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: Path | str) -> Predictors:
        if not Path(path).is_file():
            raise FileNotFoundError(f"predictor file {path} not found (train one: `predict`)")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != _FORMAT:
                raise ValueError(f"{path} is not a predictor file (format {_FORMAT})")
            n = int(meta["layers"])
            get = f.get_tensor
            return cls(
                fingerprint=meta["fingerprint"],
                eps=float(meta["eps"]),
                w1=[get(f"{i}.w1") for i in range(n)],
                b1=[get(f"{i}.b1") for i in range(n)],
                w2=[get(f"{i}.w2") for i in range(n)],
                b2=[get(f"{i}.b2") for i in range(n)],
                metrics=json.loads(meta.get("metrics", "{}")),
            )


def swiglu(gu: torch.Tensor, x: torch.Tensor, act_fn: nn.Module) -> torch.Tensor:
    """``act_fn(gate(x)) * up(x)`` with gate/up rows side by side in ``gu: [F, 2, D]``.
    x: [..., D] -> h: [..., F]"""
    pre = F.linear(x, gu.view(-1, gu.shape[-1])).unflatten(-1, (-1, 2))  # [..., F, 2]
    return act_fn(pre[..., 0]) * pre[..., 1]


def predicted_mask(predictor: tuple[torch.Tensor, ...], x: torch.Tensor, threshold) -> torch.Tensor:
    """``sigmoid(W2 relu(W1 x + b1) + b2) >= threshold``: x: [..., D] -> [..., F] bool.
    ``predictor`` is ``(w1, b1, w2, b2)``."""
    w1, b1, w2, b2 = predictor
    logit = F.linear(F.relu(F.linear(x, w1, b1)), w2, b2)
    return torch.sigmoid(logit) >= threshold


class PredictorMLP(SparseMLP):
    """A ``SparseMLP`` whose gate/up weights live in one ``gu: [F, 2, D]`` tensor (gate and up
    rows of a neuron side by side) and whose down weights are stored transposed (``[F, D]``).

    ``gate_proj``/``up_proj``/``down_proj`` keep working as views of those tensors, so
    state-dict keys and the masking (``threshold``) semantics of ``SparseMLP`` are unchanged.
    With ``predict_threshold`` set (and a predictor attached), a neuron counts as active where
    ``sigmoid(logit) >= predict_threshold``; the output is ``down(h * predicted_mask)``.
    ``read_weights`` records the weights read per decode call (gathered gate/up/down + the
    predictor's), ``skipped_weights`` dense minus that.
    """

    def __init__(self, mlp: SparseMLP) -> None:
        super().__init__(mlp, threshold=mlp.threshold)
        for linear in (self.gate_proj, self.up_proj, self.down_proj):
            assert linear.bias is None, "LLaMA MLPs have no biases"
        with torch.no_grad():
            gu = torch.stack([self.gate_proj.weight, self.up_proj.weight], dim=1).contiguous()
            down_t = self.down_proj.weight.t().contiguous()  # [F, D]
        self.gate_proj.weight = nn.Parameter(gu[:, 0], requires_grad=False)
        self.up_proj.weight = nn.Parameter(gu[:, 1], requires_grad=False)
        self.down_proj.weight = nn.Parameter(down_t.t(), requires_grad=False)
        self.gu, self.down_t = gu, down_t
        self.buffer = torch.empty(0, dtype=gu.dtype, device=gu.device)
        self.predictor: tuple[torch.Tensor, ...] | None = None  # w1, b1, w2, b2
        self.predict_threshold: float | None = None
        self.use_kernel = True  # the compiled CPU kernel (inference.kernels) where it applies
        self.read_weights: list[int] = []
        self.skipped_weights: list[int] = []

    @property
    def dense_weights(self) -> int:
        return 3 * self.down_t.numel()

    @property
    def predictor_weights(self) -> int:
        return 0 if self.predictor is None else sum(t.numel() for t in self.predictor)

    def set_predictor(self, w1, b1, w2, b2) -> None:
        device, dtype = self.gu.device, self.gu.dtype
        self.predictor = tuple(t.to(device=device, dtype=dtype) for t in (w1, b1, w2, b2))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted-active mask ``[..., F]`` for MLP inputs ``x: [..., D]``."""
        return predicted_mask(self.predictor, x, self.predict_threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, S, D] -> out: [B, S, D]
        if self.predict_threshold is None or self.predictor is None:
            return self._dense_masked(x)
        if x.shape[:-1].numel() != 1:  # a prompt: dense h, masked by the predictor
            h = swiglu(self.gu, x, self.act_fn)
            keep = self.predict(x)
            self._record(keep.float().mean().item(), self.dense_weights, 0)
            return F.linear(h * keep, self.down_t.t())
        x1 = x.reshape(-1)  # [D]
        active = self.predict(x1).nonzero().squeeze(1)  # [n]
        out, read = self.gathered(x1, active)
        self._record(active.numel() / self.gu.shape[0], read, self.dense_weights - read)
        return out.view(*x.shape[:-1], -1)

    def gathered(self, x1: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``down(h[active])`` for one token reading only the ``active`` neurons' weights.
        Returns the output ``[D]`` and the number of weights read (incl. the predictor's)."""
        out, self.buffer = gathered_ffn(
            self.gu,
            self.down_t,
            x1,
            active,
            self.act_fn,
            buffer=self.buffer,
            use_kernel=self.use_kernel,
        )
        # gate/up rows [n, 2, D] + down rows [n, D]
        return out, 3 * active.numel() * self.gu.shape[-1] + self.predictor_weights

    def _dense_masked(self, x: torch.Tensor) -> torch.Tensor:
        h = swiglu(self.gu, x, self.act_fn)
        if self.threshold > 0.0:
            keep = h.abs() >= self.threshold
            h = h * keep
            self._record(keep.float().mean().item(), self.dense_weights, 0)
        else:
            self._record(1.0, self.dense_weights, 0)
        return F.linear(h, self.down_t.t())

    def _record(self, active_fraction: float, read: int, skipped: int) -> None:
        if self.recording:
            self.active_fractions.append(active_fraction)
            self.read_weights.append(read)
            self.skipped_weights.append(skipped)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold:g}, predict_threshold={self.predict_threshold}"


def attach_predictors(model: nn.Module, predictors: Predictors, fingerprint: str | None) -> None:
    """Swap each layer's MLP for a ``PredictorMLP`` (once) carrying its layer's predictor; a
    hot/cold split layer (``HotColdMLP``) takes the predictor as it is.
    ``fingerprint``: the model's; a predictor trained on another model is refused."""
    if fingerprint is not None and predictors.fingerprint != fingerprint:
        raise ValueError(
            f"predictor was trained on {predictors.fingerprint}, the model is {fingerprint}"
        )
    layers = model.model.layers
    if len(predictors.w1) != len(layers):
        raise ValueError(f"predictor has {len(predictors.w1)} layers, the model {len(layers)}")
    for i, layer in enumerate(layers):
        if not isinstance(layer.mlp, SparseMLP):
            layer.mlp = SparseMLP(layer.mlp)
        if not hasattr(layer.mlp, "set_predictor"):
            layer.mlp = PredictorMLP(layer.mlp)
        if predictors.w2[i].shape[0] != layer.mlp.num_neurons:
            raise ValueError(f"layer {i}: predictor predicts {predictors.w2[i].shape[0]} neurons")
        layer.mlp.set_predictor(
            predictors.w1[i], predictors.b1[i], predictors.w2[i], predictors.b2[i]
        )
    model._predictor_source = predictors


def predictor_policy_for_recall(predictors: Predictors, path: str, recall: float):
    """A ``predictor`` policy with each layer's threshold chosen on held-out data (at training
    time) so that the layer's predictor keeps at least ``recall`` of the active neurons."""
    table = predictors.metrics.get("thresholds_for_recall", {})
    if f"{recall:g}" not in table:
        known = ", ".join(table) or "none (retrain with `predict`)"
        raise ValueError(f"no thresholds for recall {recall:g} in {path}; have: {known}")
    return PredictorPolicy(
        predictor=path, thresholds=tuple(table[f"{recall:g}"]), target_recall=recall
    )


def predictor_policies(predictors: Predictors, path: str) -> dict:
    """Named predictor policies for benchmarks: ``p>=0.5`` and each stored recall target."""
    policies = {"predictor p>=0.5": PredictorPolicy(0.5, path)}
    for recall in predictors.metrics.get("thresholds_for_recall", {}):
        policy = predictor_policy_for_recall(predictors, path, float(recall))
        policies[f"predictor recall>={recall}"] = policy
    return policies
