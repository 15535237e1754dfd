"""Paired comparisons with dense (analysis/paired.py): McNemar as statsmodels computes it, a
planted Pass@1 drop found where the interval-overlap rule misses it, the false-positive
rate held with nothing planted, and speed paired within machines, never across."""

import json

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import mcnemar

from analysis.__main__ import main
from analysis.alignment import pass_at_1_interval, pass_at_1_table
from analysis.paired import (
    clustered_mcnemar,
    detectable_difference,
    mcnemar_exact,
    newcombe_paired_interval,
    paired_change,
    pass_at_1_difference,
)


@pytest.mark.parametrize("b, c", [(0, 0), (0, 1), (1, 0), (3, 3), (2, 9), (12, 2), (0, 25),
                                  (40, 31)])
def test_mcnemar_exact_is_statsmodels(b, c):
    expected = mcnemar([[5, b], [c, 7]], exact=True).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, abs=1e-12)


def test_clustered_mcnemar_with_one_sample_a_problem_is_the_plain_chi_square():
    b = np.array([1] * 9 + [0] * 3 + [0] * 20)
    c = np.array([0] * 9 + [1] * 3 + [0] * 20)
    plain = mcnemar([[10, 9], [3, 10]], exact=False, correction=False).pvalue
    assert clustered_mcnemar(b, c) == pytest.approx(plain)
    assert clustered_mcnemar(np.zeros(4), np.zeros(4)) == 1.0


def _study(rng, problems, *, samples=1, drop=0.0):
    """Dense and sparse outcomes on the same problems: each problem has its own difficulty
    (shared by both conditions and all samples), and sparse turns a dense pass into a fail
    with probability `drop` / P(dense passes), so its Pass@1 is `drop` lower."""
    easy = rng.beta(2, 1.5, size=problems)  # mean ≈ 0.57
    dense = rng.random((problems, samples)) < easy[:, None]
    flip = rng.random((problems, samples)) < drop / easy.mean()
    sparse = dense & ~flip
    if drop == 0:  # nothing planted: a tenth of the samples drawn again, both ways alike
        again = rng.random((problems, samples)) < 0.1
        sparse = np.where(again, rng.random((problems, samples)) < easy[:, None], dense)
    items = np.repeat(np.arange(problems), samples)
    sample = np.tile(np.arange(samples), problems)

    def table(passed):
        return pd.DataFrame({"item": items, "sample": sample, "passed": passed.ravel()})

    return table(dense), table(sparse)


def _overlap_rule_finds(dense, sparse) -> bool:
    """The old rule: a difference only where the two Pass@1 intervals do not overlap."""
    a = pass_at_1_interval(dense["item"], dense["passed"])
    b = pass_at_1_interval(sparse["item"], sparse["passed"])
    return a[1] < b[0] or b[1] < a[0]


def test_a_planted_ten_point_drop_on_100_problems_is_found_where_intervals_overlap():
    rng = np.random.default_rng(1)
    found, overlap_found, runs = 0, 0, 40
    for _ in range(runs):
        dense, sparse = _study(rng, 100, drop=0.10)
        result = pass_at_1_difference(dense, sparse)
        assert result["right_to_wrong"] >= result["wrong_to_right"] == 0
        found += result["p"] < 0.05 and result["difference"] < 0
        overlap_found += _overlap_rule_finds(dense, sparse)
    assert found / runs >= 0.9, found
    assert overlap_found / runs <= 0.25, overlap_found


def _flips(dense, sparse):
    """Per problem, the samples dense passed and sparse failed, and the reverse."""
    d, s = dense["passed"].to_numpy(), sparse["passed"].to_numpy()
    items = dense["item"].to_numpy()
    return (np.bincount(items, d & ~s), np.bincount(items, ~d & s))


def test_with_nothing_planted_the_paired_test_rejects_at_most_about_five_percent():
    rng = np.random.default_rng(2)
    runs = 1000
    p = [mcnemar_exact(*(int(x.sum()) for x in _flips(*_study(rng, 100)))) for _ in range(runs)]
    rate = np.mean(np.array(p) < 0.05)
    assert rate <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / runs), rate


def test_several_samples_a_problem_are_tested_with_problems_as_clusters():
    rng = np.random.default_rng(3)
    runs = 1000
    p = [clustered_mcnemar(*_flips(*_study(rng, 100, samples=5))) for _ in range(runs)]
    rate = np.mean(np.array(p) < 0.05)
    assert rate <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / runs), rate
    result = pass_at_1_difference(*_study(rng, 100, samples=5))
    assert result["test"].startswith("clustered McNemar") and result["n_pairs"] == 500
    found = sum(
        (r := pass_at_1_difference(*_study(rng, 100, samples=5, drop=0.10)))["p"] < 0.05
        and r["difference"] < 0
        for _ in range(20)
    )
    assert found >= 18, found


def test_a_difference_without_width_is_no_interval_not_certainty():
    # Several samples a problem: the bootstrap over problems, which has no width here.
    dense = pd.DataFrame({"item": ["t1", "t1", "t2", "t2"], "sample": [0, 1, 0, 1],
                          "passed": True})
    result = pass_at_1_difference(dense, dense.copy())
    assert result["difference"] == 0 and result["difference_ci"] is None
    assert "no width" in result["difference_ci_note"]
    assert result["p"] == 1.0 and result["right_to_wrong"] == result["wrong_to_right"] == 0
    assert 0 < result["detectable"] <= 1
    # One sample a problem: Newcombe's interval keeps its width with no discordant problem.
    one = pass_at_1_difference(dense[dense["sample"] == 0], dense[dense["sample"] == 0])
    low, high = one["difference_ci"]
    assert low < 0 < high and one["difference_ci_note"] is None


def test_newcombe_paired_interval_is_biostatuzh_confintpairedproportion():
    # Newcombe (1998) method 10 with its corrected correlation, as biostatUZH computes it;
    # the same table mirrored gives the mirrored interval.
    low, high = newcombe_paired_interval(12, 2, 9, 4)
    assert 0 < low < 7 / 27 < high < 1
    mirrored = newcombe_paired_interval(12, 9, 2, 4)
    assert mirrored == pytest.approx([-high, -low])
    wilson_only = newcombe_paired_interval(0, 3, 0, 7)  # φ = 0 with one margin empty
    assert wilson_only[0] < -0.3 < wilson_only[1]


def test_detectable_difference_shrinks_with_more_problems():
    assert detectable_difference(400, 0.1) < detectable_difference(100, 0.1) < 0.5
    assert detectable_difference(0, 0.1) is None


def test_speed_is_paired_within_machines_and_a_faster_machine_is_no_speed_up():
    # Same speed as dense on each machine, but the sparse condition ran mostly on the fast
    # one: pooled means would call it 40 % faster.
    rows = []
    for item in range(12):
        for condition in ("dense", "sparse"):
            machine = "fast" if condition == "sparse" or item < 2 else "slow"
            speed = (14.0 if machine == "fast" else 10.0) * (1 + 0.01 * ((item * 7) % 5 - 2))
            rows.append({"condition": condition, "item": item, "machine": machine,
                         "tokens_per_s": speed})
    values = pd.DataFrame(rows)
    pooled = values.groupby("condition")["tokens_per_s"].mean()
    assert pooled["sparse"] / pooled["dense"] > 1.2
    result = paired_change(values, "sparse", "dense", "tokens_per_s")
    assert result["n_pairs"] == 2 and result["machines"] == ["fast"]
    assert result["estimate"] == pytest.approx(1.0)
    none_shared = paired_change(values[values["item"] >= 2], "sparse", "dense", "tokens_per_s")
    assert none_shared["estimate"] is None and "not compared" in none_shared["note"]


def test_a_real_speed_up_on_one_machine_is_found_with_its_interval():
    rng = np.random.default_rng(4)
    base = rng.uniform(9, 11, size=20)
    values = pd.DataFrame({
        "condition": ["dense"] * 20 + ["sparse"] * 20,
        "item": list(range(20)) * 2,
        "tokens_per_s": np.concatenate([base, base * 1.15 * rng.uniform(0.97, 1.03, 20)]),
    })
    result = paired_change(values, "sparse", "dense", "tokens_per_s")
    assert result["ci"][0] < 1.15 < result["ci"][1] and result["p"] < 0.001
    memory = paired_change(values, "sparse", "dense", "tokens_per_s", ratio=False)
    assert memory["scale"] == "difference" and memory["estimate"] > 0


def test_pass1_command_reads_a_plain_table(tmp_path, capsys):
    rows = ["item,condition,sample,passed"]
    for i in range(30):
        rows.append(f"t{i},dense,0,{1 if i < 20 else 0}")
    for i in range(30):
        rows.append(f"t{i},sparse,0,{1 if i < 8 else 0}")
        rows.append(f"t{i},other,0,{1 if i < 20 else 0}")
    path = tmp_path / "results.csv"
    path.write_text("\n".join(rows) + "\n")
    assert main(["pass1", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["reference"] == "dense", "the first condition in file order"
    dense, sparse, other = summary["conditions"]
    assert dense["versus_reference"] is None and dense["pass_at_1"] == pytest.approx(20 / 30)
    versus = sparse["versus_reference"]
    assert (versus["right_to_wrong"], versus["wrong_to_right"]) == (12, 0)
    assert versus["p"] == pytest.approx(mcnemar([[8, 12], [0, 10]], exact=True).pvalue)
    assert versus["difference"] == pytest.approx(-0.4)
    assert versus["difference_ci"][0] < -0.4 < versus["difference_ci"][1] < 0
    assert other["versus_reference"]["p"] == 1.0
    assert main(["pass1", str(path)]) == 0
    assert "right->wrong" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("item,condition,sample,passed\nt1,dense,0,1\nt1,dense,0,0\n")
    assert main(["pass1", str(bad)]) == 2
    assert "line 3, column 'sample'" in capsys.readouterr().err
    assert pass_at_1_table(pd.read_csv(path, dtype=str), order=["other", "dense"])[
        "reference"] == "other"


def test_simulate_command_prints_a_coverage_per_interval(capsys):
    assert main(["simulate", "--reps", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    names = {r["interval"] for r in result["intervals"]}
    assert "Pass@1 difference, paired (Newcombe)" in names and result["reps"] == 2
    assert all(0 <= r["coverage"] <= 1 for r in result["intervals"])
    assert main(["simulate", "--reps", "0"]) == 2
