"""Threshold policies: how many MLP neurons a generation keeps active.

A policy is a small frozen dataclass whose ``to_dict()`` (its JSON object) is stored as a
study's condition, so every generation can be reproduced from its row via ``Policy.from_json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar


def _number(data: dict, key: str, *, minimum: float = 0.0, default: float | None = None) -> float:
    if key not in data:
        if default is None:
            raise ValueError(f"policy {data.get('kind')!r} needs {key!r}")
        return default
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"policy field {key!r} must be a number, got {value!r}")
    if not math.isfinite(value) or value < minimum:
        raise ValueError(
            f"policy field {key!r} must be a finite number >= {minimum}, got {value!r}"
        )
    return float(value)


SITES = ("h", "gate", "input")
# What a threshold at each site lets the engine skip reading (``Policy.skipped_weights``).
SKIPPED_WEIGHTS = {
    "h": ("down",),
    "gate": ("up", "down"),
    "input": ("q", "k", "v", "o", "gate", "up", "down"),
}
# The input site's thresholds per group (``sparse_mlp.INPUT_GROUPS``) and the projections
# whose columns each one lets the engine skip.
_INPUT_GROUP_WEIGHTS = (("q", "k", "v"), ("o",), ("gate", "up"), ("down",))
_SITE_HELP = (
    "where the magnitude threshold applies: h = |silu(gate x) * up x| (reads gate and up whole, "
    "down only for kept neurons), gate = |silu(gate x)| (CATS: reads up and down only for kept "
    "neurons), input = the input of every projection (TEAL: reads only the weight columns of "
    "kept inputs)"
)


def _field(default: Any = dataclasses.MISSING, *, help: str, unit: str = "",
           minimum: float | None = None) -> Any:
    """A policy field with its meaning and unit (``dataclasses.fields(cls)[i].metadata``), read by
    the CLI's help and by forms built from the dataclasses; ``minimum`` marks a number field."""
    metadata = {"help": help, "unit": unit}
    if minimum is not None:
        metadata["minimum"] = minimum
    return dataclasses.field(default=default, metadata=metadata)


def site_field() -> Any:
    field = _field("h", help=_SITE_HELP, unit="")
    return dataclasses.field(default="h", metadata={**field.metadata, "choices": SITES})


def _site(data: dict) -> str:
    site = data.get("site", "h")  # conditions stored before sites existed mean "h"
    if site not in SITES:
        raise ValueError(f"policy field 'site' must be one of {list(SITES)}, got {site!r}")
    return site


class Policy:
    """Base class. ``kind`` names the policy in JSON; ``layer_thresholds`` and ``step_factor``
    give the threshold of each layer at each decode step (at the policy's ``site``).

    Subclasses are frozen dataclasses whose fields carry ``help`` and ``unit`` metadata; number
    fields also carry their ``minimum`` and are validated on construction."""

    kind: ClassVar[str]
    # How a calibration (``inference.profile.calibrate``) chooses this kind's thresholds for a
    # target sparsity: "pooled" (one threshold for every layer, the quantile of all layers'
    # magnitudes), "per_layer" (each layer's own quantile), None (not calibrated to one).
    calibration: ClassVar[str | None] = None
    # Fields a calibration fills in, never typed by a researcher.
    derived_fields: ClassVar[frozenset[str]] = frozenset()

    def __post_init__(self) -> None:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in self._validate({"kind": self.kind, **fields}).items():
            object.__setattr__(self, name, value)  # normalise ints to floats on frozen dataclasses

    @classmethod
    def _validate(cls, data: dict) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if "minimum" in f.metadata:
                default = None if f.default is dataclasses.MISSING else f.default
                values[f.name] = _number(
                    data, f.name, minimum=f.metadata["minimum"], default=default
                )
            elif f.name == "site":
                values["site"] = _site(data)
        return values

    def to_dict(self) -> dict[str, Any]:
        """The condition's whole description; ``site`` only when it is not ``h`` (so conditions
        stored before sites existed keep their JSON)."""
        data = {"kind": self.kind, **self._validate(dataclasses.asdict(self) | {"kind": self.kind})}
        if data.get("site") == "h":
            del data["site"]
        return data

    @property
    def site(self) -> str | None:
        """Where the threshold applies (``SITES``); None for a policy without a magnitude one."""
        return None

    @property
    def skipped_weights(self) -> tuple[str, ...]:
        """The weight matrices whose bytes this policy skips reading for inactive neurons or
        inputs (``()``: it reads every weight: dense, or thresholds of 0, where the engine
        takes the dense path). Machine-readable, for the study page and the report."""
        if not self.site:
            return ()
        layers = self._thresholds()
        if self.site != "input":
            return SKIPPED_WEIGHTS[self.site] if any(t > 0 for t in layers) else ()
        groups = [t if isinstance(t, tuple) else (t,) * len(_INPUT_GROUP_WEIGHTS) for t in layers]
        return tuple(
            name
            for g, names in enumerate(_INPUT_GROUP_WEIGHTS)
            if any(layer[g] > 0 for layer in groups)
            for name in names
        )

    def _thresholds(self) -> list[float | tuple[float, ...]]:
        """Every layer's base threshold (what decides whether anything is skipped)."""
        return self.layer_thresholds(1)

    @property
    def skips_weight_bytes(self) -> bool:
        """False exactly when the policy reads every weight (masking only, or nothing to
        mask): then no speed-up is possible and tokens/s differences are noise."""
        return bool(self.skipped_weights)

    def _site_label(self) -> str:
        return "" if self.site in (None, "h") else f" @{self.site}"

    def label(self) -> str:
        raise NotImplementedError

    def layer_thresholds(self, num_layers: int) -> list[float | tuple[float, ...]]:
        """Threshold per layer for the prompt (prefill) and the first generated token: a number,
        or for the ``input`` site of a calibrated policy one per ``sparse_mlp.INPUT_GROUPS``."""
        raise NotImplementedError

    def step_factor(self, previous_entropy_nats: float) -> float:
        """Multiplier on ``layer_thresholds`` for one decode step, given the entropy (nats) of the
        distribution the step's input token was drawn from. 1.0 unless the policy adapts."""
        return 1.0

    @property
    def adapts(self) -> bool:
        """Whether the thresholds can change between decode steps (a policy that overrides
        ``step_factor`` or ``controller``); the decode loop skips the controller otherwise."""
        cls = type(self)
        return cls.step_factor is not Policy.step_factor or cls.controller is not Policy.controller

    def controller(self) -> Callable[[float, float, float | None], float]:
        """A fresh per-generation rule ``(previous_entropy_nats, previous_active_fraction,
        previous_step_latency_s) -> factor`` on ``layer_thresholds`` for the next decode step
        (the latency is ``None`` before the first decode step). Stateless policies use
        ``step_factor``; feedback policies (``budget``) keep state in the closure."""
        return lambda entropy, _active, _latency_s=None: self.step_factor(entropy)

    @staticmethod
    def from_json(data: dict) -> Policy:
        """Build a policy from its JSON form; raises ``ValueError`` naming what is wrong. Fields
        with a default may be left out."""
        if not isinstance(data, dict):
            raise ValueError(f"a policy must be a JSON object, got {type(data).__name__}")
        kind = data.get("kind")
        cls = policy_class(kind)
        unknown = set(data) - {"kind", *cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"policy {kind!r} has unknown field(s) {sorted(unknown)}")
        return cls(**cls._validate(data))


@dataclass(frozen=True)
class DensePolicy(Policy):
    """Every neuron active: the unmodified model."""

    kind: ClassVar[str] = "dense"

    def label(self) -> str:
        return "dense"

    def layer_thresholds(self, num_layers: int) -> list[float]:
        return [0.0] * num_layers


@dataclass(frozen=True)
class StaticPolicy(Policy):
    """Zero every activation with magnitude below ``threshold`` at ``site``, in every layer and
    step."""

    threshold: float = _field(help="magnitude threshold at the site", unit="activation",
                              minimum=0.0)
    site: str = site_field()
    kind: ClassVar[str] = "static"
    calibration: ClassVar[str | None] = "pooled"

    def label(self) -> str:
        return f"static t={self.threshold:g}{self._site_label()}"

    def layer_thresholds(self, num_layers: int) -> list[float]:
        return [self.threshold] * num_layers


@dataclass(frozen=True)
class DynamicPolicy(Policy):
    """A threshold that follows the model's confidence, token by token (CLADA-like).

    Rule, for the decode step that feeds back token ``i`` (sampled from logits ``z_i``)::

        H      = entropy of softmax(z_i) in nats (temperature 1, independent of sampling)
        factor = exp(entropy_scale * (reference_entropy - H))
        factor = clamp(factor, 1 / max_factor, max_factor)
        t_step = threshold * factor

    A confident previous step (``H < reference_entropy``) raises the threshold (more sparsity);
    an uncertain one lowers it. ``entropy_scale = 0`` equals ``StaticPolicy(threshold)``. The
    prompt (prefill), whose logits give the first generated token, uses ``threshold`` itself.
    """

    threshold: float = _field(help="base magnitude threshold at the site", unit="activation",
                              minimum=0.0)
    entropy_scale: float = _field(help="how strongly the threshold follows the previous "
                                  "token's entropy (0: static)", unit="1/nat", minimum=0.0)
    reference_entropy: float = _field(2.0, help="entropy at which the base threshold applies",
                                      unit="nat", minimum=0.0)
    max_factor: float = _field(4.0, help="largest factor on the base threshold, either way",
                               unit="ratio", minimum=1.0)
    site: str = site_field()
    kind: ClassVar[str] = "dynamic"
    calibration: ClassVar[str | None] = "pooled"

    def label(self) -> str:
        return f"dynamic t={self.threshold:g} s={self.entropy_scale:g}{self._site_label()}"

    def layer_thresholds(self, num_layers: int) -> list[float]:
        return [self.threshold] * num_layers

    def step_factor(self, previous_entropy_nats: float) -> float:
        factor = math.exp(self.entropy_scale * (self.reference_entropy - previous_entropy_nats))
        return min(max(factor, 1.0 / self.max_factor), self.max_factor)


@dataclass(frozen=True)
class CalibratedPolicy(Policy):
    """Per-layer thresholds chosen from an activation profile to zero a ``target_sparsity``
    share of each layer's activation magnitudes at the chosen site (TEAL-style quantiles;
    see ``inference.profile``).

    The thresholds themselves are part of the JSON, so a generation never needs the profile file
    again; ``profile`` is the fingerprint of the model the profile was taken on.
    """

    target_sparsity: float = _field(help="share of activations at the site to zero, per layer "
                                    "(on the calibration prompts)", unit="fraction")
    thresholds: tuple = _field(help="per layer: the threshold (h, gate), or the four thresholds "
                               "of the inputs of q/k/v, o, gate/up and down (input)",
                               unit="activation")
    profile: str = _field("", help="fingerprint of the model the profile was taken on")
    site: str = site_field()
    kind: ClassVar[str] = "calibrated"
    calibration: ClassVar[str | None] = "per_layer"
    derived_fields: ClassVar[frozenset[str]] = frozenset({"thresholds", "profile",
                                                          "target_sparsity"})

    @classmethod
    def _validate(cls, data: dict) -> dict[str, Any]:
        target = _number(data, "target_sparsity")
        if target >= 1.0:
            raise ValueError(f"policy field 'target_sparsity' must be < 1, got {target!r}")
        site = _site(data)
        thresholds = data.get("thresholds")
        if not isinstance(thresholds, list | tuple) or not thresholds:
            raise ValueError("policy 'calibrated' needs 'thresholds', a non-empty list")
        values = tuple(cls._layer(site, i, t) for i, t in enumerate(thresholds))
        profile = data.get("profile", "")
        if not isinstance(profile, str):
            raise ValueError(f"policy field 'profile' must be a string, got {profile!r}")
        return {"target_sparsity": target, "thresholds": values, "profile": profile, "site": site}

    @classmethod
    def _layer(cls, site: str, i: int, value: Any) -> float | tuple[float, ...]:
        if site != "input":
            return _number({"kind": cls.kind, f"thresholds[{i}]": value}, f"thresholds[{i}]")
        if not isinstance(value, list | tuple) or len(value) != 4:
            raise ValueError(
                f"policy field 'thresholds[{i}]' must be 4 numbers for the input site "
                "(the inputs of q/k/v, o, gate/up, down)"
            )
        return tuple(
            _number({f"thresholds[{i}][{j}]": t}, f"thresholds[{i}][{j}]")
            for j, t in enumerate(value)
        )

    def to_dict(self) -> dict[str, Any]:
        thresholds = [list(t) if isinstance(t, tuple) else t for t in self.thresholds]
        data = {
            "kind": self.kind,
            "target_sparsity": self.target_sparsity,
            "thresholds": thresholds,
            "profile": self.profile,
        }
        return data if self.site == "h" else {**data, "site": self.site}

    def label(self) -> str:
        return f"calibrated s={self.target_sparsity:g}{self._site_label()}"

    def _thresholds(self) -> list[float | tuple[float, ...]]:
        return list(self.thresholds)

    def layer_thresholds(self, num_layers: int) -> list[float | tuple[float, ...]]:
        if num_layers != len(self.thresholds):
            raise ValueError(
                f"calibrated policy has {len(self.thresholds)} layer thresholds, "
                f"the model has {num_layers} layers"
            )
        return list(self.thresholds)


@dataclass(frozen=True)
class BudgetPolicy(Policy):
    """A feedback controller that holds one budget, token by token: either the running share of
    active MLP neurons near ``target_active_fraction`` (a byte budget: active neurons are what a
    skipping MLP reads), or the measured decode time per token near
    ``target_latency_s_per_token``. Exactly one target is given (> 0).

    A PI controller on the log of a scale on ``threshold`` (the prompt uses ``threshold``)::

        e_k     = a_k - target                    (active fraction a_k of decode step k)
        e_k     = log(l_k / target)               (or: latency l_k of decode step k, seconds)
        I_k     = I_{k-1} + e_k
        t_{k+1} = threshold * exp(kp * e_k + ki * I_k), clamped to [t / max_factor, t * max_factor]

    Too many neurons active, or too slow a step, raises the threshold (more sparsity); the other
    way lowers it. The integral is clamped with the factor (anti-windup). With a latency target
    the first ``warmup_steps`` decode steps run at ``threshold`` and are not fed back (their
    times include one-off costs: allocation, caches, page faults). Default gains: kp 2, ki 1
    for an active-fraction target; kp 0.5, ki 0.5 for a latency target (log-latency moves about
    1/a times as much as the active fraction a, so the same gains would oscillate).
    """

    target_active_fraction: float = _field(
        0.0, help="share of activations to keep, held by feedback (0: hold a latency instead)",
        unit="fraction", minimum=0.0)
    threshold: float = _field(0.05, help="base magnitude threshold at the site (the prompt's)",
                              unit="activation", minimum=0.0)
    # None: the target's default (see above)
    kp: float | None = _field(None, help="proportional gain (default 2, or 0.5 for latency)",
                              unit="1/error")
    ki: float | None = _field(None, help="integral gain (default 1, or 0.5 for latency)",
                              unit="1/error")
    max_factor: float = _field(100.0, help="largest factor on the base threshold, either way",
                               unit="ratio", minimum=1.0)
    target_latency_s_per_token: float = _field(
        0.0, help="decode time per token to hold (0: hold an active fraction instead)",
        unit="s", minimum=0.0)
    warmup_steps: float = _field(2.0, help="first decode steps not fed back (latency target)",
                                 unit="steps", minimum=0.0)
    site: str = site_field()
    kind: ClassVar[str] = "budget"

    @classmethod
    def _validate(cls, data: dict) -> dict[str, Any]:
        data = {k: v for k, v in data.items() if v is not None}  # None: the default
        values = super()._validate(data)
        gains = (0.5, 0.5) if values["target_latency_s_per_token"] > 0.0 else (2.0, 1.0)
        for name, default in zip(("kp", "ki"), gains, strict=True):
            values[name] = _number(data, name, default=default)
        return values

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.target_active_fraction > 0.0) == (self.target_latency_s_per_token > 0.0):
            raise ValueError(
                "policy 'budget' needs exactly one target: 'target_active_fraction' in (0, 1] "
                "or 'target_latency_s_per_token' > 0"
            )
        if self.target_active_fraction > 1.0:
            raise ValueError(
                "policy field 'target_active_fraction' must be in (0, 1], "
                f"got {self.target_active_fraction!r}"
            )
        if self.threshold <= 0.0:
            raise ValueError("policy 'budget' needs a base 'threshold' > 0")
        if self.warmup_steps != int(self.warmup_steps):
            raise ValueError(f"policy field 'warmup_steps' must be whole, got {self.warmup_steps}")

    @property
    def holds_latency(self) -> bool:
        return self.target_latency_s_per_token > 0.0

    def to_dict(self) -> dict[str, Any]:
        data = {
            "kind": self.kind,
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
        }
        if self.holds_latency:
            unused = {"target_active_fraction"}
        else:
            unused = {"target_latency_s_per_token", "warmup_steps"}
        if self.site == "h":
            unused.add("site")
        return {k: v for k, v in data.items() if k not in unused}

    def label(self) -> str:
        if self.holds_latency:
            return f"budget {self.target_latency_s_per_token * 1e3:g} ms/token{self._site_label()}"
        return f"budget a={self.target_active_fraction:g}{self._site_label()}"

    def layer_thresholds(self, num_layers: int) -> list[float]:
        return [self.threshold] * num_layers

    def controller(self) -> Callable[[float, float, float | None], float]:
        limit = math.log(self.max_factor)
        integral = [0.0]
        steps = [0]

        def error(active: float, latency_s: float | None) -> float | None:
            if not self.holds_latency:
                return active - self.target_active_fraction
            steps[0] += 1
            if latency_s is None or steps[0] <= self.warmup_steps:
                return None
            return math.log(max(latency_s, 1e-9) / self.target_latency_s_per_token)

        def factor(_entropy: float, active: float, latency_s: float | None = None) -> float:
            e = error(active, latency_s)
            if e is None:  # warming up: the base threshold
                return 1.0
            if self.ki > 0.0:
                integral[0] = min(max(integral[0] + e, -limit / self.ki), limit / self.ki)
            log_factor = self.kp * e + self.ki * integral[0]
            return math.exp(min(max(log_factor, -limit), limit))

        return factor


@dataclass(frozen=True)
class PredictorPolicy(Policy):
    """A neuron is active where a per-layer low-rank predictor (``inference.predictor``, trained
    on profiling data) gives ``sigmoid(logit) >= threshold``; only those neurons' gate, up and
    down weights are read (gathered) on a decode step. ``predictor`` is the predictor file
    (safetensors, tagged with the model fingerprint). No magnitude threshold is applied.

    ``thresholds`` (optional) gives one threshold per layer instead, e.g. chosen on held-out
    data so that each layer's predictor reaches ``target_recall`` (``calibrate --predictor``);
    they are part of the JSON, like a calibrated policy's.
    """

    threshold: float = _field(0.5, help="a neuron is active where sigmoid(logit) >= this",
                              unit="probability")
    predictor: str = _field("", help="path of the predictor file (`python -m inference predict`)")
    thresholds: tuple[float, ...] = _field((), help="per layer instead of one threshold",
                                           unit="probability")
    target_recall: float = _field(0.0, help="what `thresholds` were chosen for (a label; 0: not "
                                  "given)", unit="fraction")
    kind: ClassVar[str] = "predictor"
    derived_fields: ClassVar[frozenset[str]] = frozenset({"thresholds", "target_recall"})

    @property
    def skipped_weights(self) -> tuple[str, ...]:
        # sigmoid(logit) >= 0 always holds: a threshold of 0 keeps (reads) every neuron.
        if not any(t > 0 for t in (self.thresholds or (self.threshold,))):
            return ()
        return ("gate", "up", "down")

    @classmethod
    def _validate(cls, data: dict) -> dict[str, Any]:
        path = data.get("predictor")
        if not isinstance(path, str) or not path:
            raise ValueError("policy 'predictor' needs 'predictor', the path of a predictor file")
        per_layer = data.get("thresholds") or ()
        if not isinstance(per_layer, list | tuple):
            raise ValueError("policy field 'thresholds' must be a list of numbers")
        if per_layer and data.get("threshold", 0.5) != 0.5:
            raise ValueError("policy 'predictor' takes 'threshold' or 'thresholds', not both")
        values = [_number(data, "threshold", default=0.5)] + [
            _number({f"thresholds[{i}]": t}, f"thresholds[{i}]") for i, t in enumerate(per_layer)
        ]
        if any(v > 1.0 for v in values):
            raise ValueError(f"predictor thresholds must be in [0, 1], got {max(values)!r}")
        recall = _number(data, "target_recall", default=0.0)
        if recall > 1.0:
            raise ValueError(f"policy field 'target_recall' must be in [0, 1], got {recall!r}")
        return {
            "threshold": values[0],
            "predictor": path,
            "thresholds": tuple(values[1:]),
            "target_recall": recall,
        }

    def to_dict(self) -> dict[str, Any]:
        if not self.thresholds:
            return {"kind": self.kind, "threshold": self.threshold, "predictor": self.predictor}
        return {
            "kind": self.kind,
            "predictor": self.predictor,
            "target_recall": self.target_recall,
            "thresholds": list(self.thresholds),
        }

    def label(self) -> str:
        if self.thresholds:
            return f"predictor recall>={self.target_recall:g}"
        return f"predictor p>={self.threshold:g}"

    def layer_thresholds(self, num_layers: int) -> list[float]:
        return [0.0] * num_layers

    def predict_thresholds(self, num_layers: int) -> list[float]:
        """The threshold on the predictor's sigmoid, per layer."""
        if not self.thresholds:
            return [self.threshold] * num_layers
        if len(self.thresholds) != num_layers:
            raise ValueError(
                f"predictor policy has {len(self.thresholds)} layer thresholds, "
                f"the model has {num_layers} layers"
            )
        return list(self.thresholds)


# Every kind, the baseline first, then by how much machinery a kind needs.
POLICY_CLASSES: tuple[type[Policy], ...] = (
    DensePolicy,
    StaticPolicy,
    CalibratedPolicy,
    DynamicPolicy,
    BudgetPolicy,
    PredictorPolicy,
)


def policy_class(kind: object) -> type[Policy]:
    """The policy class of ``kind`` (its JSON name); ``ValueError`` naming the kinds otherwise."""
    classes = {cls.kind: cls for cls in POLICY_CLASSES}
    if kind not in classes:
        raise ValueError(f"unknown policy kind {kind!r}; expected one of {sorted(classes)}")
    return classes[kind]


def policy_argument(text: str) -> Policy:
    """A policy from a JSON file's path or an inline JSON string (an ``argparse`` type: errors
    are ``ArgumentTypeError`` naming what is wrong)."""
    source = "JSON"
    if not text.lstrip().startswith("{") and Path(text).is_file():
        source, text = f"JSON file {text}", Path(text).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if source == "JSON" and not text.lstrip().startswith("{"):
            raise argparse.ArgumentTypeError(
                f"{text!r} is neither a policy file nor inline JSON"
            ) from exc
        raise argparse.ArgumentTypeError(f"not {source} ({exc.msg} at column {exc.colno})") from exc
    try:
        return Policy.from_json(data)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
