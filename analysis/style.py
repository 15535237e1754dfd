"""Style-controlled Bradley–Terry: condition ratings with output length and formatting held
equal, as in Chatbot Arena's style control.

Raters reward longer and more formatted answers; sparsity changes both. The model
``P(a beats b) = σ(θ_a − θ_b + Σ_c β_c · x_c)`` has one covariate per control, each a
difference a − b between the two outputs of the pair:

- ``length``: ln(tokens_a / tokens_b) (β per e-fold longer; × ln 2 for a doubling);
- ``code_blocks``: fenced code blocks in a minus in b;
- ``markdown``: markdown elements (headers, list items, bold) in a minus in b;
- ``passed``: share of its tests output a passed minus b's (0 when either is unscored).

Columns ``CONTROL_a`` / ``CONTROL_b`` hold each output's value (``length_a``, ``length_b``
…). θ are the condition strengths at equal style, reported on the raw Bradley–Terry rating
scale (``1000 + 400 · θ / ln 10``, mean θ = 0). A tie counts ½ a win each way, as in the
raw model. CIs: percentiles of the same item-cluster bootstrap as the raw ratings.
"""

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.bootstrap import percentile_ci
from analysis.choice_model import RATING_SCALE, fit_choice_model, to_rating
from analysis.contracts import InputError, _blank_cells, _numbers

CONTROLS = ("length", "code_blocks", "markdown", "passed")
UNITS = {
    "length": "log-odds per e-fold length ratio (tokens)",
    "code_blocks": "log-odds per extra fenced code block",
    "markdown": "log-odds per extra markdown element (header, list item, bold)",
    "passed": "log-odds per unit share of tests passed",
}
LABELS = {
    "length": "length",
    "code_blocks": "code blocks",
    "markdown": "markdown",
    "passed": "passing tests",
}
RIDGE = 0.01
SCORE_A = {"a": 1.0, "tie": 0.5, "b": 0.0}

_FENCE = re.compile(r"^\s*(```|~~~)", re.MULTILINE)
_MARKDOWN = re.compile(
    r"^\s{0,3}#{1,6}\s|^\s*(?:[-*+]|\d+[.)])\s|\*\*[^*\n]+\*\*|__[^_\n]+__", re.MULTILINE
)


def style_features(text: str) -> dict[str, int]:
    """Fenced code blocks and markdown elements (headers, list items, bold spans) of one
    output, counted as Chatbot Arena's style control counts them (a fence pair = 1 block;
    text inside code blocks is not counted as markdown)."""
    fences = len(_FENCE.findall(text))
    prose = "".join(text.split("```")[::2])
    return {"code_blocks": fences // 2, "markdown": len(_MARKDOWN.findall(prose))}


def style_columns(
    judgments: pd.DataFrame, generations: pd.DataFrame
) -> tuple[pd.DataFrame, list[str]]:
    """The judgments with each side's style columns (``length_a``, ``length_b``, …) read
    from their generations, and the controls the study can use.

    In: judgments with ``generation_a`` / ``generation_b``; generations with
    ``generation`` and any of ``new_tokens`` (length; at least 1 token counted),
    ``text`` (code blocks, markdown) and ``passed`` (True / False / None: unscored). A
    control is used when every judged output has its value (``passed``: at least one)
    and the pair differences are not all zero."""
    out = judgments.copy()
    if out.empty or "generation_a" not in out or "generation" not in generations:
        return out, []
    by_id = generations.set_index("generation")
    sides = {}
    if "new_tokens" in by_id:
        sides["length"] = pd.to_numeric(by_id["new_tokens"], errors="coerce").clip(lower=1)
    if "text" in by_id:
        counted = by_id["text"].fillna("").map(style_features)
        sides["code_blocks"] = counted.map(lambda f: f["code_blocks"]).astype(float)
        sides["markdown"] = counted.map(lambda f: f["markdown"]).astype(float)
    if "passed" in by_id:
        sides["passed"] = by_id["passed"].map(
            lambda v: float(v) if isinstance(v, bool | int | float) and v == v else np.nan
        )
    controls = []
    for control, values in sides.items():
        a = out["generation_a"].map(values).astype(float)
        b = out["generation_b"].map(values).astype(float)
        known = a.notna() & b.notna()
        usable = known.any() if control == "passed" else known.all()
        if usable and ((a - b)[known] != 0).any():
            out[f"{control}_a"], out[f"{control}_b"] = a, b
            controls.append(control)
    return out, controls


def parse_controls(text: str) -> list[str]:
    """``"length,code_blocks"`` → ``["length", "code_blocks"]``; raises InputError
    naming an unknown control."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CONTROLS]
    if unknown or not names:
        raise InputError(
            f"unknown control(s) {', '.join(unknown) or '(none)'}; choose from "
            + ", ".join(CONTROLS)
        )
    return list(dict.fromkeys(names))


def style_covariates(df: pd.DataFrame, controls: Sequence[str]) -> pd.DataFrame:
    """One column per control: the a − b difference of the rows of `df` (index kept).

    Raises InputError naming the row and column of a missing or bad value (``passed`` may
    be blank: an unscored side, difference 0)."""
    out = pd.DataFrame(index=df.index)
    for control in controls:
        columns = (f"{control}_a", f"{control}_b")
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise InputError(
                f"--control {control} needs column(s) {', '.join(columns)}", column=missing[0]
            )
        if control == "passed":
            out[control] = _passed_difference(df, columns)
            continue
        a, b = (_numbers(df[c], c) for c in columns)
        for side, values in zip(columns, (a, b), strict=True):
            bad = (values <= 0) if control == "length" else (values < 0)
            if bad.any():
                row = values.index[bad.to_numpy().argmax()]
                need = "more than 0 tokens" if control == "length" else "a count of 0 or more"
                raise InputError(f"must be {need}, not {df.at[row, side]!r}", column=side, row=row)
        out[control] = np.log(a / b) if control == "length" else a - b
    return out


def _passed_difference(df: pd.DataFrame, columns: tuple[str, str]) -> pd.Series:
    sides = []
    for column in columns:
        blank = _blank_cells(df[column])
        values = pd.Series(0.0, index=df.index)
        if (~blank).any():
            values[~blank] = _numbers(df.loc[~blank, column], column)
        bad = ~blank & ((values < 0) | (values > 1)).to_numpy()
        if bad.any():
            row = df.index[bad.argmax()]
            raise InputError(
                f"must be a share from 0 to 1 or empty, not {df.at[row, column]!r}",
                column=column,
                row=row,
            )
        sides.append((values, blank))
    (a, blank_a), (b, blank_b) = sides
    return (a - b).where(~(blank_a | blank_b), 0.0)


def style_features_and_counts(
    judgments: pd.DataFrame, covariates: pd.DataFrame, index: dict[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The choice model's features [n, 2, C + p] (outcome "a wins": θ_a + x · β; "b wins":
    θ_b) and per-judgment counts [n, 2] (a tie is ½ each)."""
    n, n_conditions = len(judgments), len(index)
    a = judgments["condition_a"].map(index).to_numpy()
    b = judgments["condition_b"].map(index).to_numpy()
    features = np.zeros((n, 2, n_conditions + covariates.shape[1]))
    rows = np.arange(n)
    features[rows, 0, a] = 1
    features[rows, 1, b] = 1
    features[:, 0, n_conditions:] = covariates.to_numpy(dtype=float)
    score = judgments["winner"].map(SCORE_A).to_numpy(dtype=float)
    return features, np.stack([score, 1 - score], axis=1)


def style_controlled_bt(
    judgments: pd.DataFrame,
    covariates: pd.DataFrame,
    conditions: Sequence[str],
    item_codes: np.ndarray,
    draws: np.ndarray,
    *,
    focus: str | None = None,
    ridge: float = RIDGE,
) -> dict:
    """Bradley–Terry with style covariates, its item-bootstrap CIs, and how much of each
    condition's advantage the controls explain.

    In: canonical judgments; their covariates (`style_covariates`, already flipped to the
    canonical a / b); the condition names; each judgment's item code and the bootstrap's
    item draws [replicates, items] (`analysis.bootstrap.item_bootstrap_counts`, the same as
    the raw ratings'); `focus` names the condition the plain sentence is about (default:
    the highest raw rating). Out: ``controls``, ``units``, ``coefficients``,
    ``coefficients_ci``, ``conditions`` (``condition``, ``rating``, ``rating_ci``,
    ``raw_rating``), ``explained`` (per condition), ``sentence``, ``ridge``."""
    controls = list(covariates.columns)
    index = {name: i for i, name in enumerate(conditions)}
    if focus is not None and focus not in index:
        raise InputError(f"--focus {focus!r} is not a condition (found: {', '.join(conditions)})")
    features, counts = style_features_and_counts(judgments, covariates, index)
    n_conditions = len(conditions)
    fit = fit_choice_model(features, counts[None], ridge=ridge, centred=n_conditions)[0]
    raw = _fit_with(features, counts, controls, [], n_conditions, ridge)
    alone = {c: _fit_with(features, counts, controls, [c], n_conditions, ridge) for c in controls}
    replicates = np.empty((len(draws), features.shape[2]))
    if len(draws):
        weights = draws[:, item_codes]  # every judgment weighted by its item's draw count
        replicates = fit_choice_model(
            features,
            weights[..., None] * counts[None],
            ridge=ridge,
            centred=n_conditions,
            start=fit,
        )
    theta, beta = fit[:n_conditions], fit[n_conditions:]
    ratings = to_rating(theta)
    table = [
        {
            "condition": name,
            "rating": float(ratings[i]),
            "rating_ci": percentile_ci(to_rating(replicates[:, i])),
            "raw_rating": float(to_rating(raw[i])),
        }
        for name, i in index.items()
    ]
    explained = [_explained(name, i, theta, raw, alone) for name, i in index.items()]
    if focus is None:
        focus = conditions[int(np.argmax(raw))]
    return {
        "controls": controls,
        "units": {c: UNITS[c] for c in controls},
        "coefficients": {c: float(v) for c, v in zip(controls, beta, strict=True)},
        "coefficients_ci": {
            c: percentile_ci(replicates[:, n_conditions + k]) for k, c in enumerate(controls)
        },
        "conditions": sorted(table, key=lambda row: -row["rating"]),
        "explained": explained,
        "focus": focus,
        "sentence": _sentence(next(e for e in explained if e["condition"] == focus)),
        "ridge": ridge,
        "scale": "rating = 1000 + 400 * theta / ln(10) at equal style; mean theta 0",
    }


def _fit_with(features, counts, controls, kept, n_conditions, ridge) -> np.ndarray:
    """Condition strengths with only the controls in `kept` (none: the raw model)."""
    columns = list(range(n_conditions)) + [n_conditions + controls.index(c) for c in kept]
    fit = fit_choice_model(features[:, :, columns], counts[None], ridge=ridge, centred=n_conditions)
    return fit[0, :n_conditions]


def _advantage(theta: np.ndarray, i: int) -> float:
    """Rating points of condition i over the mean of the others."""
    others = np.delete(theta, i).mean()
    return float((theta[i] - others) * RATING_SCALE / math.log(10))


def _explained(name: str, i: int, theta, raw, alone) -> dict:
    raw_advantage = _advantage(raw, i)
    controlled = _advantage(theta, i)

    def share(advantage: float) -> float | None:
        if abs(raw_advantage) < 1:  # under a rating point: nothing to explain
            return None
        return (raw_advantage - advantage) / raw_advantage

    return {
        "condition": name,
        "raw_advantage": raw_advantage,
        "controlled_advantage": controlled,
        "share_explained": share(controlled),
        "share_explained_by": {c: share(_advantage(fit, i)) for c, fit in alone.items()},
    }


def _sentence(row: dict) -> str:
    name, raw = row["condition"], row["raw_advantage"]
    if row["share_explained"] is None:
        return f"{name} has no advantage over the other conditions to explain (raw {raw:+.0f})."
    word = "advantage" if raw > 0 else "disadvantage"
    points = f"{raw:+.0f} rating points raw, {row['controlled_advantage']:+.0f} after control"
    alone = [f"{LABELS[c]} {_percent(v)}" for c, v in row["share_explained_by"].items()]
    if row["share_explained"] < 0:
        return (
            f"Style hides part of {name}'s {word} over the other conditions: it grows after "
            f"control ({points}; share explained by {', '.join(alone)})."
        )
    if row["controlled_advantage"] * raw < 0:
        return (
            f"Style more than explains {name}'s {word} over the other conditions, which "
            f"reverses after control ({points}; share explained by {', '.join(alone)})."
        )
    if len(alone) == 1:
        (control,) = row["share_explained_by"]
        return (
            f"{LABELS[control].capitalize()} explains {_percent(row['share_explained'])} of "
            f"{name}'s {word} over the other conditions ({points})."
        )
    return (
        f"Style explains {_percent(row['share_explained'])} of {name}'s {word} over the "
        f"other conditions ({', '.join(alone)} alone; {points})."
    )


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f} %"
