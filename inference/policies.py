"""Threshold policies: how many MLP neurons a generation keeps active.

A policy is a small frozen dataclass whose ``to_json()`` is stored as a study's condition, so
every generation can be reproduced from its row via ``Policy.from_json``.
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


class Policy:
    """Base class. ``kind`` names the policy in JSON; ``layer_thresholds`` and ``step_factor``
    give the threshold on |h| of each layer at each decode step."""

    kind: ClassVar[str]
    # Field name -> (minimum, default or None when required); validated on construction.
    _spec: ClassVar[dict[str, tuple[float, float | None]]] = {}

    def __post_init__(self) -> None:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in self._validate({"kind": self.kind, **fields}).items():
            object.__setattr__(self, name, value)  # normalise ints to floats on frozen dataclasses

    @classmethod
    def _validate(cls, data: dict) -> dict[str, float]:
        return {
            name: _number(data, name, minimum=minimum, default=default)
            for name, (minimum, default) in cls._spec.items()
        }

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **{name: getattr(self, name) for name in self._spec}}

    def label(self) -> str:
        raise NotImplementedError

    def layer_thresholds(self, num_layers: int) -> list[float]:
        """Threshold on |h| per layer for the prompt (prefill) and the first generated token."""
        raise NotImplementedError

    def step_factor(self, previous_entropy_nats: float) -> float:
        """Multiplier on ``layer_thresholds`` for one decode step, given the entropy (nats) of the
        distribution the step's input token was drawn from. 1.0 unless the policy adapts."""
        return 1.0

    def controller(self) -> Callable[[float, float, float | None], float]:
        """A fresh per-generation rule ``(previous_entropy_nats, previous_active_fraction,
        previous_step_latency_s) -> factor`` on ``layer_thresholds`` for the next decode step
        (the latency is ``None`` before the first decode step). Stateless policies use
        ``step_factor``; feedback policies (``budget``) keep state in the closure."""
        return lambda entropy, _active, _latency_s=None: self.step_factor(entropy)

    @staticmethod
    def from_json(data: dict) -> Policy:
        """Build a policy from its JSON form; raises ``ValueError`` naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"a policy must be a JSON object, got {type(data).__name__}")
        kind = data.get("kind")
        classes = {
            cls.kind: cls
            for cls in (
                DensePolicy,
                StaticPolicy,
                DynamicPolicy,
                CalibratedPolicy,
                BudgetPolicy,
                PredictorPolicy,
            )
        }
        if kind not in classes:
            raise ValueError(f"unknown policy kind {kind!r}; expected one of {sorted(classes)}")
        cls = classes[kind]
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
    """Zero every MLP activation with ``|h| < threshold``, in every layer and step."""

    threshold: float
    kind: ClassVar[str] = "static"
    _spec: ClassVar[dict[str, tuple[float, float | None]]] = {"threshold": (0.0, None)}

    def label(self) -> str:
        return f"static t={self.threshold:g}"

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

    threshold: float
    entropy_scale: float
    reference_entropy: float = 2.0
    max_factor: float = 4.0
    kind: ClassVar[str] = "dynamic"
    _spec: ClassVar[dict[str, tuple[float, float | None]]] = {
        "threshold": (0.0, None),
        "entropy_scale": (0.0, None),
        "reference_entropy": (0.0, 2.0),
        "max_factor": (1.0, 4.0),
    }

    def label(self) -> str:
        return f"dynamic t={self.threshold:g} s={self.entropy_scale:g}"

    def layer_thresholds(self, num_layers: int) -> list[float]:
        return [self.threshold] * num_layers

    def step_factor(self, previous_entropy_nats: float) -> float:
        factor = math.exp(self.entropy_scale * (self.reference_entropy - previous_entropy_nats))
        return min(max(factor, 1.0 / self.max_factor), self.max_factor)


@dataclass(frozen=True)
class CalibratedPolicy(Policy):
    """Per-layer thresholds chosen from an activation profile to zero a ``target_sparsity``
    share of each layer's ``|h|`` (TEAL-style quantiles; see ``inference.profile``).

    The thresholds themselves are part of the JSON, so a generation never needs the profile file
    again; ``profile`` is the fingerprint of the model the profile was taken on.
    """

    target_sparsity: float
    thresholds: tuple[float, ...]
    profile: str = ""
    kind: ClassVar[str] = "calibrated"

    @classmethod
    def _validate(cls, data: dict) -> dict[str, Any]:
        target = _number(data, "target_sparsity")
        if target >= 1.0:
            raise ValueError(f"policy field 'target_sparsity' must be < 1, got {target!r}")
        thresholds = data.get("thresholds")
        if not isinstance(thresholds, list | tuple) or not thresholds:
            raise ValueError("policy 'calibrated' needs 'thresholds', a non-empty list")
        values = tuple(
            _number({"kind": cls.kind, f"thresholds[{i}]": t}, f"thresholds[{i}]")
            for i, t in enumerate(thresholds)
        )
        profile = data.get("profile", "")
        if not isinstance(profile, str):
            raise ValueError(f"policy field 'profile' must be a string, got {profile!r}")
        return {"target_sparsity": target, "thresholds": values, "profile": profile}

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target_sparsity": self.target_sparsity,
            "thresholds": list(self.thresholds),
            "profile": self.profile,
        }

    def label(self) -> str:
        return f"calibrated s={self.target_sparsity:g}"

    def layer_thresholds(self, num_layers: int) -> list[float]:
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

    target_active_fraction: float = 0.0
    threshold: float = 0.05
    kp: float | None = None  # None: the target's default (see above)
    ki: float | None = None
    max_factor: float = 100.0
    target_latency_s_per_token: float = 0.0
    warmup_steps: float = 2.0
    kind: ClassVar[str] = "budget"
    _spec: ClassVar[dict[str, tuple[float, float | None]]] = {
        "target_active_fraction": (0.0, 0.0),
        "threshold": (0.0, 0.05),
        "max_factor": (1.0, 100.0),
        "target_latency_s_per_token": (0.0, 0.0),
        "warmup_steps": (0.0, 2.0),
    }

    @classmethod
    def _validate(cls, data: dict) -> dict[str, float]:
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

    def to_json(self) -> dict[str, Any]:
        data = {
            "kind": self.kind,
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
        }
        if self.holds_latency:
            unused = {"target_active_fraction"}
        else:
            unused = {"target_latency_s_per_token", "warmup_steps"}
        return {k: v for k, v in data.items() if k not in unused}

    def label(self) -> str:
        if self.holds_latency:
            return f"budget {self.target_latency_s_per_token * 1e3:g} ms/token"
        return f"budget a={self.target_active_fraction:g}"

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

    threshold: float = 0.5
    predictor: str = ""
    thresholds: tuple[float, ...] = ()
    target_recall: float = 0.0  # what ``thresholds`` were chosen for (a label); 0: not given
    kind: ClassVar[str] = "predictor"

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

    def to_json(self) -> dict[str, Any]:
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
