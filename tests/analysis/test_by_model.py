"""`analysis.by_model`: the report by model on plain tables."""

import numpy as np
import pandas as pd
import pytest

from analysis.alignment import condition_table
from analysis.by_model import by_model_section, sparsity_by_model
from analysis.report import build_report, report_figures

STATIC = {"kind": "static", "threshold": 0.1}
TWO_MODELS = [
    {"name": "base dense", "policy": {"kind": "dense"}, "model": "base",
     "model_fingerprint": "f-base"},
    {"name": "base static", "policy": STATIC, "model": "base", "model_fingerprint": "f-base"},
    {"name": "dpo dense", "policy": {"kind": "dense"}, "model": "dpo",
     "model_fingerprint": "f-dpo"},
    {"name": "dpo static", "policy": STATIC, "model": "dpo", "model_fingerprint": "f-dpo"},
]


def outputs(conditions, active: dict[str, float], *, n_items: int = 12, noise: float = 0.02,
            seed: int = 0) -> pd.DataFrame:
    """One output per item and condition; an item is easier or harder for every condition
    alike (a shared item effect), the rest noise."""
    rng = np.random.default_rng(seed)
    item_effect = rng.normal(0, 0.05, n_items)
    rows = []
    for item in range(n_items):
        for c in conditions:
            dense = c["policy"]["kind"] == "dense"
            fraction = 1.0 if dense else active[c["name"]] + item_effect[item] + rng.normal(
                0, noise)
            rows.append({
                "generation": f"{item}/{c['name']}", "item": f"q{item}", "sample_index": 0,
                "condition": c["name"], "active_fraction": fraction,
                "tokens_per_s": 10 / fraction, "latency_s": 2 * fraction,
                "peak_rss_bytes": 2**30, "passed": (item % 3 == 0) == dense,
            })
    return pd.DataFrame(rows)


def test_a_study_of_one_model_has_no_by_model_section():
    conditions = [{k: v for k, v in c.items() if k not in ("model", "model_fingerprint")}
                  for c in TWO_MODELS[:2]]
    generations = outputs(conditions, {"base static": 0.6})
    rows = condition_table(conditions, generations, None)
    assert by_model_section(conditions, rows, generations) is None
    assert [r["series"] for r in rows] == ["dense", "static"], "series as before"
    assert {r["model"] for r in rows} == {"default"}
    assert build_report(pd.DataFrame(), generations, conditions, bootstrap=0)["by_model"] is None


def test_a_sparser_model_at_the_same_threshold_is_found_with_its_interval():
    generations = outputs(TWO_MODELS, {"base static": 0.60, "dpo static": 0.55})
    rows = condition_table(TWO_MODELS, generations, None)
    section = by_model_section(TWO_MODELS, rows, generations)
    assert [(m["model"], m["fingerprints"], m["conditions"]) for m in section["models"]] == [
        ("base", ["f-base"], ["base dense", "base static"]),
        ("dpo", ["f-dpo"], ["dpo dense", "dpo static"]),
    ]
    assert [(r["model"], r["condition"]) for r in section["table"]] == [
        ("base", "base dense"), ("dpo", "dpo dense"),
        ("base", "base static"), ("dpo", "dpo static"),
    ]
    (test,) = section["sparsity"]  # dense keeps every neuron on both: not tested
    assert (test["model"], test["reference_model"], test["n_pairs"]) == ("dpo", "base", 12)
    truth = (1 - generations[generations.condition == "dpo static"].active_fraction.mean()) - (
        1 - generations[generations.condition == "base static"].active_fraction.mean())
    assert test["estimate"] == pytest.approx(truth)
    assert 0 < test["ci"][0] < test["estimate"] < test["ci"][1]
    assert test["p_holm"] < 0.05 and test["answer"] == "fewer"


def test_the_interval_of_the_sparsity_difference_covers_the_truth_95_percent_of_the_time():
    covered = 0
    for seed in range(400):
        generations = outputs(TWO_MODELS, {"base static": 0.60, "dpo static": 0.55},
                              n_items=6, seed=seed)
        (test,) = sparsity_by_model(TWO_MODELS, generations)
        covered += test["ci"][0] <= 0.05 <= test["ci"][1]
    assert 0.92 <= covered / 400 <= 0.98


def test_each_model_is_read_against_its_own_dense_and_drawn_as_its_own_curve():
    generations = outputs(TWO_MODELS, {"base static": 0.60, "dpo static": 0.55})
    # The dpo model is faster: its dense and static both run at twice base's speed.
    dpo = generations.condition.str.startswith("dpo")
    generations.loc[dpo, "tokens_per_s"] *= 2
    rows = {r["condition"]: r for r in condition_table(TWO_MODELS, generations, None)}
    assert rows["dpo static"]["dense_condition"] == "dpo dense"
    assert rows["base static"]["dense_condition"] == "base dense"
    assert rows["dpo static"]["series"] == "static · dpo"
    # Against its own dense the ratio is 1 / active fraction (against base's it would be 2x).
    fractions = generations[generations.condition == "dpo static"].active_fraction
    assert rows["dpo static"]["tokens_per_s_vs_dense"]["estimate"] == pytest.approx(
        np.exp(np.mean(np.log(1 / fractions))))
    report = build_report(pd.DataFrame(), generations, TWO_MODELS, bootstrap=0)
    assert {f["series"] for f in report["findings"]["families"]} == {"static · base",
                                                                     "static · dpo"}
    assert report["by_model"]["sparsity"][0]["answer"] == "fewer"
    assert "alignment" in report_figures(report)


def test_equal_models_give_no_difference_and_holm_counts_every_comparison():
    conditions = [*TWO_MODELS, {"name": "lam static", "policy": STATIC, "model": "base→dpo@0.5"}]
    same = {"base static": 0.6, "dpo static": 0.6, "lam static": 0.6}
    tests = sparsity_by_model(conditions, outputs(conditions, same, seed=3))
    assert [(t["model"], t["reference_model"]) for t in tests] == [
        ("dpo", "base"), ("base→dpo@0.5", "base")]
    assert all(t["answer"] == "no difference detected" for t in tests)
    assert all(t["p_holm"] >= t["p"] for t in tests)


def test_a_policy_one_model_has_not_run_yet_is_not_compared():
    generations = outputs(TWO_MODELS, {"base static": 0.6, "dpo static": 0.5})
    missing = generations[generations.condition != "dpo static"]
    (test,) = sparsity_by_model(TWO_MODELS, missing)
    assert test["estimate"] is None and test["answer"] == "no difference detected"
    assert test["note"] == "no achieved sparsity under both"
