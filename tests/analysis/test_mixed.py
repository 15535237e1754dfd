import numpy as np
import pandas as pd

from analysis.mixed import sparsity_preference_model, sparsity_table


def planted(slope: float, seed: int = 0, n: int = 1500, rater_sd: float = 0.5):
    """Raters prefer the sparser output with log-odds 0.2 + slope · gap, plus rater and
    item random intercepts (SD `rater_sd` and 0.5)."""
    rng = np.random.default_rng(seed)
    raters, items = rng.normal(0, rater_sd, 30), rng.normal(0, 0.5, 60)
    sparsity = {f"g{k}": s for k, s in enumerate(np.linspace(0, 0.8, 9))}
    generations = pd.DataFrame(
        {"generation": list(sparsity), "active_fraction": [1 - s for s in sparsity.values()]}
    )
    rows = []
    for _ in range(n):
        r, i = rng.integers(30), rng.integers(60)
        a, b = rng.choice(list(sparsity), size=2, replace=False)
        gap = abs(sparsity[a] - sparsity[b])
        logit = 0.2 + slope * gap + raters[r] + items[i]
        sparser_won = rng.random() < 1 / (1 + np.exp(-logit))
        a_sparser = sparsity[a] > sparsity[b]
        rows.append((f"q{i}", f"r{r}", a, b, "a" if sparser_won == a_sparser else "b"))
    judgments = pd.DataFrame(
        rows, columns=["item", "rater", "generation_a", "generation_b", "winner"]
    )
    return judgments, generations


def test_mixed_model_recovers_a_planted_slope():
    judgments, generations = planted(slope=-3.0)
    result = sparsity_preference_model(judgments, generations)
    assert result["note"] is None and result["n"] == 1500
    slope = next(f for f in result["fixed"] if f["term"] == "sparsity_diff")
    assert slope["ci"][0] < -3.0 < slope["ci"][1]
    assert slope["ci"][1] < 0, "a clear dislike of sparsity must be detected"
    assert slope["odds_ratio_per_0_1"] < 1
    assert {r["group"] for r in result["random"]} == {"rater", "item"}
    assert all(0.1 < r["sd"] < 1.5 for r in result["random"])
    again = sparsity_preference_model(judgments, generations)
    assert again == result, "the fit must be reproducible"


def test_sparsity_table_orients_by_the_sparser_output_and_drops_ties():
    generations = pd.DataFrame({"generation": [1, 2, 3], "active_fraction": [1.0, 0.6, 0.6]})
    judgments = pd.DataFrame(
        {
            "item": ["q"] * 4,
            "rater": ["r"] * 4,
            "generation_a": [1, 1, 2, 1],
            "generation_b": [2, 2, 3, 2],
            "winner": ["a", "b", "a", "tie"],
        }
    )
    table = sparsity_table(judgments, generations)
    assert list(table["sparser_won"]) == [0.0, 1.0]
    assert np.allclose(table["sparsity_diff"], 0.4)


def test_constant_gap_fits_the_intercept_only_and_says_so():
    judgments, generations = planted(slope=0.0, n=200)
    generations["active_fraction"] = [1.0, 0.5] + [0.5] * 7
    judgments = judgments[(judgments["generation_a"] == "g0") | (judgments["generation_b"] == "g0")]
    result = sparsity_preference_model(judgments, generations)
    assert "only the intercept" in result["note"]
    assert [f["term"] for f in result["fixed"]] == ["Intercept"]


def test_large_data_is_fitted_on_whole_items_and_says_so(monkeypatch):
    from analysis import mixed

    judgments, generations = planted(slope=-3.0, n=600)
    monkeypatch.setattr(mixed, "MAX_JUDGMENTS", 300)
    result = sparsity_preference_model(judgments, generations, seed=1)
    assert result["n"] <= 300 and "randomly drawn items (seed 1)" in result["note"]
    table = sparsity_table(judgments, generations)
    kept = mixed.item_subsample(table, 300, seed=1)
    per_item = table.groupby("item").size()
    kept_per_item = kept.groupby("item").size()
    assert kept_per_item.equals(per_item[kept_per_item.index]), "items must be kept whole"


def test_rater_directions_detect_raters_who_disagree():
    from analysis.pluralism import rater_directions

    judgments, generations = planted(slope=0.0, n=600, rater_sd=0.0)
    agree = rater_directions(judgments, generations)  # raters share one direction
    assert agree["test"]["n_raters"] == 30 and agree["test"]["p_value"] > 0.01
    judgments, generations = planted(slope=-3.0, n=600)
    # odd raters flip every verdict: they like sparsity, the others dislike it
    odd = judgments["rater"].str[1:].astype(int) % 2 == 1
    judgments.loc[odd, "winner"] = judgments.loc[odd, "winner"].map({"a": "b", "b": "a"})
    disagree = rater_directions(judgments, generations)
    assert disagree["test"]["p_value"] < 0.001
    shares = {r["rater"]: r["share"] for r in disagree["per_rater"]}
    assert np.mean([v for k, v in shares.items() if int(k[1:]) % 2]) > 0.5
    assert np.mean([v for k, v in shares.items() if not int(k[1:]) % 2]) < 0.5


def test_rater_directions_without_enough_judgments_is_a_note():
    from analysis.pluralism import rater_directions

    judgments, generations = planted(slope=0.0, n=8)
    result = rater_directions(judgments, generations)
    assert result["test"] is None and "needs two raters" in result["note"]
