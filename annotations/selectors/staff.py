"""Reads of the staff pages: a study's library draw, its generation and calibration
progress, the pair preview, attention checks, rater quality, and the models a condition
may run and the workers serving them."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db.models import Avg, Count, Exists, Min, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from annotations.conditions import ModelChoice
from annotations.models import (
    Calibration,
    Condition,
    Enrolment,
    Execution,
    ExecutionJob,
    Generation,
    JudgeVerdict,
    Judgment,
    ModelEntry,
    Pair,
    Problem,
    Study,
    WorkerHeartbeat,
)
from annotations.queues import DEFAULT_MODEL_KEY
from annotations.selectors.rater import ShownPair
from inference.model_info import ModelPathError, default_model_path, describe


def problems_drawn(
    *, dataset: str, task_contains: str = "", prompt_contains: str = "", item_count: int,
    seed: int,
) -> list[Problem]:
    """`item_count` available problems of `dataset` matching the filters, drawn with `seed`
    (the same seed draws the same problems), in id order: a study's library items."""
    problems = Problem.objects.filter(dataset=dataset, unavailable_reason="")
    if task_contains:
        problems = problems.filter(task_id__icontains=task_contains)
    if prompt_contains:
        problems = problems.filter(prompt__icontains=prompt_contains)
    ids = sorted(problems.values_list("id", flat=True))
    chosen = random.Random(seed).sample(ids, min(item_count, len(ids)))
    return list(Problem.objects.filter(id__in=chosen).order_by("id"))


@dataclass(frozen=True)
class ConditionProgress:
    condition: Condition
    total: int
    done: int
    running: int
    failed: int
    cancelled: int = 0

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 0

    @property
    def calibration(self) -> Calibration | None:
        """The condition's calibration while its outputs wait for it (none exist and it is
        not done: waiting, running or failed), else None."""
        calibration = getattr(self.condition, "calibration", None)
        if self.total or calibration is None or calibration.status == Calibration.Status.DONE:
            return None
        return calibration


@dataclass(frozen=True)
class StudyProgress:
    conditions: list[ConditionProgress]
    failures: list[Generation]
    total: int
    done: int
    failed: int
    cancelled: int = 0
    eta_s: float | None = None
    checks_pending: int = 0
    # Conditions whose calibration is waiting or running: their outputs are still to come.
    calibrating: int = 0
    # Pass@1 checks that could not run (their worker died twice, or our code failed).
    check_failures: list[ExecutionJob] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """No generation is waiting or running any more, no Pass@1 check is due, and no
        calibration will add generations."""
        return (
            self.done + self.failed + self.cancelled >= self.total
            and not self.checks_pending
            and not self.calibrating
        )

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 0


def study_progress(study: Study) -> StudyProgress:
    """Generation counts per condition, plus the failed rows with their reasons."""
    per_condition = study.conditions.select_related("calibration").annotate(
        total=Count("generations"),
        done=Count("generations", filter=Q(generations__status=Generation.Status.DONE)),
        running=Count("generations", filter=Q(generations__status=Generation.Status.RUNNING)),
        failed=Count("generations", filter=Q(generations__status=Generation.Status.FAILED)),
        cancelled=Count(
            "generations", filter=Q(generations__status=Generation.Status.CANCELLED)
        ),
    )
    per_condition = list(per_condition)
    rows = [
        ConditionProgress(c, total=c.total, done=c.done, running=c.running, failed=c.failed,
                          cancelled=c.cancelled)
        for c in per_condition
    ]
    done = sum(r.done for r in rows)
    failed = sum(r.failed for r in rows)
    cancelled = sum(r.cancelled for r in rows)
    total = sum(r.total for r in rows)
    failures = list(
        Generation.objects.filter(item__study=study, status=Generation.Status.FAILED)
        .select_related("item", "condition")
        .order_by("id")[:50]
    )
    # Unchecked outputs are waiting for their check, unless it failed (its reason is listed).
    checks_pending = Generation.objects.filter(
        item__study=study,
        status=Generation.Status.DONE,
        item__problem__isnull=False,
        execution__isnull=True,
    ).exclude(execution_job__status=ExecutionJob.Status.FAILED).count()
    check_failures = list(
        ExecutionJob.objects.filter(
            generation__item__study=study, status=ExecutionJob.Status.FAILED
        )
        .select_related("generation__item", "generation__condition")
        .order_by("id")[:50]
    )
    return StudyProgress(
        conditions=rows,
        failures=failures,
        total=total,
        done=done,
        failed=failed,
        cancelled=cancelled,
        eta_s=_eta_s(study, remaining={
            c.id: c.total - c.done - c.failed - c.cancelled for c in per_condition
        }),
        checks_pending=checks_pending,
        calibrating=sum(
            r.calibration is not None and not r.calibration.finished for r in rows
        ),
        check_failures=check_failures,
    )


# Outputs whose pace measures the rate: recent enough to follow a change of machine load.
_ETA_WINDOW = 20


def _eta_s(study: Study, *, remaining: dict[int, int], now=None) -> float | None:
    """Seconds until the remaining generations (`remaining`: condition id → outputs still
    to come) are done, from the rate measured so far: each takes its condition's mean
    decode time (`latency_s`; the study's mean where a condition has none yet), times the
    wall-clock seconds the last outputs took per second of decoding, counted up to now
    (model loads, Pass@1 checks sharing the worker, an output still running; several
    workers make it below 1). None until an output is done."""
    if sum(remaining.values()) <= 0:
        return None
    now = now or timezone.now()
    recent = list(
        Generation.objects.filter(item__study=study, status=Generation.Status.DONE,
                                  finished_at__isnull=False, latency_s__gt=0)
        .order_by("-finished_at")
        .values_list("condition_id", "finished_at", "latency_s")[:_ETA_WINDOW]
    )
    if not recent:
        return None
    means = dict(
        Generation.objects.filter(item__study=study, status=Generation.Status.DONE,
                                  latency_s__gt=0)
        .values_list("condition_id").annotate(Avg("latency_s"))
    )
    overall = statistics.fmean(means.values())
    work_s = sum(n * means.get(condition_id, overall) for condition_id, n in remaining.items())
    started = min(finished - timedelta(seconds=latency) for _, finished, latency in recent)
    wall_per_decode = (now - started).total_seconds() / sum(row[2] for row in recent)
    return work_s * wall_per_decode


def pair_previewed(study: Study, index: int) -> tuple[ShownPair | None, int]:
    """The study's pair number `index` (wrapping around, in id order) as a rater would see
    it, for the staff preview, and how many pairs there are. The sides alternate with the
    index; no assignment exists (`assignment_id` 0)."""
    pairs = Pair.objects.filter(study=study).order_by("id")
    total = pairs.count()
    if not total:
        return None, 0
    pair = pairs.select_related("item", "generation_a", "generation_b")[index % total]
    a, b = pair.generation_a.text, pair.generation_b.text
    left, right = (a, b) if index % 2 == 0 else (b, a)
    return ShownPair(0, prompt=pair.item.prompt, left=left, right=right), total


@dataclass(frozen=True)
class GoldCandidate:
    """One ordinary pair shown on the setup page to be made an attention check: number
    `index` (from 0, in id order) of `total`, with its item and both outputs read."""

    pair: Pair
    index: int
    total: int


def gold_candidate(study: Study, index: int) -> GoldCandidate | None:
    """The study's ordinary pair number `index` (wrapping around) that is not yet a gold
    check, or None while no pair exists."""
    copied = Pair.objects.filter(
        gold_copy=True, generation_a=OuterRef("generation_a"),
        generation_b=OuterRef("generation_b"),
    )
    pairs = Pair.objects.filter(
        study=study, gold_copy=False, gold__isnull=True
    ).exclude(Exists(copied)).order_by("id")
    total = pairs.count()
    if not total:
        return None
    index %= total
    pair = pairs.select_related(
        "item", "generation_a__condition", "generation_b__condition"
    )[index]
    return GoldCandidate(pair, index=index, total=total)


def gold_pairs(study: Study) -> list[Pair]:
    """The study's attention checks, oldest first, each with its answer (`gold`), its
    outputs' conditions, `n_given` (how many raters were given it) and `source_id` (the
    ordinary pair it copies; for a pair marked gold itself, in the admin, its own id)."""
    source = Pair.objects.filter(
        gold_copy=False, generation_a=OuterRef("generation_a"),
        generation_b=OuterRef("generation_b"),
    ).values("id")[:1]
    return list(
        Pair.objects.filter(study=study, gold__isnull=False)
        .select_related("gold", "item", "generation_a__condition", "generation_b__condition")
        .annotate(n_given=Count("assignments"),
                  source_id=Subquery(source))
        .order_by("id")
    )


@dataclass(frozen=True)
class RaterQuality:
    rater_id: int
    username: str
    judged: int
    gold_total: int
    gold_correct: int
    median_time_s: float | None
    blocked: bool

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_total if self.gold_total else None

    @property
    def score(self) -> float | None:
        """Share of attention checks passed (None without any); 0 once blocked."""
        if self.blocked:
            return 0.0
        return self.gold_accuracy


def rater_quality(study: Study) -> list[RaterQuality]:
    """Per-rater quality for staff: judgments, attention-check accuracy, median time."""
    rows: dict[int, list] = {}
    judgments = Judgment.objects.filter(assignment__pair__study=study).values_list(
        "assignment__rater_id", "assignment__rater__username", "gold_correct", "time_on_task_ms"
    )
    for rater_id, username, gold_correct, time_ms in judgments:
        rows.setdefault(rater_id, [username, 0, 0, 0, []])
        row = rows[rater_id]
        row[1] += 1
        if gold_correct is not None:
            row[2] += 1
            row[3] += int(gold_correct)
        if time_ms is not None:
            row[4].append(time_ms / 1000)
    blocked = set(
        Enrolment.objects.filter(study=study, blocked_at__isnull=False).values_list(
            "rater_id", flat=True
        )
    )
    return [
        RaterQuality(
            rater_id=rater_id,
            username=username,
            judged=judged,
            gold_total=gold_total,
            gold_correct=gold_correct,
            median_time_s=statistics.median(times) if times else None,
            blocked=rater_id in blocked,
        )
        for rater_id, (username, judged, gold_total, gold_correct, times) in sorted(rows.items())
    ]


def guard_only_checks(study: Study) -> int:
    """How many of the study's Pass@1 checks ran in the guard-only sandbox (no namespaces)."""
    return Execution.objects.filter(generation__item__study=study, containment="guard").count()


@dataclass(frozen=True)
class CalibrationState:
    """A study's calibrations, for the setup page and the launch rule."""

    rows: list[Calibration]

    @property
    def unfinished(self) -> int:
        return sum(not c.finished for c in self.rows)

    @property
    def failed(self) -> int:
        return sum(c.status == Calibration.Status.FAILED for c in self.rows)

    @property
    def finished(self) -> bool:
        return self.unfinished == 0

    @property
    def percent(self) -> int:
        if not self.rows:
            return 100
        return round(100 * sum(c.progress for c in self.rows) / len(self.rows))

    def launch_blockers(self) -> list[str]:
        reasons = []
        if self.unfinished:
            reasons.append(
                f"{self.unfinished} condition(s) are still being calibrated "
                f"({self.percent} % done)."
            )
        if self.failed:
            reasons.append(f"{self.failed} calibration(s) failed: retry them on the setup page.")
        return reasons


def calibration_state(study: Study) -> CalibrationState:
    return CalibrationState(
        rows=list(
            Calibration.objects.filter(condition__study=study)
            .select_related("condition")
            .order_by("condition__position", "condition_id")
        )
    )


@dataclass(frozen=True)
class ConditionModel:
    """Which weights a condition's outputs come from, as reports and exports name them.

    ``key``: the model's key (``default`` for the deployment's own model), or for an
    alignment-vector condition ``base→aligned@λ`` (e.g. ``smol→smol-dpo@0.5``).
    ``fingerprint``: the content fingerprint its finished outputs recorded (the most common
    one, should the file have changed mid-study), else the registry's for a plain registered
    model, else "" (the default model and merged weights are fingerprinted by the worker)."""

    key: str
    base_key: str
    aligned_key: str | None
    alignment_lambda: float | None
    fingerprint: str


def _model_key(base_key: str, aligned_key: str | None, lam: float | None) -> str:
    return base_key if aligned_key is None else f"{base_key}→{aligned_key}@{lam:g}"


def condition_models(study: Study) -> dict[int, ConditionModel]:
    """`ConditionModel` of each of the study's conditions, by condition id (two queries)."""
    recorded: dict[int, Counter[str]] = {}
    for condition_id, fingerprint in Generation.objects.filter(
        item__study=study, status=Generation.Status.DONE
    ).exclude(model_fingerprint="").values_list("condition_id", "model_fingerprint"):
        recorded.setdefault(condition_id, Counter())[fingerprint] += 1
    out = {}
    for condition in study.conditions.select_related("model", "aligned_model"):
        aligned_key = condition.aligned_model.key if condition.aligned_model_id else None
        fingerprint = ""
        if condition.id in recorded:
            fingerprint = recorded[condition.id].most_common(1)[0][0]
        elif condition.model_id and aligned_key is None:
            fingerprint = condition.model.fingerprint
        out[condition.id] = ConditionModel(
            key=_model_key(condition.model_key, aligned_key, condition.alignment_lambda),
            base_key=condition.model_key,
            aligned_key=aligned_key,
            alignment_lambda=condition.alignment_lambda,
            fingerprint=fingerprint,
        )
    return out


def condition_model_key(condition: Condition) -> str:
    """`ConditionModel.key` of one condition (no query when its models are selected)."""
    aligned_key = condition.aligned_model.key if condition.aligned_model_id else None
    return _model_key(condition.model_key, aligned_key, condition.alignment_lambda)


def models_offered() -> list[ModelEntry]:
    """The registered models a condition may use: the valid ones."""
    return list(ModelEntry.objects.filter(status=ModelEntry.Status.VALID))


def model_workers(*, now=None) -> dict[str, list[str]]:
    """Model key -> the live workers (`WorkerHeartbeat.live`) serving it, by name."""
    serving: dict[str, list[str]] = {}
    live = WorkerHeartbeat.objects.live(now or timezone.now()).order_by("name")
    for name, keys in live.values_list("name", "model_keys"):
        for key in keys:
            serving.setdefault(key, []).append(name)
    return serving


@dataclass(frozen=True)
class ModelService:
    """One model a study's conditions run, who serves it and what waits for it."""

    key: str
    workers: tuple[str, ...]
    waiting: int  # outputs and calibrations no worker has taken yet

    @property
    def stalled(self) -> bool:
        """Work waits for this model and no live worker holds it."""
        return self.waiting > 0 and not self.workers


def study_model_service(study: Study, *, now=None) -> list[ModelService]:
    """Per model the study's conditions run (the base of an alignment vector: its worker
    builds the merged weights), whether a live worker serves it and how much waits."""
    serving = model_workers(now=now)
    waiting: Counter[str] = Counter()
    pending = Generation.objects.filter(item__study=study, status=Generation.Status.PENDING)
    for rows in (
        pending.values("condition__model__key").annotate(n=Count("id")),
        Calibration.objects.filter(condition__study=study, status=Calibration.Status.PENDING)
        .values("condition__model__key").annotate(n=Count("id")),
    ):
        for row in rows.order_by():
            waiting[row["condition__model__key"] or DEFAULT_MODEL_KEY] += row["n"]
    keys = {c.model_key for c in study.conditions.select_related("model")}
    return [
        ModelService(key=key, workers=tuple(serving.get(key, ())), waiting=waiting[key])
        for key in sorted(keys)
    ]


def _description(key: str) -> dict:
    """What is known of a model's weights: the registry's validated description, or for the
    default model, `describe()` of MODEL_PATH (memoised on disk: hashed once)."""
    if key != DEFAULT_MODEL_KEY:
        return ModelEntry.objects.get(key=key).description
    path = settings.MODEL_PATH or default_model_path()
    return describe(path, cache_root=settings.MODEL_CACHE_DIR).to_dict()


def model_choice_problem(choice: ModelChoice) -> str | None:
    """Why a condition cannot run `choice`, in words for staff, or None: each key must be the
    default model or a valid registered one, and an alignment vector's two models must share
    architecture and every shape (else their weights cannot be interpolated)."""
    valid = set(ModelEntry.objects.filter(status=ModelEntry.Status.VALID)
                .values_list("key", flat=True))
    for key, what in ((choice.model, "model"), (choice.aligned, "aligned model")):
        if key and key != DEFAULT_MODEL_KEY and key not in valid:
            return f"the {what} “{key}” is not a valid registered model (see the Models page)"
    if not choice.aligned:
        return None
    if choice.aligned == choice.model:
        return "an alignment vector needs two different models (base and aligned)"
    try:
        base, aligned = _description(choice.model), _description(choice.aligned)
    except (OSError, ModelPathError) as error:
        return f"the default model cannot be read: {error}"
    if base["architecture"] != aligned["architecture"]:
        return (f"{choice.model} is a {base['architecture']} model and {choice.aligned} a "
                f"{aligned['architecture']} one: an alignment vector needs one architecture")
    for name in sorted(base["shape"].keys() | aligned["shape"].keys()):
        a, b = base["shape"].get(name), aligned["shape"].get(name)
        if a != b:
            return (f"{choice.model} and {choice.aligned} differ in {name} ({a} vs {b}): an "
                    "alignment vector needs the same shapes")
    return None


def judge_verdicts_answered(study: Study) -> QuerySet[JudgeVerdict]:
    """The LLM judges' answered verdicts of a study (an unparseable answer included: it is
    an answer with no verdict); pending and failed jobs are no verdicts."""
    return JudgeVerdict.objects.filter(pair__study=study, status=JudgeVerdict.Status.DONE)


def judge_verdict_rows(study: Study) -> list[dict]:
    """`judge_verdicts_answered` as ``analysis.judge_agreement``'s table rows: ``judge``
    (the model and its endpoint), ``item``, ``condition_a``, ``condition_b``, ``order``,
    ``winner`` (None where the answer had no verdict) and ``fingerprint`` (the weights the
    endpoint reported, "" if none). No human judgment is among them."""
    rows = (
        judge_verdicts_answered(study)
        .order_by("pair_id", "order", "id")
        .values_list("judge_model", "judge_url", "pair__item__task_id",
                     "pair__generation_a__condition__name",
                     "pair__generation_b__condition__name", "order", "winner",
                     "answered_fingerprint")
    )  # fmt: skip
    return [
        {"judge": f"{model} at {url}", "item": item, "condition_a": a, "condition_b": b,
         "order": order, "winner": winner or None, "fingerprint": fingerprint}
        for model, url, item, a, b, order, winner, fingerprint in rows
    ]  # fmt: skip


@dataclass(frozen=True)
class JudgePilot:
    """One judge's jobs on a study: how many verdicts wait, are answered or failed."""

    url: str
    model: str
    total: int
    answered: int
    unparseable: int
    failed: int

    @property
    def waiting(self) -> int:
        return self.total - self.answered - self.failed

    @property
    def finished(self) -> bool:
        return self.waiting == 0


def judge_pilots(study: Study) -> list[JudgePilot]:
    """Each judge (endpoint and model) asked about the study, oldest first, with its counts."""
    done = Q(status=JudgeVerdict.Status.DONE)
    rows = (
        JudgeVerdict.objects.filter(pair__study=study)
        .values("judge_url", "judge_model")
        .annotate(
            total=Count("id"), answered=Count("id", filter=done),
            unparseable=Count("id", filter=done & Q(label="")),
            failed=Count("id", filter=Q(status=JudgeVerdict.Status.FAILED)),
            first=Min("id"),
        )
        .order_by("first")
    )  # fmt: skip
    return [
        JudgePilot(url=r["judge_url"], model=r["judge_model"], total=r["total"],
                   answered=r["answered"], unparseable=r["unparseable"], failed=r["failed"])
        for r in rows
    ]  # fmt: skip
