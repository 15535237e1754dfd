import numpy as np
import pandas as pd
import pytest

from analysis.agreement import (
    agreement_summary,
    alpha_bootstrap,
    alpha_from_coincidences,
    choice_agreement,
    choice_code,
    choice_codes,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    pairwise_cohen_kappas,
    reliability_matrix,
    unit_coincidences,
)
from analysis.contracts import InputError, validate_ratings

NAN = np.nan

# Krippendorff (2011) "Computing Krippendorff's Alpha-Reliability", the 4 observers ×
# 12 units example with missing values. Published: nominal .743, ordinal .815,
# interval .849, ratio .797.
KRIPPENDORFF_2011 = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
        [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
    ]
)

# Wikipedia "Fleiss' kappa" worked example: 10 subjects, 14 raters, 5 categories,
# kappa = 0.210.
FLEISS_WIKIPEDIA = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)


def long_ratings(matrix: np.ndarray) -> pd.DataFrame:
    raters = "ABCDEFGHIJKLMN"
    return pd.DataFrame(
        [
            {"unit": f"u{j + 1:02d}", "rater": raters[i], "value": matrix[i, j]}
            for i in range(matrix.shape[0])
            for j in range(matrix.shape[1])
            if not np.isnan(matrix[i, j])
        ]
    )


def fleiss_long(counts: np.ndarray) -> pd.DataFrame:
    """Each unit's 14 ratings handed to raters r00..r13 in category order."""
    rows = []
    for unit, row in enumerate(counts):
        values = np.repeat(np.arange(1, counts.shape[1] + 1), row)
        rows += [
            {"unit": f"s{unit}", "rater": f"r{k:02d}", "value": int(v)}
            for k, v in enumerate(values)
        ]
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("level", "published"),
    [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)],
)
def test_alpha_reproduces_krippendorff_2011(level, published):
    summary = agreement_summary(long_ratings(KRIPPENDORFF_2011), level, bootstrap=0)
    assert round(summary["alpha"], 3) == published
    assert summary["alpha_note"] is None


def test_counts_and_pairwise_agreement_on_krippendorff_2011():
    summary = agreement_summary(long_ratings(KRIPPENDORFF_2011), "nominal", bootstrap=0)
    assert summary["n_units"] == 12
    assert summary["n_raters"] == 4
    assert summary["n_ratings"] == 41
    assert summary["n_pairable_units"] == 11  # unit 12 has one rating
    # Counted by hand: 43 of the 55 pairs of ratings on a common unit agree.
    assert summary["n_rating_pairs"] == 55
    assert summary["percent_agreement"] == pytest.approx(43 / 55)
    assert summary["cohen_kappa_pairs"] == 6
    assert summary["fleiss_kappa"] is None
    assert "1, 2, 3, 4 raters" in summary["fleiss_kappa_note"]


def test_alpha_bootstrap_ci_is_seeded_and_covers_the_estimate():
    data = long_ratings(KRIPPENDORFF_2011)
    first = agreement_summary(data, "interval", bootstrap=300, seed=7)
    again = agreement_summary(data, "interval", bootstrap=300, seed=7)
    other = agreement_summary(data, "interval", bootstrap=300, seed=8)
    assert first["alpha_ci"] == again["alpha_ci"]
    assert first["alpha_ci"] != other["alpha_ci"]
    low, high = first["alpha_ci"]
    assert low < first["alpha"] <= high <= 1.0
    assert first["bootstrap_valid"] == 300


def test_alpha_of_identical_values_is_a_message_not_a_crash():
    data = pd.DataFrame({"unit": ["u1", "u1", "u2", "u2"], "rater": list("abab"), "value": 3})
    summary = agreement_summary(data, "nominal", bootstrap=50)
    assert summary["alpha"] is None
    assert summary["alpha_ci"] is None
    assert summary["alpha_note"] == (
        "alpha is undefined: every rating has the same value, so there is no variation"
    )
    assert summary["fleiss_kappa"] is None
    assert "one category" in summary["fleiss_kappa_note"]
    assert summary["percent_agreement"] == 1.0


def test_alpha_without_a_pairable_unit_is_a_message_not_a_crash():
    data = pd.DataFrame({"unit": ["u1", "u2"], "rater": ["a", "b"], "value": [1, 2]})
    summary = agreement_summary(data, "interval")
    assert summary["alpha"] is None
    # In the study's words: the package's "… assigned by at least two coders." reached the
    # study page verbatim.
    assert summary["alpha_note"] == "alpha is undefined: no unit has been rated by two raters yet"
    assert summary["percent_agreement"] is None
    assert summary["cohen_kappa_mean"] is None


def test_fleiss_kappa_reproduces_wikipedia_example():
    assert round(fleiss_kappa(FLEISS_WIKIPEDIA), 3) == 0.210
    summary = agreement_summary(fleiss_long(FLEISS_WIKIPEDIA), "nominal", bootstrap=0)
    assert round(summary["fleiss_kappa"], 3) == 0.210
    assert summary["fleiss_kappa_note"] is None


def test_cohen_kappa_reproduces_textbook_2x2():
    # Wikipedia "Cohen's kappa": 50 proposals, yes/yes 20, yes/no 5, no/yes 10, no/no 15;
    # p_o = 0.7, p_e = 0.5, kappa = 0.4.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_limits():
    assert cohen_kappa([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert cohen_kappa([1, 1], [1, 1]) is None  # chance agreement 1: kappa is 0/0
    with pytest.raises(ValueError):
        cohen_kappa([1, 2], [1])


def test_mean_pairwise_cohen_kappa_on_two_raters_equals_cohen_kappa():
    a = [1] * 25 + [0] * 25
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    data = pd.DataFrame(
        {"unit": [*range(50), *range(50)], "rater": ["A"] * 50 + ["B"] * 50, "value": a + b}
    )
    summary = agreement_summary(data, "nominal", bootstrap=0)
    assert summary["cohen_kappa_mean"] == pytest.approx(0.4)
    assert summary["fleiss_kappa"] is not None  # two raters on every unit


def test_nominal_accepts_labels_other_levels_need_numbers():
    data = pd.DataFrame({"unit": [1, 1, 2, 2], "rater": list("abab"), "value": list("xxyz")})
    assert sorted(validate_ratings(data, "nominal")["value"]) == [0.0, 0.0, 1.0, 2.0]
    with pytest.raises(InputError) as error:
        validate_ratings(data, "ordinal")
    assert (error.value.column, error.value.row) == ("value", 0)


def test_blank_values_are_missing_and_duplicates_are_errors():
    data = pd.DataFrame({"unit": ["u", "u", "v"], "rater": ["a", "b", "a"], "value": [1, "", 2]})
    assert len(validate_ratings(data, "interval")) == 2
    twice = pd.DataFrame({"unit": ["u", "u"], "rater": ["a", "a"], "value": [1, 2]})
    with pytest.raises(InputError, match="rated unit 'u' twice") as error:
        validate_ratings(twice, "interval")
    assert error.value.row == 1


def test_reliability_matrix_is_raters_by_units_with_nan():
    matrix, raters, units = reliability_matrix(
        validate_ratings(long_ratings(KRIPPENDORFF_2011), "interval")
    )
    assert raters == ["A", "B", "C", "D"]
    assert units[0] == "u01" and len(units) == 12
    np.testing.assert_array_equal(matrix, KRIPPENDORFF_2011)


def test_choice_code_uses_condition_order_not_screen_side():
    assert choice_code("t0", "t50", "a") == 0
    assert choice_code("t50", "t0", "b") == 0  # same verdict, stored the other way round
    assert choice_code("t50", "t0", "a") == 2
    assert choice_code("t50", "t0", "tie") == 1
    assert choice_code("t50", "t0", "a", order=["t50", "t0"]) == 0
    with pytest.raises(ValueError):
        choice_code("t0", "t50", "left")
    with pytest.raises(ValueError):
        choice_code("t0", "t99", "a", order=["t0", "t50"])


def test_choice_codes_make_raters_agree_whatever_the_storage_order():
    judgments = pd.DataFrame(
        {
            "item": ["q1", "q1", "q2", "q2"],
            "rater": ["ann", "bob", "ann", "bob"],
            "condition_a": ["t0", "t50", "t0", "t50"],
            "condition_b": ["t50", "t0", "t50", "t0"],
            "winner": ["a", "b", "tie", "tie"],
        }
    )
    codes = choice_codes(judgments)
    assert list(codes["unit"]) == ["q1: t0 vs t50"] * 2 + ["q2: t0 vs t50"] * 2
    assert list(codes["value"]) == [0, 0, 1, 1]
    assert agreement_summary(codes, "ordinal", bootstrap=0)["alpha"] == pytest.approx(1.0)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_vectorized_alpha_equals_the_krippendorff_package(level):
    rng = np.random.default_rng(1)
    matrix = rng.integers(1, 6, size=(7, 40)).astype(float)
    matrix[rng.random(matrix.shape) < 0.4] = np.nan
    values, per_unit = unit_coincidences(matrix)
    assert alpha_from_coincidences(per_unit.sum(axis=0), values, level) == pytest.approx(
        krippendorff_alpha(matrix, level), abs=1e-12
    )
    assert alpha_from_coincidences(
        unit_coincidences(KRIPPENDORFF_2011)[1].sum(axis=0),
        unit_coincidences(KRIPPENDORFF_2011)[0],
        level,
    ) == pytest.approx(krippendorff_alpha(KRIPPENDORFF_2011, level), abs=1e-12)


def test_alpha_bootstrap_replicates_are_alpha_of_the_resampled_units():
    rng = np.random.default_rng(2)
    matrix = rng.integers(0, 3, size=(4, 25)).astype(float)
    replicates = alpha_bootstrap(matrix, "ordinal", bootstrap=5, seed=9)
    draw = np.random.default_rng(9)
    for replicate in replicates:
        sample = matrix[:, draw.integers(0, 25, size=25)]
        assert replicate == pytest.approx(krippendorff_alpha(sample, "ordinal"), abs=1e-12)


def test_vectorized_pairwise_kappas_equal_cohen_kappa_per_pair():
    rng = np.random.default_rng(3)
    matrix = rng.integers(0, 3, size=(5, 30)).astype(float)
    matrix[rng.random(matrix.shape) < 0.3] = np.nan
    matrix[4] = np.where(np.isnan(matrix[4]), np.nan, 1.0)  # one rater uses one category
    kappas = pairwise_cohen_kappas(matrix)
    for i in range(5):
        for j in range(i + 1, 5):
            both = ~np.isnan(matrix[i]) & ~np.isnan(matrix[j])
            expected = cohen_kappa(matrix[i, both], matrix[j, both])
            if expected is None:
                assert np.isnan(kappas[i, j])
            else:
                assert kappas[i, j] == pytest.approx(expected, abs=1e-12)


def test_choice_agreement_with_and_without_ties_and_against_consensus():
    # unit u1: a, a, tie; unit u2: b, b, b; unit u3: a (alone)
    codes = pd.DataFrame(
        {
            "unit": ["u1", "u1", "u1", "u2", "u2", "u2", "u3"],
            "rater": ["r1", "r2", "r3", "r1", "r2", "r3", "r1"],
            "value": [0, 0, 1, 2, 2, 2, 0],
        }
    )
    result = choice_agreement(codes)
    assert result["n_pairs_with_ties"] == 6
    assert result["percent_agreement_with_ties"] == pytest.approx(4 / 6)
    assert result["n_pairs_without_ties"] == 4
    assert result["percent_agreement_without_ties"] == 1.0
    consensus = {r["rater"]: r for r in result["rater_vs_consensus"]["per_rater"]}
    # r3 on u1 faces others (a, a): disagrees; on u2 agrees. r1 on u1 faces (a, tie): no
    # strict majority, skipped; u3 has no other rater.
    assert consensus["r3"]["agreement"] == 0.5 and consensus["r3"]["n_units"] == 2
    assert consensus["r1"]["n_units"] == 1 and consensus["r1"]["agreement"] == 1.0
