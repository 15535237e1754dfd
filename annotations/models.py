"""Studies, conditions, items, generations, pairs, assignments and judgments.

One row per real-world thing; the database enforces what must be unique."""

from __future__ import annotations

import json

from django.conf import settings
from django.db import models
from django.db.models import Q


class Study(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        OPEN = "open", "Open for rating"
        CLOSED = "closed", "Closed"

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    # Raters enrolled in the study; only they are offered its pairs.
    raters = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="studies")
    overlap = models.PositiveSmallIntegerField(
        default=3, help_text="How many raters judge each pair."
    )
    max_new_tokens = models.PositiveIntegerField(default=128)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "studies"
        constraints = [
            models.CheckConstraint(condition=Q(overlap__gte=1), name="study_overlap_positive"),
        ]

    def __str__(self) -> str:
        return self.name

    def is_open(self) -> bool:
        return self.status == self.Status.OPEN


class Condition(models.Model):
    """One arm of the study: a threshold policy, stored as the engine's JSON."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="conditions")
    name = models.CharField(max_length=100)
    policy = models.JSONField(help_text='Engine policy, e.g. {"kind": "static", "threshold": 0.05}')
    # Fixed order used to code pairwise choices (never the screen side).
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["study", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["study", "name"], name="condition_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.study}: {self.name}"

    def policy_text(self) -> str:
        return json.dumps(self.policy, sort_keys=True)


class Problem(models.Model):
    """A benchmark problem in the library (HumanEval, MBPP, DS-1000, custom JSONL).

    Imported once by `manage.py import_dataset`; studies draw their items from here."""

    dataset = models.CharField(max_length=50)
    task_id = models.CharField(max_length=100)
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


class Item(models.Model):
    """A prompt of the study, with what is needed to score its code."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="items")
    problem = models.ForeignKey(
        Problem, on_delete=models.PROTECT, null=True, blank=True, related_name="items"
    )
    dataset = models.CharField(max_length=50)
    task_id = models.CharField(max_length=100)
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

    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

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
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["study", "item", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["generation_a", "generation_b"], name="pair_unique_generations"
            ),
            models.CheckConstraint(
                condition=~Q(generation_a=models.F("generation_b")), name="pair_distinct"
            ),
        ]

    def __str__(self) -> str:
        return f"pair {self.pk} of {self.item}"


class Assignment(models.Model):
    """A pair handed to one rater, with the side each output was shown on."""

    pair = models.ForeignKey(Pair, on_delete=models.CASCADE, related_name="assignments")
    rater = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments"
    )
    a_on_left = models.BooleanField(help_text="Side shown: was generation A on the left?")
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["pair", "rater"], name="assignment_once_per_rater"),
        ]

    def __str__(self) -> str:
        return f"{self.pair} → {self.rater}"

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

    class Winner(models.TextChoices):
        A = "a", "A"
        B = "b", "B"
        TIE = "tie", "Tie"

    assignment = models.OneToOneField(Assignment, on_delete=models.CASCADE, related_name="judgment")
    # What the rater clicked (screen side) and what it means (condition order).
    choice = models.CharField(max_length=8, choices=Choice.choices)
    winner = models.CharField(max_length=4, choices=Winner.choices)
    time_on_task_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.assignment}: {self.choice}"
