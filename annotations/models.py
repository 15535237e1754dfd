"""Studies, conditions, items, generations, pairs, assignments and judgments.

One row per real-world thing; the database enforces what must be unique."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from functools import cached_property

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.db.models import F, Q

from annotations.conditions import engine_policy, policy_bytes_note, policy_summary
from annotations.queues import DEFAULT_MODEL_KEY, generation_queue
from evaluation.datasets import TASK_ID_MAX_CHARS, Task
from evaluation.prompts import task_prompt
from inference.policies import Policy

RATIONALE_MAX_CHARS = 1000
RATER_TITLE_DEFAULT = "Compare two answers"
PROFILE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
PROFILE_LABEL_MAX_CHARS = 200
PROFILE_CHOICE_MAX_CHARS = 100


def profile_question_problem(question) -> str | None:
    """Why one profile question is malformed, or None. A question is ``{"name", "label",
    "choices"}``: a short lower-case name, a label, and two or more different choices
    (choices are required so that subgroups are categorical)."""
    if not isinstance(question, dict):
        return 'must be an object {"name", "label", "choices"}'
    unknown = sorted(set(question) - {"name", "label", "choices"})
    if unknown:
        return f"unknown key(s) {', '.join(unknown)}"
    name, label, choices = question.get("name"), question.get("label"), question.get("choices")
    if not isinstance(name, str) or not PROFILE_NAME.match(name):
        return "the name must be lower-case letters, digits or _, starting with a letter"
    if not isinstance(label, str) or not label.strip():
        return f"“{name}” needs a label (the question raters read)"
    if len(label) > PROFILE_LABEL_MAX_CHARS:
        return f"“{name}”: the label is longer than {PROFILE_LABEL_MAX_CHARS} characters"
    if not isinstance(choices, list) or not all(
        isinstance(c, str) and c.strip() for c in choices
    ):
        return f"“{name}” needs a list of choices (non-empty texts)"
    if len(choices) < 2 or len(set(choices)) != len(choices):
        return f"“{name}” needs at least two different choices"
    if any(len(c) > PROFILE_CHOICE_MAX_CHARS for c in choices):
        return f"“{name}”: a choice is longer than {PROFILE_CHOICE_MAX_CHARS} characters"
    return None


def validate_profile_questions(value) -> None:
    """`Study.profile_questions` must be a list of valid questions with different names."""
    if not isinstance(value, list):
        raise ValidationError("Profile questions must be a list of questions.")
    problems = [
        f"Question {number}: {problem}"
        for number, question in enumerate(value, start=1)
        if (problem := profile_question_problem(question))
    ]
    names = [q.get("name") for q in value if isinstance(q, dict)]
    if not problems and len(set(names)) != len(names):
        problems.append("Profile question names must be different.")
    if problems:
        raise ValidationError(problems)


# Every number of a study's design, bounded: the form and the admin refuse a value outside
# (from the validators) and the database checks it (Study.Meta.constraints). Without them
# SQLite took up to 2^63 − 1 (a lease of 10^13 minutes made each rater request a 500) and a
# small integer field past 32767 was stored on SQLite and a 500 on PostgreSQL.
STUDY_NUMBER_BOUNDS: dict[str, tuple[float, float]] = {
    "overlap": (1, 100),
    "max_new_tokens": (1, 32768),
    "samples_per_item": (1, 1000),
    "temperature": (0.0, 10.0),
    "min_judgments": (1, 100_000),
    "items_per_rater": (1, 100_000),
    "lease_minutes": (1, 24 * 60),
    "gold_rate": (0.0, 1.0),
    "gold_block_after": (0, 1000),
    "min_response_ms": (0, 10 * 60 * 1000),
}


def _bounded(name: str) -> list:
    low, high = STUDY_NUMBER_BOUNDS[name]
    return [MinValueValidator(low), MaxValueValidator(high)]


def _bound_check(name: str) -> models.CheckConstraint:
    low, high = STUDY_NUMBER_BOUNDS[name]
    within = Q(**{f"{name}__gte": low, f"{name}__lte": high})
    if name == "items_per_rater":  # empty: no cap
        within |= Q(items_per_rater__isnull=True)
    return models.CheckConstraint(condition=within, name=f"study_{name}_bounded")


class Study(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        OPEN = "open", "Open for rating"
        PAUSED = "paused", "Paused"
        CLOSED = "closed", "Closed"

    class PairDesign(models.TextChoices):
        ALL_PAIRS = "all_pairs", "All condition pairs"
        VS_FIRST = "vs_first", "Each condition against the first (dense)"

    name = models.CharField(max_length=200, unique=True)
    # Raters never see `name`, which may say what the study varies: blinding.
    rater_title = models.CharField(
        "title raters see",
        max_length=200,
        default=RATER_TITLE_DEFAULT,
        help_text="Shown to raters instead of the study's name. Keep it neutral: no "
        "condition, and nothing about what the study varies.",
    )
    description = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    # Raters enrolled in the study; only they are offered its pairs.
    raters = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="studies")
    overlap = models.PositiveSmallIntegerField(
        default=3, validators=_bounded("overlap"),
        help_text="How many raters judge each pair.",
    )
    max_new_tokens = models.PositiveIntegerField(default=128, validators=_bounded("max_new_tokens"))
    # n > 1 samples per (item, condition) give the unbiased pass@k; they need sampling.
    samples_per_item = models.PositiveSmallIntegerField(
        default=1, validators=_bounded("samples_per_item"),
        help_text="Outputs per item and condition (pass@k needs k or more).",
    )
    temperature = models.FloatField(
        default=0.0, validators=_bounded("temperature"),
        help_text="0 = greedy decoding; several samples need a temperature > 0.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    # What raters read and agree to, and where they go when they finish.
    instructions = models.TextField(blank=True, help_text="Shown above every pair.")
    consent_text = models.TextField(
        blank=True, help_text="When set, raters must accept it before their first pair."
    )
    completion_code = models.CharField(max_length=64, blank=True)
    completion_url = models.URLField(
        blank=True, help_text="e.g. https://app.prolific.com/submissions/complete?cc=CODE"
    )
    # The completion code is a rater's proof of work on a crowd platform: never for less.
    min_judgments = models.PositiveIntegerField(
        "minimum judgments",
        default=1,
        validators=_bounded("min_judgments"),
        help_text="Judged pairs (attention checks not counted) a rater needs before the "
        "completion code is shown.",
    )
    # Design and assignment rules.
    pair_design = models.CharField(
        max_length=16, choices=PairDesign.choices, default=PairDesign.ALL_PAIRS
    )
    # Off: pairs fill in balanced order. On: the next pair goes to the condition pair whose
    # win-rate CI is widest (analysis.adaptive), within the same overlap, cap and lease rules.
    adaptive_assignment = models.BooleanField(
        default=False,
        help_text="Send the next pair to the condition pair whose win rate is least certain.",
    )
    items_per_rater = models.PositiveIntegerField(
        null=True, blank=True, validators=_bounded("items_per_rater"),
        help_text="Most pairs one rater judges (gold items not counted).",
    )
    lease_minutes = models.PositiveIntegerField(
        default=30, validators=_bounded("lease_minutes"),
        help_text="An unanswered pair goes back to the pool after this long.",
    )
    gold_rate = models.FloatField(
        default=0.0, validators=_bounded("gold_rate"),
        help_text="Share of attention-check (gold) pairs mixed in, 0 to 1.",
    )
    gold_block_after = models.PositiveSmallIntegerField(
        default=2, validators=_bounded("gold_block_after"),
        help_text="Wrong gold answers that end a rater's session (0 = never block).",
    )
    min_response_ms = models.PositiveIntegerField(
        default=0, validators=_bounded("min_response_ms"),
        help_text="Answers faster than this are refused (0 = no minimum).",
    )
    # Asked on the consent page; answers (Enrolment.profile) feed the subgroup analysis.
    profile_questions = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_profile_questions],
        help_text='[{"name": "experience", "label": "…", "choices": ["…", "…"]}]',
    )

    class Meta:
        verbose_name_plural = "studies"
        constraints = [
            *(_bound_check(name) for name in STUDY_NUMBER_BOUNDS),
            models.CheckConstraint(
                condition=Q(samples_per_item__gte=1)
                & (Q(samples_per_item=1) | Q(temperature__gt=0)),
                name="study_samples_need_sampling",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        # The questions are asked on the consent page, which only a consent text opens.
        if self.profile_questions and not self.consent_text.strip():
            raise ValidationError(
                {"profile_questions": "Profile questions are asked on the consent page: "
                 "set a consent text too."}
            )

    def is_open(self) -> bool:
        return self.status == self.Status.OPEN

    def lease_end(self, now: datetime, *, first: bool = False) -> datetime:
        """Until when a pair handed out (or resumed) at `now` is held for its rater; `first`:
        for a rater who has answered nothing in the study yet, at most
        `FIRST_LEASE_MINUTES` (an invented participant id must not hold pairs for long)."""
        minutes = self.lease_minutes
        if first:
            minutes = min(minutes, settings.FIRST_LEASE_MINUTES)
        return now + timedelta(minutes=minutes)

    def blocks_after(self, gold_failures: int) -> bool:
        """Whether this many wrong attention-check answers end a rater's session."""
        return bool(self.gold_block_after) and gold_failures >= self.gold_block_after


# A job whose worker died (crashed, killed, lost its machine) is redone once; the second
# death fails it with this reason, shown on the study or setup page.
MAX_JOB_ATTEMPTS = 2
JOB_GAVE_UP = (
    f"gave up after {MAX_JOB_ATTEMPTS} tries: the worker stopped (crashed or was killed) "
    "during each one"
)


class LeasedJobQuerySet(models.QuerySet):
    """The rule every worker job shares (generations, calibrations, Pass@1 checks: rows with
    `status` pending / running / done / failed, `attempts`, `lease_until` and `error`)."""

    def claimable(self, now: datetime) -> LeasedJobQuerySet:
        """Rows a worker may take: waiting, or running under a lease that has passed
        (their worker died)."""
        status = self.model.Status
        return self.filter(
            Q(status=status.PENDING) | Q(status=status.RUNNING, lease_until__lt=now)
        )

    def lost(self, now: datetime, *, queue_empty: bool) -> LeasedJobQuerySet:
        """Rows whose work was lost, for beat's sweep to send again: running past their
        lease (the worker died) and, when no message waits in their queue, pending (the
        message was lost, or never sent)."""
        if queue_empty:
            return self.claimable(now)
        return self.claimable(now).filter(status=self.model.Status.RUNNING)

    def claim(self, *, now: datetime, lease_until: datetime, **also) -> list[int]:
        """Take this queryset's claimable rows for one worker until `lease_until`, setting
        `also` on them too; a row already tried `MAX_JOB_ATTEMPTS` times is failed with
        `JOB_GAVE_UP` instead. Each row is taken by a guarded update, so a second worker, or
        a repeated message, gets none of them. Returns the ids taken."""
        waiting = self.claimable(now)
        waiting.filter(attempts__gte=MAX_JOB_ATTEMPTS).update(
            status=self.model.Status.FAILED, error=JOB_GAVE_UP, lease_until=None
        )
        ids = list(waiting.filter(attempts__lt=MAX_JOB_ATTEMPTS).values_list("id", flat=True))
        with transaction.atomic():
            return [
                row_id for row_id in ids
                if self.model.objects.claimable(now).filter(id=row_id).update(
                    status=self.model.Status.RUNNING, lease_until=lease_until,
                    attempts=F("attempts") + 1, **also,
                )
            ]


MODEL_KEY = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
# What `inference.model_info.describe()` says of a valid model, as stored on the entry.
MODEL_DESCRIPTION_KEYS = {
    "kind": str, "architecture": str, "shape": dict, "context_length": int,
    "weight_formats": list, "parameters": int, "fingerprint": str,
}


def validate_model_key(value: str) -> None:
    """A key is a short lower-case slug (it names a Celery queue) and not the reserved
    ``default``."""
    if not isinstance(value, str) or not MODEL_KEY.match(value):
        raise ValidationError(
            "A model key is 1 to 32 lower-case letters, digits or -, starting with a letter."
        )
    if value == DEFAULT_MODEL_KEY:
        raise ValidationError(f"“{DEFAULT_MODEL_KEY}” is the deployment's own model.")


def validate_model_description(value) -> None:
    """`ModelEntry.description`: empty until validated, then ``describe()``'s fields with
    their types (the shape's values positive integers)."""
    if value == {}:
        return
    if not isinstance(value, dict):
        raise ValidationError("A model description is an object.")
    missing = sorted(set(MODEL_DESCRIPTION_KEYS) - set(value))
    if missing:
        raise ValidationError(f"The model description lacks {', '.join(missing)}.")
    for name, kind in MODEL_DESCRIPTION_KEYS.items():
        if not isinstance(value[name], kind) or isinstance(value[name], bool):
            raise ValidationError(f"The model description's {name} is not a {kind.__name__}.")
    if not all(isinstance(v, int) and v > 0 for v in value["shape"].values()):
        raise ValidationError("The model description's shape holds a non-positive value.")


class ModelEntry(models.Model):
    """A model registered by staff: a path on the workers' machines under a short key.

    A worker serving the key validates it (`tasks.model_validate`: `describe()` of the
    path) and stores what it is in `description`; only valid models are offered to the
    condition builder. Raters never see the key, name or path."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for a worker to validate it"
        VALID = "valid", "Valid"
        INVALID = "invalid", "Invalid"

    key = models.CharField(
        max_length=32, unique=True, validators=[validate_model_key],
        help_text="Short name, e.g. smol-dpo; workers serve it with MODEL_KEYS=smol-dpo.",
    )
    path = models.CharField(
        max_length=1000, help_text="A Hugging Face directory or a .gguf file on the worker."
    )
    display_name = models.CharField(max_length=200, blank=True, help_text="For staff only.")
    description = models.JSONField(
        default=dict, blank=True, validators=[validate_model_description]
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        verbose_name = "registered model"
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["pending", "valid", "invalid"]),
                name="model_entry_status",
            ),
            models.CheckConstraint(
                condition=~Q(key=DEFAULT_MODEL_KEY), name="model_entry_key_not_default"
            ),
        ]

    def __str__(self) -> str:
        return self.key

    @property
    def queue(self) -> str:
        return generation_queue(self.key)

    @property
    def fingerprint(self) -> str:
        """The weights' content fingerprint once validated, else ""."""
        return self.description.get("fingerprint", "")

    def is_valid(self) -> bool:
        return self.status == self.Status.VALID


class WorkerHeartbeatQuerySet(models.QuerySet):
    def live(self, now: datetime) -> WorkerHeartbeatQuerySet:
        """Workers heard from within three heartbeats (one missed beat is not a death)."""
        return self.filter(seen_at__gte=now - timedelta(seconds=3 * settings.WORKER_HEARTBEAT_S))


class WorkerHeartbeat(models.Model):
    """A generation worker's last word: which model keys it serves (MODEL_KEYS), when.

    Written when the worker starts and every WORKER_HEARTBEAT_S after, removed when it stops
    cleanly; a killed worker's row goes stale, so pages read only `live()` ones."""

    name = models.CharField(max_length=255, unique=True)  # Celery's node name, worker@host
    model_keys = models.JSONField(default=list)
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField()

    objects = WorkerHeartbeatQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.name}: {', '.join(self.model_keys)}"


class ConditionQuerySet(models.QuerySet):
    def ready(self) -> ConditionQuerySet:
        """Conditions whose policy is complete: no calibration, or a finished one."""
        return self.filter(Q(calibration__isnull=True) | Q(calibration__status="done"))


class Condition(models.Model):
    """One arm of the study: a model (null: the deployment's default model), optionally
    moved along an alignment vector towards `aligned_model` by `alignment_lambda`, run under
    a threshold policy stored as the engine's JSON."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="conditions")
    name = models.CharField(max_length=100)
    policy = models.JSONField(help_text='Engine policy, e.g. {"kind": "static", "threshold": 0.05}')
    # Fixed order used to code pairwise choices (never the screen side).
    position = models.PositiveSmallIntegerField(default=0)
    # PROTECT: a model that generated a study's outputs stays registered while the study is.
    model = models.ForeignKey(
        ModelEntry, null=True, blank=True, on_delete=models.PROTECT, related_name="conditions",
        help_text="Empty: the deployment's default model. With an aligned model: the base.",
    )
    # θ = θ_model + λ·(θ_aligned − θ_model) (arXiv 2410.19206), built by `inference.merge`.
    aligned_model = models.ForeignKey(
        ModelEntry, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
    )
    alignment_lambda = models.FloatField(null=True, blank=True)

    objects = ConditionQuerySet.as_manager()

    class Meta:
        ordering = ["study", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["study", "name"], name="condition_unique_name"),
            models.CheckConstraint(
                condition=Q(aligned_model__isnull=True, alignment_lambda__isnull=True)
                | Q(aligned_model__isnull=False, alignment_lambda__isnull=False),
                name="condition_alignment_both_or_neither",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.study}: {self.name}"

    def policy_text(self) -> str:
        return json.dumps(self.policy, sort_keys=True)

    @property
    def model_key(self) -> str:
        """The key of the model the condition runs (the base of an alignment vector); a
        condition without a registered model runs the deployment's own (`default`)."""
        return self.model.key if self.model_id else DEFAULT_MODEL_KEY

    @property
    def queue(self) -> str:
        """Where its generations and calibration go: the queue of its (base) model. An
        alignment condition's worker must hold the aligned model's path too."""
        return generation_queue(self.model_key)

    @cached_property
    def engine_policy(self) -> Policy | None:
        """The policy as the engine's object, parsed once per instance; None while it waits
        for its calibration's thresholds."""
        return engine_policy(self.policy)

    def target_sparsity(self) -> float | None:
        """The sparsity the condition was calibrated to (its calibration job's target, else
        a calibrated policy's own), or None: no target."""
        calibration = getattr(self, "calibration", None) if self.pk else None
        if calibration is not None:
            return calibration.target_sparsity
        target = self.policy.get("target_sparsity")
        return float(target) if isinstance(target, int | float) else None

    def summary(self) -> str:
        """The policy in a few words, e.g. "static t=0.05 · calibrated to 50 % sparsity"."""
        return policy_summary(self.policy, self.engine_policy,
                              target_sparsity=self.target_sparsity(), name=self.name)

    def bytes_note(self) -> str:
        """Which weight bytes the policy can skip (so whether its speed can move at all)."""
        return policy_bytes_note(self.engine_policy)

    def skips_bytes(self) -> bool | None:
        """Whether the engine skips reading weights for this policy (a real speed-up is
        possible); None when it cannot say yet (awaiting calibration)."""
        return self.engine_policy.skips_weight_bytes if self.engine_policy else None


class Calibration(models.Model):
    """The background job that chooses a condition's thresholds for a target sparsity.

    A worker on the generation queue profiles the model on a prompt set and writes the
    thresholds into the condition's policy; until then the condition has no generations and
    the study cannot launch."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for a worker"
        RUNNING = "running", "Profiling"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    class PromptSet(models.TextChoices):
        ITEMS = "items", "The study's own items"
        HUMANEVAL = "humaneval", "HumanEval prompts"

    condition = models.OneToOneField(
        Condition, on_delete=models.CASCADE, related_name="calibration"
    )
    target_sparsity = models.FloatField(help_text="Share of MLP activations to zero, 0 to <1.")
    prompt_set = models.CharField(
        max_length=16, choices=PromptSet.choices, default=PromptSet.ITEMS
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # Share of the profiling prompts done, 0 to 1, for the setup page's progress bar.
    progress = models.FloatField(default=0.0)
    attempts = models.PositiveSmallIntegerField(default=0)
    # A running calibration whose lease has passed belongs to a dead worker.
    lease_until = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    # Sparsity the chosen thresholds give on the profiling prompts (the job's own check).
    expected_sparsity = models.FloatField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = LeasedJobQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(target_sparsity__gte=0) & Q(target_sparsity__lt=1),
                name="calibration_target_share",
            ),
        ]

    def __str__(self) -> str:
        return f"calibration of {self.condition} to {self.target_sparsity:.0%}"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)


class Problem(models.Model):
    """A benchmark problem in the library (HumanEval, MBPP, DS-1000, custom JSONL).

    Imported once by `manage.py import_dataset`; studies draw their items from here."""

    dataset = models.CharField(max_length=50)
    task_id = models.CharField(max_length=TASK_ID_MAX_CHARS)
    prompt = models.TextField()
    entry_point = models.CharField(max_length=200, blank=True)
    tests = models.TextField(help_text="What the sandbox runs against a candidate.")
    reference = models.TextField(blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Why it cannot be scored here (e.g. a DS-1000 library that is not installed).
    unavailable_reason = models.CharField(max_length=200, blank=True)
    imported_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "id"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "task_id"], name="problem_unique_task"),
        ]

    def __str__(self) -> str:
        return f"{self.dataset}/{self.task_id}"

    def as_task(self) -> Task:
        """This row as the plain `evaluation` task that prompts and the sandbox take."""
        return Task(
            dataset=self.dataset,
            task_id=self.task_id,
            prompt=self.prompt,
            entry_point=self.entry_point or None,
            tests=self.tests,
            reference=self.reference,
            metadata=self.metadata,
            unavailable_reason=self.unavailable_reason or None,
        )

    def new_item(self, study: Study) -> Item:
        """An (unsaved) item of `study` asking this problem in its data set's prompt
        (evaluation.prompts): every item drawn from the library is made here."""
        return Item(
            study=study,
            problem=self,
            dataset=self.dataset,
            task_id=self.task_id,
            prompt=task_prompt(self.as_task()),
        )


class Item(models.Model):
    """A prompt of the study, with what is needed to score its code."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="items")
    problem = models.ForeignKey(
        Problem, on_delete=models.PROTECT, null=True, blank=True, related_name="items"
    )
    dataset = models.CharField(max_length=50)
    task_id = models.CharField(max_length=TASK_ID_MAX_CHARS)
    prompt = models.TextField()
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["study", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["study", "dataset", "task_id"], name="item_unique_task"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.dataset}/{self.task_id}"


def _related_or_none(instance: models.Model, name: str):
    """The object on the other side of a one-to-one relation, or None: read with
    `instance` when its query selected it (`select_related`), else read now."""
    try:
        return getattr(instance, name)
    except ObjectDoesNotExist:
        return None


class Generation(models.Model):
    """One model output for (item, condition, sample). The worker fills it in."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="generations")
    condition = models.ForeignKey(Condition, on_delete=models.CASCADE, related_name="generations")
    sample_index = models.PositiveSmallIntegerField(default=0)
    seed = models.BigIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    # A running generation whose lease has passed belongs to a dead worker.
    lease_until = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    text = models.TextField(blank=True)
    model_fingerprint = models.CharField(max_length=200, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    new_tokens = models.PositiveIntegerField(null=True, blank=True)
    latency_s = models.FloatField(null=True, blank=True)
    tokens_per_s = models.FloatField(null=True, blank=True)
    peak_rss_bytes = models.BigIntegerField(null=True, blank=True)
    active_fraction = models.FloatField(null=True, blank=True)
    telemetry = models.JSONField(default=dict, blank=True)
    # Where and how it ran (`inference.provenance`: host, CPU model, threads, GPU name, torch
    # version, weight format, kernel path): timings are compared only within one machine.
    provenance = models.JSONField(default=dict, blank=True)
    # The worker's resident set when the generation started: its memory cost is the peak
    # above this, not the peak itself (which drifts up with everything run before).
    rss_start_bytes = models.BigIntegerField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = LeasedJobQuerySet.as_manager()

    class Meta:
        ordering = ["item", "condition__position", "sample_index"]
        constraints = [
            models.UniqueConstraint(
                fields=["item", "condition", "sample_index", "seed"],
                name="generation_unique_sample",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.item} × {self.condition.name} #{self.sample_index}"


class ExecutionJob(models.Model):
    """The worker job that runs one finished generation's Pass@1 check (`tasks.execute`, on
    the execution queue), leased, retried and swept like a generation; its verdict, once
    the check has run, is the generation's `Execution`."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for a worker"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    generation = models.OneToOneField(
        Generation, on_delete=models.CASCADE, related_name="execution_job"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    # A running check whose lease has passed belongs to a dead worker.
    lease_until = models.DateTimeField(null=True, blank=True)
    # Why the check could not run (not the candidate's failure: that is the Execution's).
    error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = LeasedJobQuerySet.as_manager()

    def __str__(self) -> str:
        return f"Pass@1 check of {self.generation}: {self.status}"


class Execution(models.Model):
    """The sandboxed Pass@1 check of one generation's extracted code."""

    class Status(models.TextChoices):
        PASSED = "passed", "Passed"
        FAILED = "failed", "Failed"
        TIMEOUT = "timeout", "Timed out"
        ERROR = "error", "Error"

    generation = models.OneToOneField(
        Generation, on_delete=models.CASCADE, related_name="execution"
    )
    status = models.CharField(max_length=16, choices=Status.choices)
    code = models.TextField(help_text="The code extracted from the output and run.")
    stderr = models.TextField(blank=True)
    duration_s = models.FloatField()
    # "namespaces" or "guard" (guard-only: not fit for untrusted code); blank before it was kept.
    containment = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.generation}: {self.status}"

    @property
    def passed(self) -> bool:
        return self.status == self.Status.PASSED


class Pair(models.Model):
    """Two generations of one item under different conditions.

    `generation_a` is always the one whose condition comes first in the study's
    condition order, so "a" and "b" mean the same thing in every analysis."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="pairs")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="pairs")
    generation_a = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="+")
    generation_b = models.ForeignKey(Generation, on_delete=models.CASCADE, related_name="+")
    # An attention check made on the setup page: a second row of an ordinary pair's two
    # outputs, so the comparison keeps its own pair (and every judgment of it).
    gold_copy = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["study", "item", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["generation_a", "generation_b"], condition=Q(gold_copy=False),
                name="pair_unique_generations",
            ),
            models.UniqueConstraint(
                fields=["generation_a", "generation_b"], condition=Q(gold_copy=True),
                name="pair_one_gold_copy",
            ),
            models.CheckConstraint(
                condition=~Q(generation_a=models.F("generation_b")), name="pair_distinct"
            ),
        ]

    def __str__(self) -> str:
        return f"pair {self.pk} of {self.item}"

    def gold_or_none(self) -> GoldAnswer | None:
        """The pair's known answer when it is an attention check, else None."""
        return _related_or_none(self, "gold")


class AssignmentQuerySet(models.QuerySet):
    def live(self, now: datetime) -> AssignmentQuerySet:
        """Assignments that hold a place in their pair's overlap: judged, or leased and
        not yet expired (or leased without an end), and not released. The one statement of
        the "live assignment" rule: the rate page's SQL (`selectors.rater._LIVE_SQL`) is its
        translation for speed, held to it by a test in every state an assignment can be in."""
        return self.filter(
            Q(completed_at__isnull=False)
            | Q(released_at__isnull=True)
            & (Q(lease_until__isnull=True) | Q(lease_until__gt=now))
        )

    def open(self) -> AssignmentQuerySet:
        """Assignments still waiting for their rater's judgment: not judged, not released."""
        return self.filter(completed_at__isnull=True, released_at__isnull=True)


class Assignment(models.Model):
    """A pair handed to one rater, with the side each output was shown on."""

    pair = models.ForeignKey(Pair, on_delete=models.CASCADE, related_name="assignments")
    # The pair's study, kept on the row so the database can hold a rater to one open
    # assignment per study (`assignment_one_open_per_rater`).
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="+")
    rater = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments"
    )
    a_on_left = models.BooleanField(help_text="Side shown: was generation A on the left?")
    created_at = models.DateTimeField(auto_now_add=True)
    # Set with the judgment, in its transaction: the assignment queries read it as "judged".
    completed_at = models.DateTimeField(null=True, blank=True)
    # Until when the pair is held for this rater; after it, it may go to someone else.
    lease_until = models.DateTimeField(null=True, blank=True)
    # Set when an expired lease was given up because the pair got its judgments elsewhere.
    released_at = models.DateTimeField(null=True, blank=True)

    objects = AssignmentQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["pair", "rater"], name="assignment_once_per_rater"),
            # One pair at a time: parallel requests of one rater cannot hoard leases.
            models.UniqueConstraint(
                fields=["study", "rater"],
                condition=Q(completed_at__isnull=True, released_at__isnull=True),
                name="assignment_one_open_per_rater",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.pair} → {self.rater}"

    def save(self, *args, **kwargs) -> None:
        if self.study_id is None and self.pair_id is not None:
            self.study_id = Pair.objects.values_list("study_id", flat=True).get(id=self.pair_id)
        super().save(*args, **kwargs)

    def lease_expired(self, now: datetime) -> bool:
        """Whether the rater's hold on the pair has run out (a lease without an end never does)."""
        return self.lease_until is not None and self.lease_until <= now

    def judgment_or_none(self) -> Judgment | None:
        return _related_or_none(self, "judgment")

    def generation_on(self, side: str) -> Generation:
        left_is_a = self.a_on_left
        if side == "left":
            return self.pair.generation_a if left_is_a else self.pair.generation_b
        return self.pair.generation_b if left_is_a else self.pair.generation_a


class Judgment(models.Model):
    """A rater's verdict on one assignment: exactly one per assignment."""

    class Choice(models.TextChoices):
        LEFT = "left", "Left is better"
        RIGHT = "right", "Right is better"
        TIE = "tie", "Tie"
        BOTH_BAD = "both_bad", "Both are bad"

    class Winner(models.TextChoices):
        A = "a", "A"
        B = "b", "B"
        TIE = "tie", "Tie"

    assignment = models.OneToOneField(Assignment, on_delete=models.CASCADE, related_name="judgment")
    # What the rater clicked (screen side) and what it means (condition order).
    choice = models.CharField(max_length=8, choices=Choice.choices)
    winner = models.CharField(max_length=4, choices=Winner.choices)
    # "Both bad" is a tie for the analysis (winner=tie), flagged so it can be told apart.
    both_bad = models.BooleanField(default=False)
    rationale = models.TextField(blank=True, max_length=RATIONALE_MAX_CHARS)
    time_on_task_ms = models.PositiveIntegerField(null=True, blank=True)
    # For gold pairs: did the answer match the known one? None for ordinary pairs.
    gold_correct = models.BooleanField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(both_bad=False) | Q(winner="tie"), name="judgment_both_bad_is_tie"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.assignment}: {self.choice}"


class JudgeVerdict(models.Model):
    """An LLM judge's verdict on one pair shown in one order (issue 31): a worker job
    (`tasks.judge`, on the judge queue) leased, retried and swept like a generation. Kept
    beside human judgments, never counted with them unless an analysis asks. The endpoint's
    API key is read from the environment variable that settings name, never stored."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for a worker"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    class Order(models.TextChoices):
        AB = "ab", "A shown first"
        BA = "ba", "B shown first"

    pair = models.ForeignKey(Pair, on_delete=models.CASCADE, related_name="judge_verdicts")
    # "ab": the pair's generation_a is the judge's assistant A; "ba": generation_b is.
    order = models.CharField(max_length=2, choices=Order.choices)
    judge_url = models.CharField(max_length=500)
    judge_model = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    # Why the judge could not be asked (its endpoint failed past the retries); not a verdict.
    error = models.TextField(blank=True)
    # The label the judge gave ("A>B" ...), blank when its answer had none it could be read
    # as (unparseable: done, no winner); the winner in condition order like a Judgment's.
    label = models.CharField(max_length=8, blank=True)
    winner = models.CharField(max_length=4, choices=Judgment.Winner.choices, blank=True)
    answer = models.TextField(blank=True)
    answered_model = models.CharField(max_length=200, blank=True)
    # The weights' fingerprint when the endpoint reports one (our own server does): the
    # report names the shipped 135M model a weak judge by it, not by a name anyone can pick.
    answered_fingerprint = models.CharField(max_length=100, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = LeasedJobQuerySet.as_manager()

    class Meta:
        ordering = ["pair", "order", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["pair", "order", "judge_url", "judge_model"], name="judge_verdict_once"
            ),
        ]

    def __str__(self) -> str:
        return f"judge {self.judge_model} on {self.pair} ({self.order}): {self.status}"

    @property
    def unparseable(self) -> bool:
        return self.status == self.Status.DONE and not self.label


class ConditionServer(models.Model):
    """``python -m inference serve`` of one condition, started from the study page (staff):
    a process of its own on a loopback port. Its pid is recorded so that a restarted web
    process still finds it, tells whether it lives and can stop it: a server is never left
    running unseen. `annotations.services.servers` starts, checks and stops it."""

    condition = models.ForeignKey(Condition, on_delete=models.CASCADE, related_name="servers")
    port = models.PositiveIntegerField()
    pid = models.PositiveIntegerField()
    # The id clients ask for (``model`` in a request): the condition's name.
    model_name = models.CharField(max_length=100)
    started_at = models.DateTimeField(auto_now_add=True)
    # Set when it was stopped or found dead; null while it may be running.
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["condition", "-started_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["condition"], condition=Q(stopped_at__isnull=True),
                name="condition_server_one_running",
            ),
        ]

    def __str__(self) -> str:
        return f"server of {self.condition} on port {self.port} (pid {self.pid})"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


class Criterion(models.Model):
    """A question the study asks about each response on a Likert scale (e.g. readability)."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="criteria")
    name = models.CharField(max_length=50)
    question = models.CharField(max_length=200)
    scale_points = models.PositiveSmallIntegerField(default=5)
    position = models.PositiveSmallIntegerField(default=0)
    # Must a rater answer it for both responses? Optional ones may be left blank.
    required = models.BooleanField(default=True)
    # Offer "can't judge" beside the scale (stored apart from the values: no number).
    cant_judge = models.BooleanField(default=False)

    class Meta:
        ordering = ["study", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["study", "name"], name="criterion_unique_name"),
            models.CheckConstraint(
                condition=Q(scale_points__gte=2) & Q(scale_points__lte=10),
                name="criterion_scale_2_to_10",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.study}: {self.name}"

    def scale_range(self) -> range:
        return range(1, self.scale_points + 1)


class CriterionRating(models.Model):
    """One criterion's Likert values for both responses of a judgment, in condition order.

    A value is NULL where the rater gave no number: an optional criterion left blank, or
    "can't judge" (`cant_judge_a` / `_b`, a distinct answer that analyses leave out, like
    a blank). A row exists when at least one side has a value or a "can't judge"."""

    # What the rater page's form hands over for a "can't judge" answer.
    CANT_JUDGE = "cant_judge"

    judgment = models.ForeignKey(Judgment, on_delete=models.CASCADE, related_name="ratings")
    criterion = models.ForeignKey(Criterion, on_delete=models.CASCADE, related_name="ratings")
    value_a = models.PositiveSmallIntegerField(null=True, blank=True)
    value_b = models.PositiveSmallIntegerField(null=True, blank=True)
    cant_judge_a = models.BooleanField(default=False)
    cant_judge_b = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["judgment", "criterion"], name="criterion_rating_once"
            ),
            models.CheckConstraint(
                condition=(Q(value_a__isnull=True) | Q(value_a__gte=1))
                & (Q(value_b__isnull=True) | Q(value_b__gte=1)),
                name="criterion_rating_positive",
            ),
            models.CheckConstraint(
                condition=~(Q(cant_judge_a=True) & Q(value_a__isnull=False))
                & ~(Q(cant_judge_b=True) & Q(value_b__isnull=False)),
                name="criterion_rating_cant_judge_has_no_value",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.criterion.name}: a={self.value_a} b={self.value_b}"


class GoldAnswer(models.Model):
    """Marks a pair as an attention check whose correct answer is known."""

    pair = models.OneToOneField(Pair, on_delete=models.CASCADE, related_name="gold")
    winner = models.CharField(max_length=4, choices=Judgment.Winner.choices)
    note = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return f"gold {self.pair}: {self.winner}"


class Enrolment(models.Model):
    """A rater in a study: consent, crowd-platform ids, attention-check state, completion."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="enrolments")
    rater = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="enrolments"
    )
    consented_at = models.DateTimeField(null=True, blank=True)
    # Stored as Prolific sends them; shown only to staff.
    prolific_pid = models.CharField(max_length=64, blank=True)
    prolific_study_id = models.CharField(max_length=64, blank=True)
    prolific_session_id = models.CharField(max_length=64, blank=True)
    # Answers to the study's profile questions, {name: choice}; a question the rater
    # preferred not to answer is absent. Personal data: reports show only group statistics.
    profile = models.JSONField(default=dict, blank=True)
    gold_failures = models.PositiveSmallIntegerField(default=0)
    blocked_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["study", "rater"], name="enrolment_once"),
        ]

    def __str__(self) -> str:
        return f"{self.rater} in {self.study}"

    @property
    def is_blocked(self) -> bool:
        """Ended by wrong attention-check answers: no more pairs, no completion code."""
        return self.blocked_at is not None


class Invite(models.Model):
    """A link that enrols and logs in one rater: /invite/<token>/."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="invites")
    token = models.CharField(max_length=64, unique=True)
    # The rater account the link created; reopening the link logs that rater back in.
    rater = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"invite to {self.study}"
