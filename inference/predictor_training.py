"""Training and calibration of the activation predictors (``inference.predictor``).

``capture`` decodes calibration prompts densely and records each layer's MLP inputs and ``|h|``;
``train_predictors`` fits one low-rank predictor per layer on them (class-weighted BCE) and
measures recall and precision on held-out prompts, storing per-layer thresholds for each of
``RECALL_TARGETS`` in the file's metrics (read by ``predictor_policy_for_recall``).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from inference.generate import generate
from inference.loading import LoadedModel
from inference.policies import DensePolicy
from inference.predictor import Predictors
from inference.sparse_mlp import is_split_hot_cold, sparse_mlps
from inference.sparsify import sparsify


def capture(loaded: LoadedModel, prompts: list[str], max_new_tokens: int) -> list[tuple]:
    """Dense generation of each prompt, recording per layer the MLP inputs ``x: [N, D]`` and
    ``|h|: [N, F]`` of every token. Returns one ``(xs, hs)`` pair of lists per prompt."""
    sparsify(loaded.model, DensePolicy())
    mlps = sparse_mlps(loaded.model)
    if is_split_hot_cold(loaded.model):
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
