"""The report's opening answer (analysis/findings.py): directions only where intervals are
apart, plain caveats, shared ranks and low alpha explained."""

from analysis.findings import (
    SPEED_CAVEAT,
    agreement_caveat,
    compare,
    family_findings,
    findings,
    shared_ranks,
)


def point(name, series, sparsity, *, win=None, pass_at_1=0.6, speed=10.0, rss=500.0,
          skips=True, width=0.05, note="can skip only the down_proj rows of inactive neurons"):
    family = series.split(" ")[0]
    return {
        "condition": name, "family": family, "series": series, "sparsity": sparsity,
        "skips_bytes": skips, "bytes_note": note if skips else "masking-only",
        "win_rate_vs_dense": win, "win_rate_vs_dense_ci": [win - width, win + width]
        if win is not None else None,
        "pass_at_1": pass_at_1, "pass_at_1_ci": [pass_at_1 - width, pass_at_1 + width],
        "tokens_per_s": speed, "tokens_per_s_ci": [speed - 0.5, speed + 0.5],
        "bytes_read_per_token": None, "bytes_read_per_token_ci": None,
        "peak_rss_mib": rss, "peak_rss_mib_ci": [rss - 1, rss + 1],
    }


def by_metric(finding):
    return {s["metric"]: s for s in finding["sentences"]}


def test_compare_needs_intervals_apart():
    assert compare(0.3, [0.2, 0.4], 0.5, None) == "down"
    assert compare(0.45, [0.35, 0.55], 0.5, None) == "none"
    assert compare(12, [11.5, 12.5], 10, [9.5, 10.5]) == "up"
    assert compare(12, None, 10, [9.5, 10.5]) == "none", "no interval: nothing shown"


def test_a_planted_decline_reads_as_lower_and_a_flat_family_as_no_difference():
    rows = [
        point("dense", "dense", 0.0, pass_at_1=0.6),
        point("s25", "static", 0.25, win=0.47, pass_at_1=0.58, speed=12),
        point("s50", "static", 0.5, win=0.3, pass_at_1=0.4, speed=15),
        point("s65", "static", 0.65, win=0.15, pass_at_1=0.2, speed=18),
        point("d25", "dynamic", 0.25, win=0.5, pass_at_1=0.6, speed=10.2, skips=False),
        point("d50", "dynamic", 0.5, win=0.49, pass_at_1=0.61, speed=10.1, skips=False),
    ]
    static, dynamic = family_findings(rows)
    assert static["series"] == "static" and static["sparsity_range"] == [0.25, 0.65]
    s = by_metric(static)
    assert s["win_rate_vs_dense"]["direction"] == "down"
    assert "lower from 50 % sparsity on" in s["win_rate_vs_dense"]["text"]
    assert s["pass_at_1"]["direction"] == "down" and "0.60 [0.55, 0.65] (dense, 0 %)" in (
        s["pass_at_1"]["text"])
    assert s["tokens_per_s"]["direction"] == "up"
    assert s["peak_rss_mib"]["direction"] == "none"
    assert "no difference was detected" in s["peak_rss_mib"]["text"]
    d = by_metric(dynamic)
    assert d["win_rate_vs_dense"]["direction"] == "none"
    assert "intervals overlap" in d["win_rate_vs_dense"]["text"]
    assert d["tokens_per_s"]["text"].startswith("Masking-only condition")
    assert d["tokens_per_s"]["direction"] == "none"


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
    assert "wall-clock" in SPEED_CAVEAT and "a difference inside them is noise" in SPEED_CAVEAT


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
    [static] = family_findings(rows)
    text = by_metric(static)["bytes_read_per_token"]["text"]
    assert "from 537.9 MB [536.9 MB, 537.9 MB] (dense, 0 %) to 486.0 MB" in text, text
    assert "e+08" not in text


def test_a_memory_difference_says_it_may_come_from_run_order_not_the_threshold():
    rows = [
        point("dense", "dense", 0.0, rss=1299.0),
        point("s25", "static", 0.25, win=0.5, rss=1540.0),
        point("s50", "static", 0.5, win=0.5, rss=1619.0),
    ]
    (static,) = family_findings(rows)
    memory = by_metric(static)["peak_rss_mib"]
    assert memory["direction"] == "up"
    assert "order one worker ran them in" in memory["text"], memory["text"]
