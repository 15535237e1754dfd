"""The report by model: a study whose conditions run on several models (a base and its
aligned version, points along an alignment vector) compared at the same policy.

Plain tables in, plain rows out (no Django). A condition's ``model`` is the key of the
weights it ran (``default`` for the deployment's own model; an alignment-vector condition
``base→aligned@λ``), its ``model_fingerprint`` their content fingerprint. *rows* are
`analysis.alignment.condition_table`'s; *generations* one row per finished output with
``condition, item, active_fraction`` (and ``sample_index``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd

from analysis.paired import ALPHA, paired_change
from analysis.preference import holm

DEFAULT_MODEL = "default"
# The by-model table's columns: (row key, what it is).
MODEL_TABLE_KEYS = (
    "sparsity", "bt_rating", "win_rate_vs_dense", "pass_at_1", "tokens_per_s",
    "prefill_tokens_per_s", "decode_tokens_per_s",
)


def model_of(condition: dict) -> str:
    """The key of the model a condition ran (a condition without one: the default model)."""
    return str(condition.get("model") or DEFAULT_MODEL)


def study_models(conditions: Sequence[dict]) -> list[str]:
    """The models of a study's conditions, in study order."""
    return list(dict.fromkeys(model_of(c) for c in conditions))


def by_model_section(
    conditions: Sequence[dict], rows: Sequence[dict], generations: pd.DataFrame
) -> dict | None:
    """The report's by-model section, or None for a study of one model (every study before
    the registry), whose report stays as it was.

    Out: ``models`` (``model``, ``fingerprints`` recorded, ``conditions``), ``table`` (per
    policy, in study order, one row per model that ran it, with `MODEL_TABLE_KEYS` and
    their intervals) and ``sparsity`` (`sparsity_by_model`)."""
    models = study_models(conditions)
    if len(models) < 2:
        return None
    by_name = {r["condition"]: r for r in rows}
    table = []
    for policy, members in _by_policy(conditions).items():
        for condition in members:
            row = by_name[condition["name"]]
            table.append({
                "policy": policy,
                "summary": row["summary"],
                "model": model_of(condition),
                "condition": condition["name"],
                "n_generations": row["n_generations"],
                **{key: row.get(key) for key in MODEL_TABLE_KEYS},
                **{f"{key}_ci": row.get(f"{key}_ci") for key in MODEL_TABLE_KEYS},
            })
    return {
        "models": [
            {
                "model": model,
                "fingerprints": sorted({
                    str(c.get("model_fingerprint")) for c in conditions
                    if model_of(c) == model and c.get("model_fingerprint")
                }),
                "conditions": [c["name"] for c in conditions if model_of(c) == model],
            }
            for model in models
        ],
        "table": table,
        "sparsity": sparsity_by_model(conditions, generations),
    }


def sparsity_by_model(conditions: Sequence[dict], generations: pd.DataFrame) -> list[dict]:
    """Does a model keep more neurons than another at the same policy? For each policy run
    on several models, each model against the study's first model that ran it: the mean
    paired difference in achieved sparsity (other − reference; negative: the other keeps
    more neurons) over the items (and samples) both answered, with its Student-t 95 %
    interval and the paired t test (`analysis.paired.paired_change`), Holm-adjusted over
    all these comparisons. Dense is left out: it keeps every neuron on every model.

    Out per comparison: ``policy`` (its JSON), ``summary``, ``model``, ``reference_model``,
    ``condition``, ``reference``, ``estimate``, ``ci``, ``p``, ``p_holm``, ``n_pairs``,
    ``note``, and ``answer`` ("more", "fewer" or "no difference detected" neurons kept than
    the reference, at the 5 % level after Holm)."""
    values = _sparsity_values(generations)
    out = []
    for policy, members in _by_policy(conditions).items():
        if json.loads(policy).get("kind") == "dense" or len(members) < 2:
            continue
        reference, *others = members
        for other in others:
            change = paired_change(values, other["name"], reference["name"], "sparsity",
                                   ratio=False)
            out.append({
                "policy": policy,
                "summary": reference.get("summary") or policy,
                "model": model_of(other),
                "reference_model": model_of(reference),
                "condition": other["name"],
                "reference": reference["name"],
                **_change_fields(change),
            })
    tested = [row for row in out if row["p"] is not None]
    for row, adjusted in zip(tested, holm([row["p"] for row in tested]), strict=True):
        row["p_holm"] = adjusted
    for row in out:
        row["answer"] = _answer(row)
    return out


def _by_policy(conditions: Sequence[dict]) -> dict[str, list[dict]]:
    """The conditions grouped by their exact policy (its JSON, keys sorted), in study order;
    within a policy one condition per model (the first, should a model run it twice)."""
    groups: dict[str, dict[str, dict]] = {}
    for condition in conditions:
        policy = json.dumps(condition["policy"], sort_keys=True)
        groups.setdefault(policy, {}).setdefault(model_of(condition), condition)
    return {policy: list(members.values()) for policy, members in groups.items()}


def _sparsity_values(generations: pd.DataFrame) -> pd.DataFrame:
    """``condition, item, sparsity`` per finished output; an item's samples pair up by
    sample (item and sample index as the unit), as each seed decodes both models alike."""
    if generations.empty or "active_fraction" not in generations:
        return pd.DataFrame(columns=["condition", "item", "sparsity"])
    sample = generations["sample_index"] if "sample_index" in generations else 0
    return pd.DataFrame({
        "condition": generations["condition"],
        "item": generations["item"].astype(str) + "#" + pd.Series(sample, index=generations.index)
        .astype(str),
        "sparsity": 1 - pd.to_numeric(generations["active_fraction"], errors="coerce"),
    })


def _change_fields(change: dict | None) -> dict:
    if change is None:
        return {"estimate": None, "ci": None, "p": None, "p_holm": None, "n_pairs": 0,
                "note": "no achieved sparsity under both"}
    return {"estimate": change["estimate"], "ci": change["ci"], "p": change["p"],
            "p_holm": None, "n_pairs": change["n_pairs"], "note": change["note"]}


def _answer(row: dict) -> str:
    if row["p_holm"] is None or row["p_holm"] >= ALPHA:
        return "no difference detected"
    return "fewer" if row["estimate"] > 0 else "more"
