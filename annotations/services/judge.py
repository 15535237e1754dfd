"""The LLM judge's rows (issue 31): one verdict job per ordinary pair and order, claimed by
the judge queue's worker under the leased-job rules, answered or failed once."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotations.models import JudgeVerdict, Judgment, Pair, Study
from evaluation.judge import JudgeAnswer

_WINNER = {  # (order, shown winner) -> winner in condition order
    ("ab", "first"): Judgment.Winner.A, ("ab", "second"): Judgment.Winner.B,
    ("ba", "first"): Judgment.Winner.B, ("ba", "second"): Judgment.Winner.A,
}


def judge_verdicts_create(*, study: Study, url: str, model: str) -> int:
    """A pending verdict in both orders for every ordinary pair of ``study`` (gold copies
    are attention checks for humans, not comparisons) under the judge at ``url`` called
    ``model``; existing ones are kept. Returns how many were created."""
    pairs = Pair.objects.filter(study=study, gold_copy=False).values_list("id", flat=True)
    rows = [
        JudgeVerdict(pair_id=pair_id, order=order, judge_url=url, judge_model=model)
        for pair_id in pairs
        for order in JudgeVerdict.Order.values
    ]
    before = JudgeVerdict.objects.filter(pair__study=study, judge_url=url, judge_model=model)
    count = before.count()
    JudgeVerdict.objects.bulk_create(rows, ignore_conflicts=True)
    return before.count() - count


def judge_verdict_claim(*, verdict_id: int) -> JudgeVerdict | None:
    """Take one verdict job for this worker (the leased-job rule: a second worker or a
    repeated message gets None); the verdict with its pair's outputs, or None."""
    now = timezone.now()
    lease_until = now + timezone.timedelta(seconds=settings.JUDGE_LEASE_S)
    if not JudgeVerdict.objects.filter(id=verdict_id).claim(now=now, lease_until=lease_until):
        return None
    return JudgeVerdict.objects.select_related(
        "pair__item", "pair__generation_a", "pair__generation_b"
    ).get(id=verdict_id)


def judge_verdict_shown(verdict: JudgeVerdict) -> tuple[str, str, str]:
    """(prompt, first, second) as the judge sees them: the item's prompt and the two
    outputs in the verdict's order, nothing else (no condition, no model)."""
    pair = verdict.pair
    a, b = pair.generation_a.text, pair.generation_b.text
    first, second = (a, b) if verdict.order == JudgeVerdict.Order.AB else (b, a)
    return pair.item.prompt, first, second


def judge_verdict_record(*, verdict_id: int, answer: JudgeAnswer) -> None:
    """Store the judge's answer on a running verdict (an unparseable one without a
    winner); a verdict no longer running (reaped and redone elsewhere) is left alone."""
    with transaction.atomic():
        verdict = JudgeVerdict.objects.select_for_update().get(id=verdict_id)
        if verdict.status != JudgeVerdict.Status.RUNNING:
            return
        winner = ""
        if answer.winner == "tie":
            winner = Judgment.Winner.TIE
        elif answer.winner is not None:
            winner = _WINNER[(verdict.order, answer.winner)]
        JudgeVerdict.objects.filter(id=verdict_id).update(
            status=JudgeVerdict.Status.DONE, lease_until=None, error="",
            label=answer.label or "", winner=winner, answer=answer.text,
            answered_model=answer.model[:200],
            answered_fingerprint=(answer.fingerprint or "")[:100],
            prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens,
            updated_at=timezone.now(),
        )


def judge_verdict_fail(*, verdict_id: int, error: str) -> None:
    """Record why the judge could not be asked (its endpoint failed past the retries)."""
    JudgeVerdict.objects.filter(id=verdict_id, status=JudgeVerdict.Status.RUNNING).update(
        status=JudgeVerdict.Status.FAILED, error=error[:2000], lease_until=None
    )
