"""The relation of the win rate against dense to the KL from dense: planted relations are
found, the point estimates are the plain formulas, and too little data gives a note."""

import numpy as np
import pandas as pd
import pytest

from analysis.divergence import divergence_preference

COLUMNS = ["item", "rater", "condition_a", "condition_b", "winner"]


def study(rng, *, condition_slope: float, item_slope: float, n_items: int = 30,
          kls=(0.05, 0.1, 0.2, 0.3), raters: int = 3):
    """Sparse conditions s0.. with mean KL `kls`; an item's output diverges log-normally
    around its condition's; P(condition beats dense) = ½ − condition_slope · KL_c −
    item_slope · (KL_item − KL_c). Dense is shown as a or b at random."""
    judged, outputs = [], []
    for c, kl in enumerate(kls):
        name = f"s{c}"
        for i in range(n_items):
            own = kl * np.exp(rng.normal(0, 0.5))
            outputs += [(f"q{i}", name, own), (f"q{i}", "dense", None)]
            p = 0.5 - condition_slope * kl - item_slope * (own - kl)
            for r in range(raters):
                won = rng.random() < p
                if rng.random() < 0.5:
                    judged.append((f"q{i}", f"r{r}", name, "dense", "a" if won else "b"))
                else:
                    judged.append((f"q{i}", f"r{r}", "dense", name, "b" if won else "a"))
    return (pd.DataFrame(judged, columns=COLUMNS),
            pd.DataFrame(outputs, columns=["item", "condition", "kl_from_dense"]))


def test_a_planted_relation_is_found_at_both_levels():
    j, g = study(np.random.default_rng(0), condition_slope=1.0, item_slope=1.0)
    result = divergence_preference(j, g, "dense", bootstrap=400)
    level = result["condition_level"]
    assert [p["condition"] for p in level["points"]] == ["s0", "s1", "s2", "s3"]
    assert level["slope_ci"][1] < 0 and level["correlation_ci"][1] < 0
    assert level["slope_ci"][0] < -1.0 < level["slope_ci"][1]
    items = result["item_level"]
    assert (items["n_points"], items["n_items"], items["n_conditions"]) == (120, 30, 4)
    assert items["slope_ci"][1] < 0


def test_point_estimates_are_the_plain_formulas():
    j, g = study(np.random.default_rng(1), condition_slope=0.5, item_slope=0.5, n_items=12)
    result = divergence_preference(j, g, "dense", bootstrap=50)
    dense_side = np.where(j["condition_a"] == "dense", "a", "b")
    j = j.assign(condition=np.where(dense_side == "a", j["condition_b"], j["condition_a"]),
                 score=np.where(j["winner"] == dense_side, 0.0, 1.0))
    rate = j.groupby("condition")["score"].mean()
    kl = g[g["condition"] != "dense"].groupby("condition")["kl_from_dense"].mean()
    level = result["condition_level"]
    assert level["correlation"] == pytest.approx(np.corrcoef(kl, rate)[0, 1])
    assert level["slope"] == pytest.approx(np.polyfit(kl, rate, 1)[0])
    for point in level["points"]:
        assert point["win_rate_vs_dense"] == pytest.approx(rate[point["condition"]])
    # Within conditions: least squares with a dummy per condition.
    points = (j.groupby(["condition", "item"])["score"].mean().rename("score").reset_index()
              .merge(g, on=["condition", "item"]))
    dummies = pd.get_dummies(points["condition"]).to_numpy(float)
    design = np.column_stack([points["kl_from_dense"], dummies])
    coefficients = np.linalg.lstsq(design, points["score"], rcond=None)[0]
    assert result["item_level"]["slope"] == pytest.approx(coefficients[0])


def test_too_little_data_says_why():
    rng = np.random.default_rng(2)
    j, g = study(rng, condition_slope=0.0, item_slope=0.0, kls=(0.1, 0.2), n_items=6)
    result = divergence_preference(j, g, "dense", bootstrap=50)
    assert result["condition_level"]["correlation"] is None
    assert "2 sparse condition(s)" in result["condition_level"]["note"]
    assert len(result["condition_level"]["points"]) == 2
    assert result["item_level"]["slope"] is not None  # 12 points in 2 conditions
    few = divergence_preference(j[j["item"].isin(["q0", "q1"])], g, "dense", bootstrap=50)
    assert "needs 3 more points than conditions" in few["item_level"]["note"]
    unmeasured = divergence_preference(j, g.drop(columns="kl_from_dense"), "dense")
    assert "no sparse condition has both" in unmeasured["condition_level"]["note"]
    assert "no dense condition" in divergence_preference(j, g, None)["item_level"]["note"]


def test_with_nothing_planted_the_intervals_keep_their_level():
    rng = np.random.default_rng(3)
    excluded = {"condition": 0, "item": 0}
    studies = 100
    for seed in range(studies):
        j, g = study(rng, condition_slope=0.0, item_slope=0.0, n_items=20)
        result = divergence_preference(j, g, "dense", bootstrap=200, seed=seed)
        for level, key in (("condition", "condition_level"), ("item", "item_level")):
            low, high = result[key]["slope_ci"]
            excluded[level] += not low <= 0 <= high
    # 95 % intervals: about 5 in 100 exclude 0 (percentile bootstrap, a little liberal).
    assert excluded["condition"] <= 12 and excluded["item"] <= 12, excluded
