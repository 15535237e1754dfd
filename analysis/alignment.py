"""Alignment of preference, Pass@1 and efficiency with the sparsity threshold.

Plain tables in, plain rows out (no Django). A *condition* is a name and its policy JSON
(``{"kind": "static", "threshold": 0.05}``, ``{"kind": "dense"}``, ``{"kind": "dynamic",
...}``, ``{"kind": "calibrated", "target_sparsity": ...}``); *generations* is one row per
finished output with ``condition, item, active_fraction, tokens_per_s, latency_s,
peak_rss_bytes, passed`` (True / False / None when not checked) and optionally ``outcome``
(why a check ended as it did, `evaluation.sandbox.OUTCOME_KINDS`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.preference import wilson_interval
from evaluation.passk import pass_at_k_over_problems

METRICS = ("tokens_per_s", "latency_s", "peak_rss_mib", "active_fraction")


def policy_axis(policy: dict) -> tuple[str, float | None]:
    """The family of a policy and its position on the threshold axis.

    Static and dynamic policies sit at their base ``threshold``; a calibrated one at its
    ``target_sparsity`` (its thresholds differ per layer); dense at 0, the anchor of every
    family's curve."""
    kind = str(policy.get("kind", "unknown"))
    if kind == "dense":
        return kind, 0.0
    key = "target_sparsity" if kind == "calibrated" else "threshold"
    value = policy.get(key)
    return kind, float(value) if isinstance(value, int | float) else None


def condition_table(
    conditions: Sequence[dict], generations: pd.DataFrame, preference: dict | None
) -> list[dict]:
    """One row per condition (study order): family, threshold, mean telemetry, achieved
    sparsity (1 - mean active_fraction), Pass@1, Bradley–Terry rating with its CI and the
    win rate (ties ½) against the dense condition with Wilson and bootstrap CIs.

    In: conditions as ``{"name", "policy"}``, the generations table, and
    `preference_summary`'s output (or None). Missing values are None."""
    bt = {}
    if preference:
        bt = {row["condition"]: row for row in preference["bradley_terry"]["conditions"]}
    dense = [c["name"] for c in conditions if c["policy"].get("kind") == "dense"]
    rows = []
    for condition in conditions:
        name = condition["name"]
        family, threshold = policy_axis(condition["policy"])
        own = generations[generations["condition"] == name] if len(generations) else generations
        row = {
            "condition": name,
            "family": family,
            "threshold": threshold,
            "n_generations": len(own),
            **_telemetry(own),
            **_pass_at_1(own),
            "bt_rating": bt[name]["rating"] if name in bt else None,
            "bt_rating_ci": bt[name]["rating_ci"] if name in bt else None,
            "bt_rank": bt[name]["rank"] if name in bt else None,
        }
        row.update(_versus(name, dense[0] if dense else None, preference))
        rows.append(row)
    return rows


def _mean(values: pd.Series) -> float | None:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.mean()) if len(values) else None


def _telemetry(own: pd.DataFrame) -> dict:
    if own.empty:
        return {key: None for key in (*METRICS, "sparsity")}
    active = _mean(own["active_fraction"])
    rss = _mean(own["peak_rss_bytes"])
    return {
        "tokens_per_s": _mean(own["tokens_per_s"]),
        "latency_s": _mean(own["latency_s"]),
        "peak_rss_mib": rss / 2**20 if rss is not None else None,
        "active_fraction": active,
        "sparsity": 1 - active if active is not None else None,
    }


def _pass_at_1(own: pd.DataFrame) -> dict:
    """Pass@1 = mean over problems of the share of checked samples that passed (the
    unbiased estimator with k = 1), its Wilson 95 % interval (over the checked samples: exact
    with one sample per problem, which ignores the clustering when there are several), pass@k
    by the unbiased estimator when every problem has k > 1 samples, and the checks counted by
    outcome (`evaluation.sandbox.OUTCOME_KINDS`) so that a 0 can be read."""
    checked = own[own["passed"].notna()] if not own.empty else own
    if checked.empty:
        return {
            "pass_at_1": None, "pass_at_1_ci": None, "pass_at_k": None, "k": None,
            "n_checked": 0, "n_passed": 0, "outcomes": {},
        }  # fmt: skip
    passed = checked["passed"].astype(bool)
    per_item = passed.groupby(checked["item"])
    k = int(per_item.size().min())
    outcomes = zip(checked["item"], passed, strict=True)
    outcome_counts = checked["outcome"].value_counts() if "outcome" in checked else {}
    return {
        "pass_at_1": float(per_item.mean().mean()),
        "pass_at_1_ci": wilson_interval(int(passed.sum()), len(checked)),
        "pass_at_k": pass_at_k_over_problems(outcomes, k).pass_at_k if k > 1 else None,
        "k": k if k > 1 else None,
        "n_checked": len(checked),
        "n_passed": int(passed.sum()),
        "outcomes": {kind: int(n) for kind, n in outcome_counts.items() if kind != "passed"},
    }


def _versus(name: str, dense: str | None, preference: dict | None) -> dict:
    empty = {"win_rate_vs_dense": None, "win_rate_vs_dense_ci": None, "n_vs_dense": 0}
    if preference is None or dense is None or name == dense:
        return empty
    for pair in preference["pairs"]:
        if {pair["condition_a"], pair["condition_b"]} != {name, dense}:
            continue
        rate = pair["win_rate_ties_half"]
        low, high = pair["win_rate_ties_half_ci_bootstrap"] or pair["win_rate_ties_half_ci_wilson"]
        if pair["condition_a"] != name:
            rate, low, high = 1 - rate, 1 - high, 1 - low
        return {
            "win_rate_vs_dense": rate,
            "win_rate_vs_dense_ci": [low, high],
            "n_vs_dense": pair["n"],
        }
    return empty


def matched_sparsity(rows: Sequence[dict], preference: dict | None) -> list[dict]:
    """Each non-static, non-dense condition against the static condition whose achieved
    sparsity is nearest: both sparsities, their gap, and the differences (other − static)
    in BT rating, Pass@1, tokens/s, latency and peak memory; plus their head-to-head win
    rate (ties ½, Wilson CI) when raters compared them directly."""
    static = [r for r in rows if r["family"] == "static" and r["sparsity"] is not None]
    out = []
    for row in rows:
        if row["family"] in ("static", "dense") or row["sparsity"] is None or not static:
            continue
        match = min(static, key=lambda s: abs(s["sparsity"] - row["sparsity"]))
        compared = {
            "condition": row["condition"],
            "family": row["family"],
            "static": match["condition"],
            "sparsity": row["sparsity"],
            "static_sparsity": match["sparsity"],
            "sparsity_gap": row["sparsity"] - match["sparsity"],
        }
        for key in ("bt_rating", "pass_at_1", "tokens_per_s", "latency_s", "peak_rss_mib"):
            both = row[key] is not None and match[key] is not None
            compared[f"{key}_difference"] = row[key] - match[key] if both else None
        compared.update(_head_to_head(row["condition"], match["condition"], preference))
        out.append(compared)
    return out


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
    """The quality axis of the Pareto front: Pass@1 when every condition has it, else the
    BT rating when every condition has one; None when neither, or when a condition has
    no `speed`."""
    if not rows or any(r[speed] is None for r in rows):
        return None
    for key in ("pass_at_1", "bt_rating"):
        if all(r[key] is not None and np.isfinite(r[key]) for r in rows):
            return key
    return None
