"""Divergence from dense (inference/divergence.py) on the tiny model: none for dense itself,
some under a threshold, and agreement that falls as the threshold grows."""

from inference.divergence import divergence_from_dense
from inference.generate import generate
from inference.policies import DensePolicy, Policy


def test_dense_against_itself_is_zero_and_a_threshold_moves_it(tiny):
    prompt = "alpha beta gamma"
    answer = generate(tiny, prompt, DensePolicy(), max_new_tokens=8).token_ids
    same = divergence_from_dense(tiny, prompt, answer, DensePolicy())
    assert same["kl_from_dense"] < 1e-6 and same["top1_agreement_with_dense"] == 1.0
    assert same["divergence_tokens"] == len(answer)
    mild, strong = (
        divergence_from_dense(tiny, prompt, answer, Policy.from_json(
            {"kind": "static", "threshold": t})) for t in (0.01, 1.0)
    )
    assert 0 < mild["kl_from_dense"] < strong["kl_from_dense"]
    assert strong["top1_agreement_with_dense"] <= mild["top1_agreement_with_dense"]
    # The teacher-forced dense pass is the decoder's: its top-1 is dense's own answer.
    assert same["top1_agreement_with_dense"] == 1.0
