import dataclasses
import json
import math
import re

import pytest

from inference.policies import (
    POLICY_CLASSES,
    BudgetPolicy,
    CalibratedPolicy,
    DensePolicy,
    DynamicPolicy,
    Policy,
    PredictorPolicy,
    StaticPolicy,
)


@pytest.mark.parametrize(
    "policy",
    [
        DensePolicy(),
        StaticPolicy(0.05),
        StaticPolicy(0),
        DynamicPolicy(0.05, 1.5),
        DynamicPolicy(0.1, 0.5, 1.0, 2.0),
    ],
)
def test_json_round_trip(policy):
    data = json.loads(json.dumps(policy.to_dict()))
    assert Policy.from_json(data) == policy
    assert data["kind"] == policy.kind


def test_json_shapes():
    assert DensePolicy().to_dict() == {"kind": "dense"}
    assert StaticPolicy(0.05).to_dict() == {"kind": "static", "threshold": 0.05}
    assert Policy.from_json(
        {"kind": "dynamic", "threshold": 0.05, "entropy_scale": 1}
    ).to_dict() == {
        "kind": "dynamic",
        "threshold": 0.05,
        "entropy_scale": 1.0,
        "reference_entropy": 2.0,
        "max_factor": 4.0,
    }


def test_labels():
    assert DensePolicy().label() == "dense"
    assert StaticPolicy(0.05).label() == "static t=0.05"
    assert DynamicPolicy(0.05, 1.0).label() == "dynamic t=0.05 s=1"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "JSON object"),
        ({}, "unknown policy kind None"),
        ({"kind": "relu"}, "unknown policy kind 'relu'"),
        ({"kind": "static"}, "needs 'threshold'"),
        ({"kind": "static", "threshold": "0.1"}, "must be a number"),
        ({"kind": "static", "threshold": True}, "must be a number"),
        ({"kind": "static", "threshold": -0.1}, ">= 0.0"),
        ({"kind": "static", "threshold": math.inf}, "finite"),
        ({"kind": "static", "threshold": 0.1, "extra": 1}, "unknown field(s) ['extra']"),
        ({"kind": "dynamic", "threshold": 0.1}, "needs 'entropy_scale'"),
        ({"kind": "dynamic", "threshold": 0.1, "entropy_scale": 1, "max_factor": 0.5}, ">= 1.0"),
    ],
)
def test_bad_json_raises_clear_value_error(data, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Policy.from_json(data)


def test_constructor_validates_too():
    with pytest.raises(ValueError):
        StaticPolicy(-1.0)


def test_thresholds_per_layer():
    assert DensePolicy().layer_thresholds(3) == [0.0, 0.0, 0.0]
    assert StaticPolicy(0.05).layer_thresholds(2) == [0.05, 0.05]


def test_dynamic_rule_raises_threshold_when_confident():
    policy = DynamicPolicy(0.05, entropy_scale=1.0, reference_entropy=2.0, max_factor=4.0)
    assert policy.step_factor(2.0) == pytest.approx(1.0)
    assert policy.step_factor(1.0) == pytest.approx(math.e)
    assert policy.step_factor(0.0) == pytest.approx(4.0)  # clamped at max_factor
    assert policy.step_factor(3.0) == pytest.approx(1 / math.e)
    assert policy.step_factor(10.0) == pytest.approx(0.25)
    assert DynamicPolicy(0.05, entropy_scale=0.0).step_factor(0.1) == 1.0
    assert StaticPolicy(0.05).step_factor(0.1) == 1.0


@pytest.mark.parametrize(
    "policy",
    [
        BudgetPolicy(0.5),
        BudgetPolicy(0.3, threshold=0.2, kp=1.0),
        BudgetPolicy(target_latency_s_per_token=0.05),
        BudgetPolicy(target_latency_s_per_token=0.1, threshold=0.2, ki=0.0, warmup_steps=0),
    ],
)
def test_budget_json_round_trip(policy):
    data = json.loads(json.dumps(policy.to_dict()))
    assert Policy.from_json(data) == policy


def test_budget_json_shapes_and_mode_defaults():
    assert BudgetPolicy(0.5).to_dict() == {
        "kind": "budget",
        "target_active_fraction": 0.5,
        "threshold": 0.05,
        "kp": 2.0,
        "ki": 1.0,
        "max_factor": 100.0,
    }
    latency = Policy.from_json({"kind": "budget", "target_latency_s_per_token": 0.05})
    assert latency.to_dict() == {
        "kind": "budget",
        "threshold": 0.05,
        "kp": 0.5,
        "ki": 0.5,
        "max_factor": 100.0,
        "target_latency_s_per_token": 0.05,
        "warmup_steps": 2.0,
    }
    assert latency.label() == "budget 50 ms/token"


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "budget"},
        {"kind": "budget", "target_active_fraction": 0.5, "target_latency_s_per_token": 0.1},
        {"kind": "budget", "target_active_fraction": 1.5},
        {"kind": "budget", "target_latency_s_per_token": 0.1, "warmup_steps": 1.5},
        {"kind": "budget", "target_latency_s_per_token": -0.1},
    ],
)
def test_budget_bad_json(data):
    with pytest.raises(ValueError, match="budget|warmup_steps|target"):
        Policy.from_json(data)


def _simulate_latency(policy: BudgetPolicy, steps: int = 60) -> list[tuple[float, float]]:
    """A plant: active = exp(-threshold / 0.2), step latency = 10 ms + 100 ms * active.
    Returns (active fraction, latency s) per decode step."""
    controller = policy.controller()
    history, latency_s, active = [], None, 1.0
    for _ in range(steps):
        threshold = policy.threshold * controller(2.0, active, latency_s)
        active = math.exp(-threshold / 0.2)
        latency_s = 0.010 + 0.100 * active
        history.append((active, latency_s))
    return history


def test_latency_budget_converges_from_both_sides():
    for target_s in (0.03, 0.05, 0.08):
        history = _simulate_latency(
            BudgetPolicy(target_latency_s_per_token=target_s, threshold=0.1)
        )
        tail = [latency for _, latency in history[-20:]]
        assert sum(tail) / len(tail) == pytest.approx(target_s, rel=0.05)
    base = _simulate_latency(BudgetPolicy(target_latency_s_per_token=1.0, threshold=0.1))
    slow, fast = (
        _simulate_latency(BudgetPolicy(target_latency_s_per_token=0.03, threshold=0.1)),
        base,
    )
    # Too slow at the base threshold -> sparsity raised; a loose target -> sparsity lowered.
    assert slow[-1][0] < slow[0][0] and fast[-1][0] > fast[0][0]


def test_latency_budget_warm_up_and_clamp():
    controller = BudgetPolicy(target_latency_s_per_token=0.01, max_factor=4.0).controller()
    assert controller(2.0, 1.0, None) == 1.0  # no measurement yet
    assert controller(2.0, 1.0, 10.0) == 1.0  # second warm-up step: not fed back
    factors = [controller(2.0, 1.0, 10.0) for _ in range(50)]  # hopelessly slow
    assert factors[0] > 1.0 and factors[-1] == pytest.approx(4.0)


@pytest.mark.parametrize(
    "policy",
    [
        StaticPolicy(0.05, site="gate"),
        DynamicPolicy(0.05, 1.0, site="input"),
        BudgetPolicy(0.5, site="gate"),
        CalibratedPolicy(0.5, ((0.1, 0.2, 0.3, 0.4), (0.5, 0.6, 0.7, 0.8)), site="input"),
        CalibratedPolicy(0.5, (0.1, 0.2), site="gate"),
    ],
)
def test_sites_round_trip_through_json(policy):
    data = json.loads(json.dumps(policy.to_dict()))
    assert data["site"] == policy.site
    assert Policy.from_json(data) == policy


def test_a_condition_without_site_means_h_and_keeps_its_json():
    old = {"kind": "calibrated", "target_sparsity": 0.5, "thresholds": [0.1], "profile": "m"}
    policy = Policy.from_json(old)
    assert policy.site == "h" and policy.to_dict() == old
    assert StaticPolicy(0.05).label() == "static t=0.05"
    assert StaticPolicy(0.05, site="input").label() == "static t=0.05 @input"
    with pytest.raises(ValueError, match="'site' must be one of"):
        Policy.from_json({"kind": "static", "threshold": 0.1, "site": "x"})
    with pytest.raises(ValueError, match=re.escape("'thresholds[0]' must be 4 numbers")):
        Policy.from_json({**old, "site": "input"})


def test_each_policy_says_which_weights_it_skips():
    assert DensePolicy().skipped_weights == () and not DensePolicy().skips_weight_bytes
    assert StaticPolicy(0.1).skipped_weights == ("down",)
    assert StaticPolicy(0.1, site="gate").skipped_weights == ("up", "down")
    assert "o" in BudgetPolicy(0.5, site="input").skipped_weights
    assert PredictorPolicy(0.5, "p").skipped_weights == ("gate", "up", "down")


def test_a_policy_skips_no_bytes_exactly_when_it_reads_every_weight():
    """Thresholds of 0 take the engine's dense path: masking-only, whatever the site."""
    for policy in (
        StaticPolicy(0.0), StaticPolicy(0.0, site="input"), DynamicPolicy(0.0, 1.0, site="gate"),
        CalibratedPolicy(0.0, (0.0, 0.0)), PredictorPolicy(0.0, "p"),
    ):
        assert policy.skipped_weights == () and not policy.skips_weight_bytes, policy.label()
    for policy in (StaticPolicy(0.01), DynamicPolicy(0.01, 1.0), CalibratedPolicy(0.1, (0.0, 0.2)),
                   BudgetPolicy(0.5)):
        assert policy.skipped_weights == ("down",), policy.label()
    # An input-site calibration skips only the projections whose input has a threshold.
    per_group = CalibratedPolicy(0.3, ((0.0, 0.0, 0.1, 0.0), (0.0, 0.0, 0.0, 0.2)), site="input")
    assert per_group.skipped_weights == ("gate", "up", "down")


def test_every_field_says_what_it_means_and_defaults_are_optional():
    for cls in POLICY_CLASSES:
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
            assert "unit" in f.metadata, f"{cls.__name__}.{f.name} has no unit"
    assert Policy.from_json({"kind": "static", "threshold": 0.1}).site == "h"
    assert Policy.from_json({"kind": "budget", "target_active_fraction": 0.4}).threshold == 0.05


def test_only_policies_that_move_their_thresholds_run_a_controller():
    steady = [DensePolicy(), StaticPolicy(0.1, site="input"), PredictorPolicy(0.5, "p.safetensors")]
    moving = [DynamicPolicy(0.05, entropy_scale=0.5), BudgetPolicy(target_active_fraction=0.5)]
    assert [p.adapts for p in steady] == [False] * len(steady)
    assert [p.adapts for p in moving] == [True] * len(moving)
