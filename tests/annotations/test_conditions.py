"""The condition builder's model of the policies: fields read from the engine's dataclasses,
built conditions, sweeps, summaries and the pair count."""

import dataclasses
import json

import pytest

from annotations.conditions import (
    FAMILIES,
    BuiltCondition,
    PairCount,
    build_condition,
    build_sweep,
    engine_policy,
    family_fields,
    family_help,
    parse_sparsities,
    policy_bytes_note,
    policy_summary,
)
from inference.policies import (
    CalibratedPolicy,
    DensePolicy,
    DynamicPolicy,
    Policy,
    PredictorPolicy,
    StaticPolicy,
)


def _summary(policy: dict, **kwargs) -> str:
    return policy_summary(policy, engine_policy(policy), **kwargs)


def test_every_family_is_offered_with_a_one_line_meaning():
    assert list(FAMILIES) == ["dense", "static", "calibrated", "dynamic", "budget", "predictor"]
    for kind in FAMILIES:
        assert family_help(kind) and "\n" not in family_help(kind), kind


def test_a_family_meaning_is_a_whole_sentence_in_plain_text():
    # The docstrings' first lines stop mid-sentence ("… in every layer and") and hold reST.
    for kind in FAMILIES:
        help_text = family_help(kind)
        assert help_text.endswith("."), (kind, help_text)
        assert "``" not in help_text, (kind, help_text)
    assert family_help("static") == (
        "Zero every activation with magnitude below threshold at site, in every layer and step."
    )


def test_fields_come_from_the_dataclass_with_their_defaults():
    names = [f.name for f in family_fields("dynamic")]
    expected = [f.name for f in dataclasses.fields(DynamicPolicy)]
    assert names == expected, "the builder must list the engine's fields in the engine's order"
    defaults = {f.name: f.default for f in family_fields("dynamic")}
    assert defaults["reference_entropy"] == 2.0 and defaults["max_factor"] == 4.0
    assert family_fields("dense") == []


def test_fields_a_calibration_fills_in_are_not_asked_for():
    assert "thresholds" not in {f.name for f in family_fields("calibrated")}
    assert "thresholds" not in {f.name for f in family_fields("predictor")}


def test_empty_fields_take_the_defaults_and_the_engine_validates():
    built = build_condition(kind="dynamic", values={"threshold": "0.05", "entropy_scale": "1"})
    assert built.policy == DynamicPolicy(threshold=0.05, entropy_scale=1.0).to_dict()
    assert not built.needs_calibration
    assert built.name == "dynamic t=0.05 s=1 @h", "an unnamed condition is named by its summary"
    with pytest.raises(ValueError, match="max_factor"):
        build_condition(kind="dynamic", values={"threshold": "0.05", "entropy_scale": "1",
                                                "max_factor": "0.5"})
    with pytest.raises(ValueError, match="not a number"):
        build_condition(kind="static", values={"threshold": "abc"})
    with pytest.raises(ValueError, match="threshold is required"):
        build_condition(kind="static", values={})


def test_a_target_sparsity_asks_for_calibration_instead_of_a_threshold():
    built = build_condition(kind="static", values={"target_sparsity_percent": "40"})
    assert built.needs_calibration and built.target_sparsity == 0.4
    assert built.policy == {"kind": "static"}
    assert "40 % sparsity" in built.summary
    with pytest.raises(ValueError, match="not both"):
        build_condition(kind="static", values={"threshold": "0.1", "target_sparsity_percent": "4"})
    zero = build_condition(kind="static", values={"target_sparsity_percent": "0"})
    assert not zero.needs_calibration and zero.policy["threshold"] == 0.0
    with pytest.raises(ValueError, match="target sparsity"):
        build_condition(kind="calibrated", values={})


def test_a_built_row_survives_the_round_trip_through_the_browser():
    built = build_condition(kind="calibrated", values={"target_sparsity_percent": "50"},
                            name="cal 50", calibration_set="humaneval")
    again = BuiltCondition.from_json(built.to_json())
    assert again == built
    tampered = json.loads(built.to_json())
    tampered["policy"]["kind"] = "magic"
    with pytest.raises(ValueError, match="unknown family"):
        BuiltCondition.from_json(json.dumps(tampered))


def test_a_sweep_makes_one_condition_per_target():
    rows = build_sweep(kind="dynamic", values={"entropy_scale": "0.5"},
                       sparsities="0, 25, 40 %, 65")
    assert [r.name for r in rows] == ["dynamic 0%", "dynamic 25%", "dynamic 40%", "dynamic 65%"]
    assert [r.target_sparsity for r in rows] == [0.0, 0.25, 0.4, 0.65]
    assert [r.needs_calibration for r in rows] == [False, True, True, True]
    assert all(r.policy["entropy_scale"] == 0.5 for r in rows)
    budget = build_sweep(kind="budget", values={}, sparsities="25 50")
    assert [r.policy["target_active_fraction"] for r in budget] == [0.75, 0.5]
    assert not any(r.needs_calibration for r in budget)
    for bad, message in [("", "give target"), ("10, 10", "once"), ("120", "under 100")]:
        with pytest.raises(ValueError, match=message):
            parse_sparsities(bad)
    with pytest.raises(ValueError, match="sweep needs"):
        build_sweep(kind="dense", values={}, sparsities="10")


def test_summaries_never_show_the_raw_policy():
    thresholds = [0.01 * i for i in range(30)]
    summary = _summary({"kind": "calibrated", "target_sparsity": 0.5,
                              "thresholds": thresholds, "profile": "x"})
    assert summary == "calibrated s=0.5 @h · calibrated to 50 % sparsity" and "[" not in summary
    assert _summary({"kind": "dense"}) == "dense"
    assert Policy.from_json({"kind": "static", "threshold": 0.05}).label() in _summary(
        {"kind": "static", "threshold": 0.05})


def test_the_pair_count_warns_when_all_pairs_explode():
    small = PairCount(conditions=3, items=10, design="all_pairs", overlap=3)
    assert (small.pairs, small.judgments, small.explodes) == (30, 90, False)
    sweep = PairCount(conditions=9, items=20, design="all_pairs", overlap=3)
    assert sweep.pairs_per_item == 36 and sweep.pairs == 720 and sweep.explodes
    assert sweep.vs_first_pairs == 160
    assert not PairCount(conditions=9, items=20, design="vs_first", overlap=3).explodes


def test_the_site_is_a_choice_and_reaches_names_and_summaries():
    [site] = [f for f in family_fields("static") if f.name == "site"]
    assert site.choices == ("h", "gate", "input") and site.default == "h"
    built = build_condition(kind="calibrated", values={"target_sparsity_percent": "50",
                                                       "site": "input"})
    assert built.needs_calibration and built.policy == {"kind": "calibrated", "site": "input"}
    [row] = build_sweep(kind="static", values={"site": "gate"}, sparsities="30")
    assert row.name == "static 30% @gate"
    assert row.summary == "static @gate · calibrated to 30 % sparsity"
    with pytest.raises(ValueError, match="choose one of"):
        build_condition(kind="static", values={"threshold": "0.1", "site": "elsewhere"})


def test_every_summary_names_the_family_site_and_target():
    calibrated_input = {"kind": "static", "threshold": 0.0123, "site": "input"}
    assert _summary(calibrated_input, target_sparsity=0.5, name="static 50% @input") == (
        "static t=0.0123 @input · calibrated to 50 % sparsity")
    assert _summary(calibrated_input, name="fast") == "static t=0.0123 @input"
    # The default site too: "static · calibrated to 25 %" read the same for h and input.
    assert _summary({"kind": "static"}, target_sparsity=0.25) == (
        "static @h · calibrated to 25 % sparsity")
    assert _summary({"kind": "static", "site": "input"}, target_sparsity=0.25) == (
        "static @input · calibrated to 25 % sparsity")
    # A calibrated condition says its target, not just "calibrated".
    assert _summary({"kind": "calibrated", "site": "gate"}, target_sparsity=0.4) == (
        "calibrated @gate · calibrated to 40 % sparsity")
    built = build_condition(kind="static", values={"threshold": "0.05", "site": "gate"})
    assert built.name == built.summary == "static t=0.05 @gate"


def test_the_bytes_note_says_which_bytes_each_site_can_skip():
    note = policy_bytes_note
    assert "only the down_proj rows" in note(StaticPolicy(0.1))
    assert "at most 1/3 of the MLP" in note(StaticPolicy(0.1))
    assert "up_proj and down_proj rows" in note(StaticPolicy(0.1, site="gate"))
    assert "at most 2/3 of the MLP" in note(StaticPolicy(0.1, site="gate"))
    assert "columns of inactive inputs in all seven projections (q, k, v, o, gate, up, down)" in (
        note(StaticPolicy(0.1, site="input")))
    assert note(DensePolicy()) == "reads every weight (the baseline)"
    for masking_only in (StaticPolicy(0.0), CalibratedPolicy(0.0, (0.0, 0.0)),
                         PredictorPolicy(0.0, "p")):
        assert note(masking_only).startswith("masking-only"), masking_only.label()
    assert "predicted inactive" in note(PredictorPolicy(0.5, "p"))
    assert policy_bytes_note(engine_policy({"kind": "static", "site": "gate"})) == "", (
        "awaiting calibration: the engine cannot say yet")
