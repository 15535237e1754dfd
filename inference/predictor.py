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
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from inference.kernels import gathered_ffn
from inference.loading import LoadedModel
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
            self._record(keep.float().mean().item(), 0, 0)
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
            self._record(keep.float().mean().item(), 0, 0)
        else:
            self._record(1.0, 0, 0)
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


# --- training ------------------------------------------------------------------------------


def capture(loaded: LoadedModel, prompts: list[str], max_new_tokens: int) -> list[tuple]:
    """Dense generation of each prompt, recording per layer the MLP inputs ``x: [N, D]`` and
    ``|h|: [N, F]`` of every token. Returns one ``(xs, hs)`` pair of lists per prompt."""
    from inference.generate import generate
    from inference.policies import DensePolicy
    from inference.sparse_mlp import sparse_mlps, sparsify

    sparsify(loaded.model, DensePolicy())
    mlps = sparse_mlps(loaded.model)
    if any(hasattr(m, "order") for m in mlps):
        raise ValueError("capture training data before the neurons are split hot/cold")
    per_prompt = []
    for prompt in prompts:
        xs: list[list[torch.Tensor]] = [[] for _ in mlps]
        hs: list[list[torch.Tensor]] = [[] for _ in mlps]
        handles = []
        for i, mlp in enumerate(mlps):
            handles.append(mlp.register_forward_pre_hook(_appender(xs[i], absolute=False)))
            handles.append(mlp.down_proj.register_forward_pre_hook(_appender(hs[i], absolute=True)))
        try:
            generate(loaded, prompt, DensePolicy(), max_new_tokens=max_new_tokens)
        finally:
            for handle in handles:
                handle.remove()
        if any(not h for h in hs):  # PredictorMLP calls F.linear, not down_proj: no hook fired
            raise ValueError("capture needs the model before predictors are attached")
        per_prompt.append(([torch.cat(x) for x in xs], [torch.cat(h) for h in hs]))
    return per_prompt


def _appender(store: list, *, absolute: bool):
    def hook(module, args):
        a = args[0].detach()
        a = a.reshape(-1, a.shape[-1]).float().cpu()
        store.append(a.abs() if absolute else a)

    return hook


def train_layer(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    rank: int,
    steps: int,
    lr: float = 3e-3,
    batch: int = 256,
    seed: int = 0,
    h_abs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """Fit ``Linear(D, rank) → ReLU → Linear(rank, F)`` to labels ``y: [N, F]`` (0/1) from
    ``x: [N, D]`` with BCE weighted per neuron by ``negatives / positives`` (Deja Vu's class
    weighting; capped at 20). With ``h_abs`` (``|h|``, ``[N, F]``) each positive is further
    weighted by its ``|h|`` relative to that neuron's mean positive ``|h|`` (capped at 10): a
    missed neuron costs the output in proportion to ``|h|``. Returns ``w1, b1, w2, b2``."""
    gen = torch.Generator().manual_seed(seed)
    d, f = x.shape[1], y.shape[1]
    net = nn.Sequential(nn.Linear(d, rank), nn.ReLU(), nn.Linear(rank, f))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / p.shape[-1] ** 0.5))
    positives = y.mean(dim=0).clamp(1e-3, 1 - 1e-3)
    pos_weight = ((1 - positives) / positives).clamp(max=20.0)
    weight = torch.ones_like(y)
    if h_abs is not None:
        mean_positive = (h_abs * y).sum(dim=0) / y.sum(dim=0).clamp(min=1.0)  # [F]
        weight = torch.where(y > 0, (h_abs / mean_positive.clamp(min=1e-6)).clamp(max=10.0), 1.0)
    scale = x.std().clamp(min=1e-6)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            idx = torch.randint(0, x.shape[0], (min(batch, x.shape[0]),), generator=gen)
            loss = F.binary_cross_entropy_with_logits(
                net(x[idx] / scale), y[idx], weight=weight[idx], pos_weight=pos_weight
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    # Fold the input scaling into w1.
    w1 = net[0].weight.detach() / scale
    return w1, net[0].bias.detach(), net[2].weight.detach(), net[2].bias.detach()


def recall_precision(pred: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    """Recall, precision and predicted-active share of boolean ``pred`` against labels ``y``."""
    tp = float((pred & y).sum())
    return (
        tp / max(float(y.sum()), 1.0),
        tp / max(float(pred.sum()), 1.0),
        float(pred.float().mean()),
    )


RECALL_TARGETS = (0.9, 0.95, 0.98, 0.99)


def threshold_for_recall(probs: torch.Tensor, y: torch.Tensor, recall: float) -> float:
    """The largest threshold on ``probs`` (``[N, F]``) whose mask keeps at least a ``recall``
    share of the positives of ``y`` (bool ``[N, F]``)."""
    positive = probs[y].sort(descending=True).values
    if positive.numel() == 0:
        return 1.0
    k = min(positive.numel(), max(1, -int(-recall * positive.numel() // 1)))  # ceil
    return float(positive[k - 1])


def layer_metrics(
    probs: torch.Tensor, h_abs: torch.Tensor, eps: float, threshold: float
) -> dict[str, float | dict]:
    """Held-out quality of one layer's predictor: ``probs`` (sigmoid outputs) and ``h_abs``
    (true ``|h|``), both ``[N, F]``. ``mass_recall``: share of the sum of ``|h|`` that the
    predicted neurons carry (what a missed neuron costs the output, roughly). Thresholds for
    each of ``RECALL_TARGETS`` with the active share they predict."""
    y = h_abs >= eps
    pred = probs >= threshold
    recall, precision, predicted = recall_precision(pred, y)
    for_recall = {f"{r:g}": threshold_for_recall(probs, y, r) for r in RECALL_TARGETS}
    return {
        "recall": recall,
        "precision": precision,
        "predicted_active": predicted,
        "true_active": float(y.float().mean()),
        "mass_recall": float((h_abs * pred).sum() / h_abs.sum().clamp(min=1e-12)),
        "thresholds_for_recall": for_recall,
        "predicted_active_for_recall": {
            r: float((probs >= t).float().mean()) for r, t in for_recall.items()
        },
    }


def train_predictors(
    loaded: LoadedModel,
    prompts: list[str],
    *,
    eps: float = 0.05,
    rank: int = 128,
    steps: int = 400,
    max_new_tokens: int = 16,
    held_out: float = 0.25,
    threshold: float = 0.5,
    magnitude_weighted: bool = True,
    progress=None,
) -> Predictors:
    """Capture profiling data on ``prompts`` (the last ``held_out`` share of prompts is held out)
    and train one predictor per layer for the labels ``|h| >= eps`` (``magnitude_weighted``:
    positives weighted by their ``|h|``, see ``train_layer``). ``metrics`` holds held-out
    recall/precision per layer at ``threshold`` and their means."""
    if len(prompts) < 2:
        raise ValueError("need at least 2 prompts (one is held out)")
    start = time.perf_counter()
    n_test = max(1, round(held_out * len(prompts)))
    data = capture(loaded, prompts, max_new_tokens)
    train, test = data[:-n_test], data[-n_test:]
    num_layers = len(data[0][0])
    out = Predictors(loaded.fingerprint, eps, [], [], [], [])
    per_layer = []
    for layer in range(num_layers):
        x = torch.cat([p[0][layer] for p in train])
        h_abs = torch.cat([p[1][layer] for p in train])
        y = (h_abs >= eps).float()
        w1, b1, w2, b2 = train_layer(
            x, y, rank=rank, steps=steps, seed=layer, h_abs=h_abs if magnitude_weighted else None
        )
        for lst, t in zip((out.w1, out.b1, out.w2, out.b2), (w1, b1, w2, b2), strict=True):
            lst.append(t.contiguous())
        xt = torch.cat([p[0][layer] for p in test])
        ht = torch.cat([p[1][layer] for p in test])
        with torch.no_grad():
            probs = torch.sigmoid(out.logits(layer, xt))
        per_layer.append(layer_metrics(probs, ht, eps, threshold))
        if progress is not None:
            progress(layer, per_layer[-1])
    out.metrics = {
        "threshold": threshold,
        "rank": rank,
        "steps": steps,
        "magnitude_weighted": magnitude_weighted,
        "train_tokens": int(sum(p[0][0].shape[0] for p in train)),
        "held_out_tokens": int(sum(p[0][0].shape[0] for p in test)),
        "train_prompts": len(train),
        "held_out_prompts": len(test),
        "seconds": time.perf_counter() - start,
        **{
            f"mean_{k}": sum(m[k] for m in per_layer) / num_layers
            for k in ("recall", "precision", "predicted_active", "true_active", "mass_recall")
        },
        "thresholds_for_recall": {
            f"{r:g}": [m["thresholds_for_recall"][f"{r:g}"] for m in per_layer]
            for r in RECALL_TARGETS
        },
        "mean_predicted_active_for_recall": {
            f"{r:g}": sum(m["predicted_active_for_recall"][f"{r:g}"] for m in per_layer)
            / num_layers
            for r in RECALL_TARGETS
        },
        "per_layer": per_layer,
    }
    return out


def predictor_policy_for_recall(predictors: Predictors, path: str, recall: float):
    """A ``predictor`` policy with each layer's threshold chosen on held-out data (at training
    time) so that the layer's predictor keeps at least ``recall`` of the active neurons."""
    from inference.policies import PredictorPolicy

    table = predictors.metrics.get("thresholds_for_recall", {})
    if f"{recall:g}" not in table:
        known = ", ".join(table) or "none (retrain with `predict`)"
        raise ValueError(f"no thresholds for recall {recall:g} in {path}; have: {known}")
    return PredictorPolicy(
        predictor=path, thresholds=tuple(table[f"{recall:g}"]), target_recall=recall
    )


def predictor_policies(predictors: Predictors, path: str) -> dict:
    """Named predictor policies for benchmarks: ``p>=0.5`` and each stored recall target."""
    from inference.policies import PredictorPolicy

    policies = {"predictor p>=0.5": PredictorPolicy(0.5, path)}
    for recall in predictors.metrics.get("thresholds_for_recall", {}):
        policy = predictor_policy_for_recall(predictors, path, float(recall))
        policies[f"predictor recall>={recall}"] = policy
    return policies
