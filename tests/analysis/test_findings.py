"""The report's opening answer (analysis/findings.py): directions only from the paired tests
against dense, Holm over a sweep, the smallest detectable change where none is found, plain
caveats, shared ranks and low alpha explained."""

from analysis.findings import (
    SPEED_CAVEAT,
    agreement_caveat,
    family_findings,
    findings,
    point_test,
    shared_ranks,
)


def point(name, series, sparsity, *, win=None, pass_at_1=0.6, speed=10.0, rss=500.0,
          skips=True, width=0.05, note="can skip only the down_proj rows of inactive neurons",
          p_win=None, p_pass=None, p_speed=None, p_rss=0.5, dense_pass=0.6):
    """A condition_table row whose paired tests against dense have the given p-values (None:
    far from significant)."""
    family = series.split(" ")[0]
    return {
        "condition": name, "family": family, "series": series, "sparsity": sparsity,
        "skips_bytes": skips, "bytes_note": note if skips else "masking-only",
        "win_rate_vs_dense": win, "win_rate_vs_dense_ci": [win - width, win + width]
        if win is not None else None,
        "win_rate_vs_dense_p": 0.8 if p_win is None else p_win,
        "win_rate_vs_dense_detectable": 0.12,
        "pass_at_1": pass_at_1, "pass_at_1_ci": [pass_at_1 - width, pass_at_1 + width],
        "pass_at_1_vs_dense": None if family == "dense" else {
            "n_problems": 100, "right_to_wrong": 12, "wrong_to_right": 2,
            "difference": pass_at_1 - dense_pass, "test": "McNemar exact",
            "p": 0.8 if p_pass is None else p_pass, "detectable": 0.09,
            "difference_ci_note": None,
        },
        "tokens_per_s": speed, "tokens_per_s_ci": [speed - 0.5, speed + 0.5],
        "tokens_per_s_vs_dense": None if family == "dense" else {
            "scale": "ratio", "estimate": speed / 10.0, "p": 0.8 if p_speed is None else p_speed,
            "n_pairs": 8, "machines": ["host-a"], "detectable": 1.08, "note": None,
        },
        "bytes_read_per_token": None, "bytes_read_per_token_ci": None,
        "peak_rss_mib": rss, "peak_rss_mib_ci": [rss - 1, rss + 1],
        "peak_rss_mib_vs_dense": None if family == "dense" else {
            "scale": "difference", "estimate": rss - 500.0, "p": p_rss, "n_pairs": 8,
            "machines": [], "detectable": 2.0, "note": None,
        },
    }


def by_metric(finding):
    return {s["metric"]: s for s in finding["sentences"]}


def test_a_planted_decline_reads_as_lower_and_a_flat_family_as_no_difference():
    rows = [
        point("dense", "dense", 0.0, pass_at_1=0.6),
        point("s25", "static", 0.25, win=0.47, pass_at_1=0.58, speed=12, p_win=0.3,
              p_speed=0.01),
        point("s50", "static", 0.5, win=0.3, pass_at_1=0.4, speed=15, p_win=0.01, p_pass=0.002,
              p_speed=0.001),
        point("s65", "static", 0.65, win=0.15, pass_at_1=0.2, speed=18, p_win=0.001,
              p_pass=0.0001, p_speed=0.0001),
        point("d25", "dynamic", 0.25, win=0.5, pass_at_1=0.6, speed=10.2, skips=False),
        point("d50", "dynamic", 0.5, win=0.49, pass_at_1=0.61, speed=10.1, skips=False),
    ]
    static, dynamic = family_findings(rows)
    assert static["series"] == "static" and static["sparsity_range"] == [0.25, 0.65]
    s = by_metric(static)
    assert s["win_rate_vs_dense"]["direction"] == "down"
    assert "lower from 50 % sparsity on" in s["win_rate_vs_dense"]["text"]
    assert "item × rater cluster t test" in s["win_rate_vs_dense"]["text"]
    assert "Holm over 3 settings" in s["win_rate_vs_dense"]["text"]
    assert s["pass_at_1"]["direction"] == "down" and "0.60 [0.55, 0.65] (dense)" in (
        s["pass_at_1"]["text"])
    assert "McNemar exact" in s["pass_at_1"]["text"]
    assert "dense right → wrong on 12, wrong → right on 2" in s["pass_at_1"]["text"]
    assert s["tokens_per_s"]["direction"] == "up"
    assert "machines: host-a" in s["tokens_per_s"]["text"]
    assert s["peak_rss_mib"]["direction"] == "none"
    assert "no difference was detected" in s["peak_rss_mib"]["text"]
    assert "could detect (80 % power) is about 2.0 MiB" in s["peak_rss_mib"]["text"]
    assert "true by construction" in s["peak_rss_mib"]["text"]
    d = by_metric(dynamic)
    assert d["win_rate_vs_dense"]["direction"] == "none"
    assert "a win rate 0.12 from ½" in d["win_rate_vs_dense"]["text"]
    assert d["tokens_per_s"]["text"].startswith("Masking-only condition")
    assert d["tokens_per_s"]["direction"] == "none"


def test_holm_over_the_sweep_can_take_back_a_lone_p_below_five_percent():
    # One setting at p = 0.03 alone would count; among three settings Holm makes it 0.09.
    rows = [point("dense", "dense", 0.0),
            *(point(f"s{i}", "static", i / 10, win=0.45, p_win=p)
              for i, p in ((2, 0.5), (4, 0.6), (6, 0.03)))]
    [static] = family_findings(rows)
    assert by_metric(static)["win_rate_vs_dense"]["direction"] == "none"
    [alone] = family_findings([rows[0], rows[3]])
    assert by_metric(alone)["win_rate_vs_dense"]["direction"] == "down"


def test_intervals_that_overlap_do_not_stop_a_paired_test_from_finding_a_drop():
    # Pass@1 0.60 [0.50, 0.70] against 0.50 [0.40, 0.60]: the intervals overlap, and the
    # paired test on the same problems finds the drop.
    rows = [point("dense", "dense", 0.0, pass_at_1=0.6, width=0.1),
            point("s50", "static", 0.5, win=0.5, pass_at_1=0.5, width=0.1, p_pass=0.001)]
    [static] = family_findings(rows)
    assert by_metric(static)["pass_at_1"]["direction"] == "down"


def test_a_metric_without_a_paired_test_says_not_tested():
    rows = [point("dense", "dense", 0.0), point("s50", "static", 0.5, win=0.5)]
    rows[1]["tokens_per_s_vs_dense"] = {
        "scale": "ratio", "estimate": None, "p": None, "n_pairs": 0, "machines": [],
        "detectable": None, "note": "no item ran under both on one machine: not compared"}
    [static] = family_findings(rows)
    speed = by_metric(static)["tokens_per_s"]
    assert speed["direction"] == "none" and "not tested (no item ran under both" in speed["text"]
    assert point_test("tokens_per_s", rows[1])["p"] is None


def test_a_skipping_series_says_which_bytes_bound_its_speed_and_the_speed_caveat_stands():
    rows = [
        point("dense", "dense", 0.0, skips=False),
        point("s25", "static", 0.25, win=0.5),
        point("s50", "static", 0.5, win=0.5),
        point("i40", "static @input", 0.4, win=0.5, note="can skip the weight columns"),
        point("s0", "static @gate", 0.0, win=0.5, skips=False),
    ]
    static, at_input, at_gate = family_findings(rows)
    assert by_metric(static)["bytes_skippable"]["text"] == (
        "This policy can skip only the down_proj rows of inactive neurons, which bounds its "
        "speed-up.")
    assert "can skip the weight columns" in by_metric(at_input)["bytes_skippable"]["text"]
    assert "bytes_skippable" not in by_metric(at_gate), "a masking-only series skips nothing"
    assert by_metric(at_gate)["tokens_per_s"]["text"].startswith("Masking-only condition")
    assert not by_metric(static)["tokens_per_s"]["text"].startswith("Masking-only")
    opening = findings(rows, {"overall": {"alpha": 0.8}}, None)
    assert opening["speed_caveat"] == SPEED_CAVEAT
    assert "wall-clock" in SPEED_CAVEAT and "same machine (never across machines)" in SPEED_CAVEAT


def test_a_single_setting_is_called_a_point():
    rows = [point("dense", "dense", 0.0), point("i40", "static @input", 0.4, win=0.5)]
    [finding] = family_findings(rows)
    assert finding["series"] == "static @input"
    assert finding["sentences"][0]["text"] == "One setting only: a point, not a curve."


def test_shared_ranks_are_explained():
    bt = {"conditions": [{"condition": "a", "rank": 1}, {"condition": "b", "rank": 1},
                         {"condition": "c", "rank": 3}]}
    [shared] = shared_ranks(bt)
    assert shared["conditions"] == ["a", "b"] and shared["text"].startswith(
        "Rank 1 is shared by a, b: none of their 95 % intervals")


def test_low_alpha_from_ties_is_explained_and_otherwise_not():
    preference = {"pairs": [{"n": 10, "ties": 9}, {"n": 10, "ties": 8}]}
    agreement = {"overall": {"alpha": 0.0}, "choice": {"percent_agreement_with_ties": 0.83}}
    text = agreement_caveat(agreement, preference)
    assert "Alpha is low (0.00)" in text and "85% ties" in text and "83%" in text
    assert agreement_caveat({"overall": {"alpha": 0.6}}, preference) is None
    assert agreement_caveat(agreement, {"pairs": [{"n": 10, "ties": 2}]}) is None


def test_bytes_read_are_written_in_megabytes():
    # The demo's report read "goes from 5.38e+08 [5.38e+08, 5.38e+08] (dense, 0 %)".
    rows = [point("dense", "dense", 0.0, skips=False), point("s50", "static", 0.5, win=0.5)]
    for row, read in zip(rows, (537_919_488.0, 486_000_000.0), strict=True):
        row["bytes_read_per_token"], row["bytes_read_per_token_ci"] = read, [read - 1e6, read]
    rows[1]["bytes_read_per_token_vs_dense"] = {
        "scale": "ratio", "estimate": 0.9, "p": 0.001, "n_pairs": 8, "machines": [],
        "detectable": 1.01, "note": None}
    [static] = family_findings(rows)
    text = by_metric(static)["bytes_read_per_token"]["text"]
    assert "from 537.9 MB [536.9 MB, 537.9 MB] (dense) to 486.0 MB" in text, text
    assert "e+08" not in text


def test_a_memory_difference_says_it_may_come_from_run_order_not_the_threshold():
    rows = [
        point("dense", "dense", 0.0, rss=1299.0),
        point("s25", "static", 0.25, win=0.5, rss=1540.0, p_rss=0.001),
        point("s50", "static", 0.5, win=0.5, rss=1619.0, p_rss=0.001),
    ]
    (static,) = family_findings(rows)
    memory = by_metric(static)["peak_rss_mib"]
    assert memory["direction"] == "up"
    assert "order one worker ran them in" in memory["text"], memory["text"]


def test_divergence_from_dense_is_described_per_series():
    rows = [point("dense", "dense", 0.0), point("s25", "static", 0.25, win=0.5),
            point("s50", "static", 0.5, win=0.5)]
    for row, kl, agree in zip(rows[1:], (0.01, 0.2), (0.98, 0.81), strict=True):
        row.update(kl_from_dense=kl, kl_from_dense_ci=[kl / 2, kl * 2],
                   top1_agreement_with_dense=agree)
    [static] = family_findings(rows)
    text = by_metric(static)["kl_from_dense"]["text"]
    assert text == ("Divergence from dense on dense's own answers (teacher-forced): KL 0.0100 "
                    "[0.0050, 0.0200] nats, top-1 agreement 0.98 at 25 % to KL 0.2000 "
                    "[0.1000, 0.4000] nats, top-1 agreement 0.81 at 50 %."), text
