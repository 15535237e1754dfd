"""Predictor training: capture, class-weighted fitting, held-out recall and thresholds."""

import pytest
import torch

from inference.predictor_training import (
    layer_metrics,
    recall_precision,
    threshold_for_recall,
    train_predictors,
)


def test_recall_precision():
    pred = torch.tensor([True, True, False, False])
    truth = torch.tensor([True, False, True, False])
    assert recall_precision(pred, truth) == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("magnitude_weighted", [False, True])
def test_train_predictors_on_tiny(tiny, magnitude_weighted):
    prompts = [f"w{i} w{i + 1} w{i + 2}" for i in range(8, 16)]
    predictors = train_predictors(
        tiny,
        prompts,
        eps=0.05,
        rank=8,
        steps=60,
        max_new_tokens=3,
        magnitude_weighted=magnitude_weighted,
    )
    m = predictors.metrics
    assert m["held_out_prompts"] == 2 and m["held_out_tokens"] > 0
    assert 0.0 <= m["mean_precision"] <= 1.0 and 0.5 <= m["mean_recall"] <= 1.0
    assert len(m["per_layer"]) == 3 and predictors.w1[0].shape == (8, 32)
    assert len(m["thresholds_for_recall"]["0.95"]) == 3
    assert 0.0 <= m["mean_mass_recall"] <= 1.0


def test_threshold_for_recall_keeps_the_target_share_of_positives():
    probs = torch.tensor([[0.9, 0.8, 0.2, 0.1], [0.7, 0.6, 0.3, 0.05]])
    y = torch.tensor([[True, False, True, False], [True, True, False, True]])
    # Positives' probabilities, sorted: 0.9, 0.7, 0.6, 0.2, 0.05; recall 0.5 needs 3 of 5.
    assert threshold_for_recall(probs, y, 0.5) == pytest.approx(0.6)
    for recall in (0.5, 0.8, 1.0):
        t = threshold_for_recall(probs, y, recall)
        assert recall_precision(probs >= t, y)[0] >= recall
    metrics = layer_metrics(probs, torch.where(y, 1.0, 0.0), eps=0.5, threshold=0.5)
    assert metrics["true_active"] == 0.625 and metrics["mass_recall"] == pytest.approx(0.6)
    assert set(metrics["thresholds_for_recall"]) == {"0.9", "0.95", "0.98", "0.99"}
