import json
import math
import re

import pytest

from inference.policies import DensePolicy, DynamicPolicy, Policy, StaticPolicy


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
    data = json.loads(json.dumps(policy.to_json()))
    assert Policy.from_json(data) == policy
    assert data["kind"] == policy.kind


def test_json_shapes():
    assert DensePolicy().to_json() == {"kind": "dense"}
    assert StaticPolicy(0.05).to_json() == {"kind": "static", "threshold": 0.05}
    assert Policy.from_json(
        {"kind": "dynamic", "threshold": 0.05, "entropy_scale": 1}
    ).to_json() == {
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
