"""Alignment of preference, Pass@1 and efficiency with the sparsity threshold.

Plain tables in, plain rows out (no Django). A *condition* is a name and its policy JSON
(``{"kind": "static", "threshold": 0.05}``, ``{"kind": "dense"}``, ``{"kind": "dynamic",
...}``, ``{"kind": "calibrated", "target_sparsity": ...}``); *generations* is one row per
finished output with ``condition, item, active_fraction, tokens_per_s, latency_s,
peak_rss_bytes, passed`` (True / False / None when not checked) and optionally ``outcome``
(why a check ended as it did, `evaluation.sandbox.outcomes.OUTCOME_KINDS`),
``weight_bytes_read_per_token``, ``prefill_tokens_per_s`` and ``decode_tokens_per_s``.
Everything is put on one axis: the achieved sparsity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.bootstrap import item_bootstrap_counts, percentile_ci
from analysis.by_model import model_of, study_models
from analysis.paired import (
    ALPHA,
    POWER,
    checked_samples,
    paired_change,
    pass_at_1_difference,
    validate_pass_table,
)
from analysis.preference import holm, wilson_interval
from evaluation.passk import pass_at_k_over_problems

# Telemetry means with a 95 % interval: (row key, generations column, scale).
# (key, generations column, scale, largest possible value); none is below 0.
_TELEMETRY = (
    ("tokens_per_s", "tokens_per_s", 1.0, math.inf),
    # The prompt's forward and the decode steps apart (a long prompt's prefill is not decode).
    ("prefill_tokens_per_s", "prefill_tokens_per_s", 1.0, math.inf),
    ("decode_tokens_per_s", "decode_tokens_per_s", 1.0, math.inf),
    ("latency_s", "latency_s", 1.0, math.inf),
    ("peak_rss_mib", "peak_rss_bytes", 1 / 2**20, math.inf),
    # The peak above the worker's resident set at the generation's start.
    ("rss_increase_mib", "rss_increase_bytes", 1 / 2**20, math.inf),
    # Divergence from dense, teacher-forced on dense's answer (`inference.divergence`).
    ("kl_from_dense", "kl_from_dense", 1.0, math.inf),
    ("top1_agreement_with_dense", "top1_agreement_with_dense", 1.0, 1.0),
    ("active_fraction", "active_fraction", 1.0, 1.0),
    ("bytes_read_per_token", "weight_bytes_read_per_token", 1.0, math.inf),
)
# Two conditions are "at equal sparsity" only this close (absolute, in achieved sparsity).
MATCH_TOLERANCE = 0.05
# The Pass@1 interval's bootstrap over problems (several samples per problem): fixed, so a
# report and the study page show the same interval.
PASS_AT_1_BOOTSTRAP = 2000
PASS_AT_1_SEED = 0


def policy_axis(policy: dict) -> tuple[str, float | None]:
    """The family of a policy and its setting: a static or dynamic policy's base
    ``threshold``, a calibrated one's ``target_sparsity``, dense 0. Settings of different
    families are in different units; plots and matching use the achieved sparsity instead."""
    kind = str(policy.get("kind", "unknown"))
    if kind == "dense":
        return kind, 0.0
    key = "target_sparsity" if kind == "calibrated" else "threshold"
    value = policy.get(key)
    return kind, float(value) if isinstance(value, int | float) else None


def series_of(policy: dict) -> str:
    """The curve a condition belongs to: its family, and its site when not the default h."""
    kind = str(policy.get("kind", "unknown"))
    site = policy.get("site")
    return f"{kind} @{site}" if site and site != "h" else kind


def condition_table(
    conditions: Sequence[dict], generations: pd.DataFrame, preference: dict | None
) -> list[dict]:
    """One row per condition (study order): family, series (family and site, and the model
    when the study has several), setting, achieved sparsity (1 − mean active_fraction),
    telemetry means, Pass@1, Bradley–Terry rating with its CI and the win rate (ties ½)
    against the dense condition (``dense_condition``: its own model's, else the study's
    first), each with a 95 % interval (``<key>_ci``: telemetry a normal interval of the mean
    over generations, Pass@1 Wilson, BT and win rate items and raters as clusters).

    In: conditions as ``{"name", "policy"}`` (optionally ``"summary"``, a short text,
    ``"skips_bytes"``: whether the engine skips reading weights for it, None when unknown,
    ``"bytes_note"``: which weight bytes it can skip, in words, ``"target_sparsity"``: the
    calibration's target, else a calibrated policy's, and ``"model"`` and
    ``"model_fingerprint"``: the weights it ran, `analysis.by_model`),
    the generations table, and `preference_summary`'s output (or None). Missing values are
    None."""
    bt, controlled = {}, {}
    if preference:
        bt = {row["condition"]: row for row in preference["bradley_terry"]["conditions"]}
        style = preference.get("style_control") or {"conditions": []}
        controlled = {row["condition"]: row for row in style["conditions"]}
    dense = [c["name"] for c in conditions if c["policy"].get("kind") == "dense"]
    # Each model is compared with its own dense condition (the study's first without one).
    dense_of_model: dict[str, str] = {}
    for c in conditions:
        if c["policy"].get("kind") == "dense":
            dense_of_model.setdefault(model_of(c), c["name"])
    several_models = len(study_models(conditions)) > 1
    rows = []
    for condition in conditions:
        name = condition["name"]
        model = model_of(condition)
        family, threshold = policy_axis(condition["policy"])
        own = generations[generations["condition"] == name] if len(generations) else generations
        reference = dense_of_model.get(model, dense[0] if dense else None)
        row = {
            "condition": name,
            "family": family,
            # One curve per model (and alignment-vector λ) when the study has several.
            "series": f"{series_of(condition['policy'])} · {model}" if several_models
            else series_of(condition["policy"]),
            "model": model,
            "model_fingerprint": condition.get("model_fingerprint") or "",
            "dense_condition": reference,
            "site": str(condition["policy"].get("site") or "h"),
            "summary": condition.get("summary") or name,
            "skips_bytes": condition.get("skips_bytes"),
            "bytes_note": condition.get("bytes_note") or "",
            "threshold": threshold,
            # The calibration's target, shown beside the achieved sparsity it missed or hit.
            "target_sparsity": condition.get(
                "target_sparsity", threshold if family == "calibrated" else None),
            "n_generations": len(own),
            **_telemetry(own),
            **_pass_at_1(own),
            "bt_rating": bt[name]["rating"] if name in bt else None,
            "bt_rating_ci": bt[name]["rating_ci"] if name in bt else None,
            "bt_rank": bt[name]["rank"] if name in bt else None,
            # Style control (`analysis.style`): the rating at equal length and formatting.
            "bt_rating_controlled": controlled[name]["rating"] if name in controlled else None,
            "bt_rating_controlled_ci": (
                controlled[name]["rating_ci"] if name in controlled else None
            ),
        }
        row.update(_versus(name, reference, preference))
        row.update(_paired_with_dense(name, reference, generations))
        rows.append(row)
    return rows


# Telemetry tested against dense within item and machine: (row key, generations column,
# as a ratio (else a difference), scale).
_PAIRED = (
    ("tokens_per_s", "tokens_per_s", True, 1.0),
    ("bytes_read_per_token", "weight_bytes_read_per_token", True, 1.0),
    ("peak_rss_mib", "peak_rss_bytes", False, 1 / 2**20),
    ("rss_increase_mib", "rss_increase_bytes", False, 1 / 2**20),
)


def machines(generations: pd.DataFrame) -> list[dict]:
    """The machines that ran the generations (the ``machine`` column; "" = not recorded):
    ``machine``, ``generations`` and ``conditions`` (how many each ran), most first."""
    if generations.empty or "machine" not in generations:
        return []
    named = generations.assign(machine=generations["machine"].fillna("").astype(str))
    counts = named.groupby("machine").agg(
        generations=("condition", "size"), conditions=("condition", "nunique")
    )
    return [
        {"machine": name or "not recorded", "generations": int(row.generations),
         "conditions": int(row.conditions)}
        for name, row in counts.sort_values("generations", ascending=False).iterrows()
    ]


def _paired_with_dense(name: str, dense: str | None, generations: pd.DataFrame) -> dict:
    """A condition against dense on the same problems, items and machines (`analysis.paired`):
    ``pass_at_1_vs_dense`` (flips, McNemar, paired interval) and ``<key>_vs_dense`` for
    tokens/s and bytes read (ratios), peak memory and its increase over the resident set at
    the start (differences in MiB); None for dense itself or where either has no data. Rows
    with different ``machine`` values are never paired."""
    out = {"pass_at_1_vs_dense": None, **{f"{key}_vs_dense": None for key, *_ in _PAIRED}}
    if dense is None or name == dense or generations.empty:
        return out
    checked = checked_samples(generations)
    own, reference = (checked[checked["condition"] == c] for c in (name, dense))
    if len(own) and len(reference):
        out["pass_at_1_vs_dense"] = pass_at_1_difference(reference, own)
    for key, column, ratio, scale in _PAIRED:
        if column not in generations:
            continue
        values = generations.assign(**{column: pd.to_numeric(generations[column],
                                                             errors="coerce") * scale})
        out[f"{key}_vs_dense"] = paired_change(values, name, dense, column, ratio=ratio)
    return out


def _values(own: pd.DataFrame, column: str) -> pd.Series:
    if own.empty or column not in own:
        return pd.Series(dtype=float)
    return pd.to_numeric(own[column], errors="coerce").dropna()


def mean_interval(
    values: pd.Series, *, least: float = 0.0, most: float = math.inf
) -> tuple[float | None, list[float] | None]:
    """The mean and its 95 % Student-t interval (mean ± t(0.975, n − 1) SE) cut to the values'
    possible range [`least`, `most`] (a latency's interval never goes below 0 s: the mean
    cannot); no interval from one value or from values that are all the same. Student's t,
    not the normal 1.96: a condition often has a handful of outputs, and with 3 the normal
    interval is 2.2 times too narrow (it covers about 80 %)."""
    if not len(values):
        return None, None
    mean = float(values.mean())
    if len(values) < 2:
        return mean, None
    quantile = float(stats.t.ppf(0.975, len(values) - 1))
    half = quantile * float(values.std(ddof=1)) / np.sqrt(len(values))
    if half == 0:  # every value the same: no interval, rather than one that reads as certainty
        return mean, None
    return mean, [max(mean - half, least), min(mean + half, most)]


def _telemetry(own: pd.DataFrame) -> dict:
    out = {}
    for key, column, scale, most in _TELEMETRY:
        mean, ci = mean_interval(_values(own, column) * scale, most=most)
        out[key], out[f"{key}_ci"] = mean, ci
    active, active_ci = out["active_fraction"], out["active_fraction_ci"]
    out["sparsity"] = 1 - active if active is not None else None
    out["sparsity_ci"] = [1 - active_ci[1], 1 - active_ci[0]] if active_ci else None
    return out


def pass_at_1_interval(items: Sequence, passed: Sequence[bool]) -> list[float] | None:
    """The 95 % interval of Pass@1 (the mean over problems of each problem's share of passing
    samples) from one (problem, passed) pair per checked sample; None without samples.

    One sample per problem: the Wilson interval over the samples, which are the problems.
    Several samples of a problem are not independent (a problem is easy or hard for all of
    them), so when any problem has more than one the interval is a percentile bootstrap over
    problems: `PASS_AT_1_BOOTSTRAP` replicates (seed `PASS_AT_1_SEED`) each drawing the
    problems with replacement, of the mean per-problem rate. Where that has no width (one
    problem, or every problem at the same rate, e.g. all passed) it is the Wilson interval
    over the problems, their rates summed as the successes."""
    outcomes = pd.DataFrame({"item": list(items), "passed": list(passed)})
    if outcomes.empty:
        return None
    per_problem = outcomes.groupby("item")["passed"]
    if per_problem.size().max() == 1:
        return wilson_interval(int(outcomes["passed"].sum()), len(outcomes))
    rates = per_problem.mean().to_numpy(dtype=float)
    draws = item_bootstrap_counts(len(rates), PASS_AT_1_BOOTSTRAP, PASS_AT_1_SEED)
    interval = percentile_ci(draws @ rates / len(rates))
    if interval is None or interval[0] == interval[1]:
        return wilson_interval(float(rates.sum()), len(rates))
    return interval


# The outcome of a sample whose Pass@1 check never ran (its job failed twice: the worker died
# each time). Left out of Pass@1, as unscored, and counted beside the outcomes so it shows.
NOT_RUN = "check could not run"


def _pass_at_1(own: pd.DataFrame) -> dict:
    """Pass@1 = mean over problems of the share of checked samples that passed (the
    unbiased estimator with k = 1), its 95 % interval (`pass_at_1_interval`: Wilson with one
    sample per problem, over problems with several), pass@k by the unbiased estimator when
    every problem has k > 1 samples, and the checks counted by outcome
    (`evaluation.sandbox.outcomes.OUTCOME_KINDS`, and `NOT_RUN` for checks that never ran) so that
    a 0 can be read."""
    checked = own[own["passed"].notna()] if not own.empty else own
    not_run = int((own["outcome"] == NOT_RUN).sum()) if "outcome" in own else 0
    if checked.empty:
        return {
            "pass_at_1": None, "pass_at_1_ci": None, "pass_at_k": None, "k": None,
            "n_checked": 0, "n_passed": 0, "outcomes": {NOT_RUN: not_run} if not_run else {},
        }  # fmt: skip
    passed = checked["passed"].astype(bool)
    per_item = passed.groupby(checked["item"])
    k = int(per_item.size().min())
    outcomes = zip(checked["item"], passed, strict=True)
    outcome_counts = checked["outcome"].value_counts() if "outcome" in checked else {}
    return {
        "pass_at_1": float(per_item.mean().mean()),
        "pass_at_1_ci": pass_at_1_interval(checked["item"], passed),
        "pass_at_k": pass_at_k_over_problems(outcomes, k).pass_at_k if k > 1 else None,
        "k": k if k > 1 else None,
        "n_checked": len(checked),
        "n_passed": int(passed.sum()),
        "outcomes": {
            **{kind: int(n) for kind, n in outcome_counts.items() if kind != "passed"},
            **({NOT_RUN: not_run} if not_run else {}),
        },
    }


def _versus(name: str, dense: str | None, preference: dict | None) -> dict:
    empty = {"win_rate_vs_dense": None, "win_rate_vs_dense_ci": None,
             "win_rate_vs_dense_ci_note": None, "n_vs_dense": 0, "win_rate_vs_dense_p": None,
             "win_rate_vs_dense_detectable": None}
    if preference is None or dense is None or name == dense:
        return empty
    for pair in preference["pairs"]:
        if {pair["condition_a"], pair["condition_b"]} != {name, dense}:
            continue
        rate = pair["win_rate_ties_half"]
        # No interval where it would have no width (every verdict a tie): not certainty.
        interval = pair["win_rate_ties_half_ci_cluster"]
        if interval and pair["condition_a"] != name:
            interval = [1 - interval[1], 1 - interval[0]]
        if pair["condition_a"] != name:
            rate = 1 - rate
        return {
            "win_rate_vs_dense": rate,
            "win_rate_vs_dense_ci": interval if interval and interval[0] < interval[1] else None,
            "win_rate_vs_dense_ci_note": None if interval and interval[0] < interval[1]
            else pair.get("win_rate_ties_half_ci_note"),
            "n_vs_dense": pair["n"],
            "win_rate_vs_dense_p": pair.get("p_cluster"),
            "win_rate_vs_dense_detectable": pair.get("win_rate_detectable"),
        }
    return empty


def matched_sparsity(
    rows: Sequence[dict], preference: dict | None, *, tolerance: float = MATCH_TOLERANCE
) -> list[dict]:
    """Each non-static, non-dense condition against the static condition of the *same site*
    whose achieved sparsity is nearest, when that is within `tolerance` (a site's own effect
    is then not mixed into the policy's); where no static condition of its site is that
    close, the nearest of another site within it, labelled ``cross_site: True``. Out: both
    sparsities, their gap, both sites, and the differences (other − static) in BT rating,
    Pass@1, tokens/s, latency and peak memory, plus their head-to-head win rate (ties ½,
    Wilson CI) when raters compared them directly. Beyond the tolerance the row says
    ``matched: False`` (no match) and has no differences."""
    static = [r for r in rows if r["family"] == "static" and r["sparsity"] is not None]
    out = []
    for row in rows:
        if row["family"] in ("static", "dense") or row["sparsity"] is None:
            continue

        site = row.get("site", "h")
        match = _nearest([s for s in static if s.get("site", "h") == site], row["sparsity"])
        if not _within(match, row["sparsity"], tolerance):
            other = _nearest(static, row["sparsity"])
            if _within(other, row["sparsity"], tolerance) or match is None:
                match = other
        matched = _within(match, row["sparsity"], tolerance)
        compared = {
            "condition": row["condition"],
            "family": row["family"],
            "sparsity": row["sparsity"],
            "tolerance": tolerance,
            "matched": matched,
            "static": match["condition"] if match else None,
            "static_sparsity": match["sparsity"] if match else None,
            "sparsity_gap": row["sparsity"] - match["sparsity"] if match else None,
            "site": site,
            "static_site": match.get("site", "h") if match else None,
            "cross_site": bool(match) and match.get("site", "h") != site,
        }
        for key in ("bt_rating", "pass_at_1", "tokens_per_s", "latency_s", "peak_rss_mib"):
            both = matched and row[key] is not None and match[key] is not None
            compared[f"{key}_difference"] = row[key] - match[key] if both else None
        if matched:
            compared.update(_head_to_head(row["condition"], match["condition"], preference))
        else:
            compared.update(head_to_head_win_rate=None, head_to_head_ci=None, head_to_head_n=0)
        out.append(compared)
    return out


def _nearest(candidates: list[dict], sparsity: float) -> dict | None:
    return min(candidates, key=lambda c: abs(c["sparsity"] - sparsity), default=None)


def _within(match: dict | None, sparsity: float, tolerance: float) -> bool:
    return match is not None and abs(match["sparsity"] - sparsity) <= tolerance


def _head_to_head(name: str, other: str, preference: dict | None) -> dict:
    for pair in (preference or {}).get("pairs", []):
        if {pair["condition_a"], pair["condition_b"]} == {name, other}:
            score = pair["wins"] + pair["ties"] / 2
            if pair["condition_a"] != name:
                score = pair["losses"] + pair["ties"] / 2
            return {
                "head_to_head_win_rate": score / pair["n"],
                "head_to_head_ci": wilson_interval(score, pair["n"]),
                "head_to_head_n": pair["n"],
            }
    return {"head_to_head_win_rate": None, "head_to_head_ci": None, "head_to_head_n": 0}


def pareto_front(rows: Sequence[dict], quality: str, speed: str = "tokens_per_s") -> list[str]:
    """Conditions no other condition beats on both `quality` and `speed` (higher is better
    for both; a tie on both keeps both). Rows missing either value are left out."""
    points = [(r["condition"], r[quality], r[speed]) for r in rows]
    points = [p for p in points if p[1] is not None and p[2] is not None]
    front = []
    for name, q, s in points:
        dominated = any((q2 >= q and s2 >= s) and (q2 > q or s2 > s) for _, q2, s2 in points)
        if not dominated:
            front.append(name)
    return front


def quality_measure(rows: Sequence[dict], speed: str = "tokens_per_s") -> str | None:
    """The quality axis of the Pareto front: Pass@1 when every condition has it and it
    moves (not the same for every condition: Pass@1 0 everywhere would put the fastest
    condition, whatever it wrote, on the front), else the BT rating on the same terms; None
    when neither, or when a condition has no `speed`."""
    if not rows or any(r[speed] is None for r in rows):
        return None
    for key in ("pass_at_1", "bt_rating"):
        values = [r[key] for r in rows]
        if all(v is not None and np.isfinite(v) for v in values) and len(set(values)) > 1:
            return key
    return None


def pass_at_1_table(df: pd.DataFrame, order: Sequence[str] | None = None) -> dict:
    """Pass@1 per condition of a plain ``item, condition, sample, passed`` table, and each
    condition against the reference (the first of `order`, default the first condition in
    the table's row order) by `analysis.paired.pass_at_1_difference`, Holm-adjusted over
    the comparisons.

    Raises `InputError` for a malformed table."""
    table = validate_pass_table(df)
    conditions = list(order) if order else list(dict.fromkeys(table["condition"]))
    reference = conditions[0]
    rows = []
    for name in conditions:
        own = table[table["condition"] == name]
        row = {
            "condition": name,
            "n_problems": int(own["item"].nunique()),
            "n_checked": len(own),
            "pass_at_1": float(own.groupby("item")["passed"].mean().mean()),
            "pass_at_1_ci": pass_at_1_interval(own["item"], own["passed"]),
            "versus_reference": None,
        }
        if name != reference:
            row["versus_reference"] = pass_at_1_difference(
                table[table["condition"] == reference], own
            )
        rows.append(row)
    compared = [r["versus_reference"] for r in rows if r["versus_reference"]]
    for versus, adjusted in zip(compared, holm([v["p"] for v in compared]), strict=True):
        versus["p_holm"] = adjusted
    return {"reference": reference, "alpha": ALPHA, "power": POWER, "conditions": rows}
