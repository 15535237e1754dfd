"""Conditions without JSON: what the setup page's condition builder offers, read from the
engine's policy dataclasses, and how a built condition or a sweep becomes rows.

Every family's fields, defaults, units and one-line meanings come from
``inference.policies`` itself (``dataclasses.fields`` and their ``metadata``), so a field the
engine adds appears in the builder without a change here. Fields a calibration job fills in
(per-layer thresholds, a profile fingerprint) are not asked for.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from annotations.queues import DEFAULT_MODEL_KEY
from inference.policies import POLICY_CLASSES, Policy

# The builder's order: the engine's (the baseline first, then by how much machinery it needs).
FAMILIES: dict[str, type[Policy]] = {cls.kind: cls for cls in POLICY_CLASSES}
# Families whose thresholds a calibration job can choose for a target sparsity
# (``Policy.calibration``: static/dynamic one for all layers, calibrated one per layer).
CALIBRATABLE = tuple(kind for kind, cls in FAMILIES.items() if cls.calibration)
# A sweep over target sparsities: the calibratable families and the budget controller,
# whose active-fraction target is the sparsity itself.
SWEEPABLE = (*CALIBRATABLE, "budget")
CALIBRATION_SETS = {
    "items": "the study's own items",
    "humaneval": "HumanEval prompts",
}
# The engine's telemetry key (Generation.telemetry) for weight bytes read per decode step.
WEIGHT_BYTES_READ = "weight_bytes_read_per_token"
# Conditions past which the all-pairs design is called out (n·(n−1)/2 pairs per item).
PAIR_WARNING_CONDITIONS = 5
PAIR_WARNING_JUDGMENTS = 2000


@dataclass(frozen=True)
class FieldSpec:
    """One policy field as the builder shows it."""

    name: str
    label: str
    required: bool
    default: Any  # None when required, or when the engine derives it (e.g. budget gains)
    help: str
    unit: str
    choices: tuple[str, ...] = ()

    @property
    def is_number(self) -> bool:
        return not self.choices and not isinstance(self.default, str)


def _default(field: dataclasses.Field) -> tuple[bool, Any]:
    """(required, default) of a dataclass field."""
    if field.default is not dataclasses.MISSING:
        return False, field.default
    if field.default_factory is not dataclasses.MISSING:
        return False, field.default_factory()
    return True, None


def family_fields(kind: str) -> list[FieldSpec]:
    """The fields the builder asks for in family `kind`, in the dataclass's order."""
    cls = FAMILIES[kind]
    derived = cls.derived_fields  # filled in by calibration, never typed
    specs = []
    for field in dataclasses.fields(cls):
        if field.name in derived:
            continue
        meta = field.metadata
        choices = tuple(meta.get("choices", ()))
        required, default = _default(field)
        specs.append(
            FieldSpec(
                name=field.name,
                label=field.name.replace("_", " "),
                required=required,
                default=default,
                help=meta.get("help", ""),
                unit=meta.get("unit", ""),
                choices=choices,
            )
        )
    return specs


def family_help(kind: str) -> str:
    """The family's one-line meaning: the first sentence of its docstring, as plain text (a
    docstring's first line stops mid-sentence, and its ``literals`` are reST, not prose)."""
    paragraph = " ".join((FAMILIES[kind].__doc__ or kind).strip().split("\n\n")[0].split())
    sentence = re.split(r"(?<=\.)\s", paragraph, maxsplit=1)[0]
    return sentence.replace("``", "")


def _fraction(value: float) -> str:
    return f"{value * 100:g} %"


def engine_policy(policy: dict) -> Policy | None:
    """A condition's policy JSON as the engine's `Policy`, parsed once for every display
    helper below; None while it waits for a calibration's thresholds."""
    try:
        return Policy.from_json(policy)
    except ValueError:
        return None


def policy_summary(
    policy: dict, engine: Policy | None, *, target_sparsity: float | None = None, name: str = ""
) -> str:
    """A condition's policy in a few words (never the raw JSON): the engine's label (family
    and thresholds), the site, always, and the calibration target where there is one, e.g.
    "static t=0.05 @input · calibrated to 50 % sparsity" or "static @h · calibrated to 25 %
    sparsity" while it waits for its thresholds: two conditions that differ only in site
    or target never read the same. `name` is not used: the summary says it all itself."""
    del name  # kept for the callers' keyword; the summary no longer depends on it
    kind = policy.get("kind", "?")
    site = policy.get("site") or _site_default(kind)
    site_text = f"@{site}" if site else ""
    # Awaiting calibration (no engine policy yet): the thresholds are not there yet.
    label = engine.label().removesuffix(f" {site_text}") if engine else str(kind)
    if target_sparsity is None:
        target_sparsity = policy.get("target_sparsity")
    target = (f" · calibrated to {_fraction(target_sparsity)} sparsity"
              if target_sparsity is not None else "")
    return f"{label} {site_text}".strip() + target


# What a site's skipped weights are, in words, for the study page and the report: the most a
# policy can save. gate, up and down are the same size, so each is a third of the MLP's bytes.
_SKIPPED_BYTES_NOTES = {
    "h": "can skip only the down_proj rows of inactive neurons: at most 1/3 of the MLP's "
    "weight bytes (gate and up are read whole)",
    "gate": "can skip the up_proj and down_proj rows of inactive neurons: at most 2/3 of the "
    "MLP's weight bytes (gate is read whole)",
    "predictor": "can skip the gate, up and down rows of neurons predicted inactive: up to all "
    "of the MLP's weight bytes (the predictor itself is read too)",
}


def policy_bytes_note(engine: Policy | None) -> str:
    """Which weight bytes the policy can skip, in words, from the engine's
    `Policy.skipped_weights`; empty when the engine cannot say yet (awaiting calibration)."""
    if engine is None:
        return ""
    skipped = engine.skipped_weights
    if not skipped and engine.kind == "dense":
        return "reads every weight (the baseline)"
    if not skipped:
        return "masking-only: reads every weight (its thresholds are 0), no speed-up possible"
    if engine.site != "input":
        return _SKIPPED_BYTES_NOTES[engine.site or engine.kind]
    which = ", ".join(skipped)
    which = f"all seven projections ({which})" if len(skipped) == 7 else f"{which} only"
    return f"can skip the weight columns of inactive inputs in {which}"


def _site_default(kind: str) -> str | None:
    for spec in family_fields(kind) if kind in FAMILIES else ():
        if spec.name == "site":
            return spec.default
    return None


@dataclass(frozen=True)
class ModelChoice:
    """The weights a condition runs, by registry key: `model` (``default``: the deployment's
    own), and for an alignment vector the `aligned` model and λ (θ = θ_model + λ·(θ_aligned −
    θ_model)). Whether the keys name valid, mergeable models is the registry's to say
    (`selectors.model_choice_problem`)."""

    model: str = DEFAULT_MODEL_KEY
    aligned: str = ""
    alignment_lambda: float | None = None

    def __post_init__(self) -> None:
        if bool(self.aligned) != (self.alignment_lambda is not None):
            raise ValueError("an alignment vector needs both the aligned model and λ")

    @property
    def label(self) -> str:
        """"" for the default model, else e.g. "on smol" or "smol→smol-dpo λ=0.5"."""
        if self.aligned:
            return f"{self.model}→{self.aligned} λ={self.alignment_lambda:g}"
        return "" if self.model == DEFAULT_MODEL_KEY else f"on {self.model}"


def parse_lambdas(text: str) -> list[float]:
    """`0, 0.5, 1` -> [0.0, 0.5, 1.0]: the λ of an alignment-vector sweep (any finite numbers,
    each once; λ > 1 extrapolates past the aligned model)."""
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts:
        raise ValueError("give the λ values of the sweep, e.g. 0, 0.25, 0.5, 1")
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"λ: “{part}” is not a number") from None
        if not math.isfinite(value):
            raise ValueError("λ must be a finite number")
        values.append(value)
    if len(set(values)) != len(values):
        raise ValueError("each λ once, please")
    return sorted(values)


def parse_lambda(text: str) -> float:
    """One λ as typed in the builder."""
    values = parse_lambdas(text)
    if len(values) != 1:
        raise ValueError("give one λ (a sweep takes several)")
    return values[0]


@dataclass(frozen=True)
class BuiltCondition:
    """A condition from the builder: its name, its policy JSON (without the thresholds a
    calibration fills in), the target sparsity to calibrate to (None: no calibration), the
    prompts to calibrate on, and the model it runs."""

    name: str
    policy: dict
    target_sparsity: float | None = None
    calibration_set: str = "items"
    model: ModelChoice = ModelChoice()

    def on_model(self, model: ModelChoice, *, rename: bool) -> BuiltCondition:
        """This condition on `model`; `rename`: its (generated) name says which model."""
        name = self.name
        if rename and model.label:
            name = f"{name} · {model.label}"[:100]
        return dataclasses.replace(self, model=model, name=name)

    @property
    def needs_calibration(self) -> bool:
        return self.target_sparsity is not None and self.policy["kind"] in CALIBRATABLE and (
            self.target_sparsity > 0 or self.policy["kind"] == "calibrated"
        )

    @property
    def summary(self) -> str:
        summary = policy_summary(self.policy, engine_policy(self.policy),
                                 target_sparsity=self.target_sparsity, name=self.name)
        label = self.model.label
        return f"{summary} · {label}" if label and label not in self.name else summary

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "policy": self.policy,
                "target_sparsity": self.target_sparsity,
                "calibration_set": self.calibration_set,
                "model": self.model.model,
                "aligned": self.model.aligned,
                "alignment_lambda": self.model.alignment_lambda,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> BuiltCondition:
        """Parse and re-check one hidden builder row (it came back from the browser)."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise ValueError("a built condition is not valid JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("policy"), dict):
            raise ValueError("a built condition needs a name and a policy")
        values = policy_values(data["policy"])
        target = data.get("target_sparsity")
        if target is not None:
            values["target_sparsity_percent"] = str(json_number(target, "target sparsity") * 100)
        built = build_condition(
            kind=str(data["policy"].get("kind")),
            values=values,
            name=_text(data.get("name", ""), "name"),
            calibration_set=_text(data.get("calibration_set", "items"), "calibration set"),
        )
        lam = data.get("alignment_lambda")
        model = ModelChoice(
            model=_text(data.get("model", DEFAULT_MODEL_KEY), "model"),
            aligned=_text(data.get("aligned", ""), "aligned model"),
            alignment_lambda=None if lam is None else json_number(lam, "λ"),
        )
        return built.on_model(model, rename=False)


def json_number(value: Any, what: str) -> float:
    """A number read from JSON, checked before any use: a string, a bool, a list or an
    infinite value is a ValueError naming `what` (a string target sparsity was once
    multiplied by 100, a 2 MB one into a 200 MB form error)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
        value
    ):
        raise ValueError(f"{what} must be a finite number, not {_kind_of(value)}")
    return float(value)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, not {_kind_of(value)}")
    return value


def _kind_of(value: Any) -> str:
    """What a JSON value is, in words, never the value itself (which may be megabytes)."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "an infinite number" if not math.isfinite(value) else "a number"
    return {str: "text", list: "a list", dict: "an object"}.get(type(value), "null")


def policy_values(policy: dict) -> dict[str, str]:
    """A policy JSON's fields (but its kind) as the builder's typed text, each checked to be
    a finite number or a word first; a list, an object, true/false or null is a ValueError."""
    values = {}
    for key, value in policy.items():
        if key == "kind":
            continue
        if not isinstance(value, str):
            json_number(value, key)
        values[key] = str(value)
    return values


def policy_check(policy: Any) -> None:
    """Raise ValueError, naming what is wrong, unless `policy` is one the engine accepts or
    one awaiting its calibration (a calibratable family without its threshold(s))."""
    if not isinstance(policy, dict):
        raise ValueError(f"a policy must be a JSON object, not {_kind_of(policy)}")
    kind = policy.get("kind")
    awaiting = kind in CALIBRATABLE and not {"threshold", "thresholds"} & set(policy)
    site = policy.get("site")
    Policy.from_json({**_stand_in(kind, site), **policy} if awaiting else policy)


def _stand_in(kind: str, site: str | None) -> dict:
    """What stands in for the thresholds a calibration will choose, so that the engine can
    validate the other fields now (an ``input``-site calibrated policy has one threshold per
    projection input: the four groups the engine names)."""
    if kind != "calibrated":
        return {"threshold": 0.0}
    layer = [0.0] * 4 if site == "input" else 0.0
    return {"target_sparsity": 0.0, "thresholds": [layer]}


def _parse_number(spec: FieldSpec, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{spec.label}: “{text}” is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{spec.label}: must be a finite number")
    return value


def _target(text: str) -> float | None:
    text = text.strip().rstrip("%").strip()
    if not text:
        return None
    try:
        percent = float(text)
    except ValueError:
        raise ValueError(f"target sparsity: “{text}” is not a percentage") from None
    if not 0 <= percent < 100:
        raise ValueError(f"target sparsity must be from 0 to under 100 %, got {percent:g}")
    return percent / 100


def build_condition(
    *, kind: str, values: dict[str, str], name: str = "", calibration_set: str = "items"
) -> BuiltCondition:
    """One condition from the builder's fields (text as typed; empty = the default).

    For static and dynamic, a target sparsity (``target_sparsity_percent``) instead of a
    threshold asks a calibration job for the threshold; calibrated always needs one.
    Raises ``ValueError`` with a message for the researcher."""
    if kind not in FAMILIES:
        raise ValueError(f"unknown family “{kind}”")
    if calibration_set not in CALIBRATION_SETS:
        raise ValueError(f"unknown calibration set “{calibration_set}”")
    target = _target(values.get("target_sparsity_percent", ""))
    if kind == "calibrated" and target is None:
        raise ValueError("calibrated: give a target sparsity in %")
    if target is not None and kind not in CALIBRATABLE:
        target = None  # a sweep's budget row carries the target in its own field
    policy: dict[str, Any] = {"kind": kind}
    for spec in family_fields(kind):
        text = str(values.get(spec.name, "")).strip()
        if text in ("", "None"):
            if spec.name == "threshold" and target is not None:
                continue  # calibration chooses it
            if spec.required:
                raise ValueError(
                    f"{kind}: {spec.label} is required"
                    + (" (or give a target sparsity to calibrate it)" if kind in CALIBRATABLE
                       else "")
                )
            continue
        if spec.choices:
            if text not in spec.choices:
                raise ValueError(f"{spec.label}: choose one of {', '.join(spec.choices)}")
            policy[spec.name] = text
        elif isinstance(spec.default, str):
            policy[spec.name] = text
        else:
            policy[spec.name] = _parse_number(spec, text)
    if target is not None and "threshold" in policy and kind != "calibrated":
        raise ValueError(f"{kind}: give a threshold or a target sparsity, not both")
    built = BuiltCondition(
        name="", policy=policy, target_sparsity=target, calibration_set=calibration_set
    )
    if built.needs_calibration:  # the engine checks the rest with a stand-in threshold
        Policy.from_json({**policy, **_stand_in(kind, policy.get("site"))})
    else:
        if target == 0 and FAMILIES[kind].calibration == "pooled":
            policy["threshold"] = 0.0  # 0 % sparsity: threshold 0, nothing to calibrate
        policy = Policy.from_json(policy).to_dict()  # the engine's own validation
    name = name.strip()[:100] or policy_summary(policy, engine_policy(policy),
                                                target_sparsity=target)
    return BuiltCondition(
        name=name[:100], policy=policy, target_sparsity=target, calibration_set=calibration_set
    )


def parse_sparsities(text: str) -> list[float]:
    """`0, 25, 40 %` -> [0.0, 0.25, 0.4] (percentages, comma or space separated)."""
    parts = [p for p in text.replace("%", " ").replace(",", " ").split() if p]
    if not parts:
        raise ValueError("give target sparsities in %, e.g. 0, 25, 40, 50, 65")
    targets = [_target(p) for p in parts]
    if len(set(targets)) != len(targets):
        raise ValueError("each target sparsity once, please")
    return sorted(t for t in targets if t is not None)


def build_sweep(
    *, kind: str, values: dict[str, str], sparsities: str, calibration_set: str = "items"
) -> list[BuiltCondition]:
    """One condition per target sparsity for family `kind`: static/dynamic/calibrated are
    calibrated to reach it, budget holds an active fraction of 1 − target."""
    if kind not in SWEEPABLE:
        raise ValueError(f"a sweep needs one of {', '.join(SWEEPABLE)}, not “{kind}”")
    site = values.get("site", "")
    out = []
    for target in parse_sparsities(sparsities):
        row = {k: v for k, v in values.items() if k not in ("threshold", "target_active_fraction")}
        if kind == "budget":
            if target == 0:
                raise ValueError("budget: a 0 % target leaves nothing to hold; start at > 0 %")
            row["target_active_fraction"] = f"{1 - target:g}"
        else:
            row["target_sparsity_percent"] = f"{target * 100:g}"
        name = f"{kind} {target * 100:g}%" + (f" @{site}" if site and site != _site_default(kind)
                                              else "")
        out.append(build_condition(kind=kind, values=row, name=name,
                                   calibration_set=calibration_set))
    return out


@dataclass(frozen=True)
class PairCount:
    """How many pairs and judgments a design asks for, and whether that is a lot."""

    conditions: int
    items: int
    design: str
    overlap: int

    @property
    def pairs_per_item(self) -> int:
        n = self.conditions
        return n * (n - 1) // 2 if self.design == "all_pairs" else max(n - 1, 0)

    @property
    def pairs(self) -> int:
        return self.pairs_per_item * self.items

    @property
    def judgments(self) -> int:
        return self.pairs * self.overlap

    @property
    def vs_first_pairs(self) -> int:
        return max(self.conditions - 1, 0) * self.items

    @property
    def explodes(self) -> bool:
        return self.judgments > PAIR_WARNING_JUDGMENTS or (
            self.design == "all_pairs" and self.conditions > PAIR_WARNING_CONDITIONS
        )
