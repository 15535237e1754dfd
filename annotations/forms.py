"""Forms for the rater's judgment and the staff study setup."""

from __future__ import annotations

import json
import re

from django import forms

from annotations import context_limit, selectors
from annotations.conditions import (
    BuiltCondition,
    build_condition,
    json_number,
    policy_check,
    policy_values,
)
from annotations.models import (
    RATER_TITLE_DEFAULT,
    RATIONALE_MAX_CHARS,
    Condition,
    Criterion,
    CriterionRating,
    Judgment,
    ModelEntry,
    Problem,
    Study,
    profile_question_problem,
)
from evaluation.prompts import task_prompt
from inference.policies import Policy

PREFER_NOT_TO_SAY = "Prefer not to say"
# Prompts too long for the model named one by one on the setup form; the rest are counted.
_PROMPT_ERRORS_SHOWN = 10


class JudgmentForm(forms.Form):
    """The rater's verdict: choice, optional rationale, and a Likert value per criterion
    and side (fields `c<id>_left`, `c<id>_right`): required where the criterion is, with
    "can't judge" (`CriterionRating.CANT_JUDGE`) where the criterion offers it."""

    choice = forms.ChoiceField(
        choices=Judgment.Choice.choices,
        error_messages={"required": "Choose left, right, tie or both bad.",
                        "invalid_choice": "Choose left, right, tie or both bad."},
    )
    rationale = forms.CharField(required=False, max_length=RATIONALE_MAX_CHARS)

    def __init__(self, *args, criteria: list[Criterion], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.criteria = criteria
        for criterion in criteria:
            scale = [(str(v), str(v)) for v in range(1, criterion.scale_points + 1)]
            if criterion.cant_judge:
                scale.append((CriterionRating.CANT_JUDGE, "Can't judge"))
            for side in ("left", "right"):
                self.fields[f"c{criterion.id}_{side}"] = forms.TypedChoiceField(
                    choices=scale, coerce=_rating_value, empty_value=None,
                    required=criterion.required, label=f"{criterion.question} ({side})",
                    error_messages={"required": f"Rate “{criterion.question}” for both responses."},
                )

    def ratings(self) -> dict[int, tuple[int | str | None, int | str | None]]:
        """criterion id -> (left, right): a value, `CANT_JUDGE`, or None (left blank)."""
        return {
            c.id: (self.cleaned_data[f"c{c.id}_left"], self.cleaned_data[f"c{c.id}_right"])
            for c in self.criteria
        }


def _rating_value(value: str) -> int | str:
    return value if value == CriterionRating.CANT_JUDGE else int(value)


class ConsentForm(forms.Form):
    """Consent, and the study's profile questions (fields `profile_<name>`), each a select
    whose empty first choice is “Prefer not to say”."""

    accept = forms.BooleanField(
        error_messages={"required": "Tick the box to take part, or close this page."}
    )

    def __init__(self, *args, questions: list[dict], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.questions = questions
        for question in questions:
            self.fields[f"profile_{question['name']}"] = forms.ChoiceField(
                label=question["label"],
                required=False,
                choices=[("", PREFER_NOT_TO_SAY)] + [(c, c) for c in question["choices"]],
                error_messages={"invalid_choice": "Choose one of the answers offered."},
            )

    def profile_fields(self) -> list[forms.BoundField]:
        return [self[f"profile_{q['name']}"] for q in self.questions]

    def profile(self) -> dict[str, str]:
        """{name: choice} of the questions answered; “prefer not to say” is left out."""
        answers = {q["name"]: self.cleaned_data[f"profile_{q['name']}"] for q in self.questions}
        return {name: choice for name, choice in answers.items() if choice}


# An error message quotes what was typed; never megabytes of it.
_MESSAGE_MAX_CHARS = 300


def _brief(message: str) -> str:
    if len(message) <= _MESSAGE_MAX_CHARS:
        return message
    return message[: _MESSAGE_MAX_CHARS - 1] + "…"


def _parse_conditions(text: str) -> list[BuiltCondition]:
    """`name = {policy JSON}` per line -> conditions, errors by line. A calibrated policy
    given only its ``target_sparsity`` is calibrated by a background job."""
    conditions = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, policy_text = line.partition("=")
        if not sep or not name.strip():
            raise forms.ValidationError(f"Line {number}: write `name = {{policy JSON}}`.")
        try:
            data = json.loads(policy_text)
            if isinstance(data, dict) and data.get("kind") == "calibrated" and (
                "thresholds" not in data
            ):
                target = data.pop("target_sparsity", None)
                values = policy_values(data)
                if target is not None:
                    percent = json_number(target, "target_sparsity") * 100
                    values["target_sparsity_percent"] = str(percent)
                built = build_condition(kind="calibrated", values=values, name=name)
            else:
                built = BuiltCondition(name=name.strip()[:100],
                                       policy=Policy.from_json(data).to_dict())
        except json.JSONDecodeError as error:
            raise forms.ValidationError(f"Line {number}: not valid JSON ({error.msg}).") from None
        except RecursionError:  # e.g. [[[[… thousands deep: a form error, not a 500
            raise forms.ValidationError(f"Line {number}: the JSON is nested too deeply.") from None
        except (ValueError, TypeError) as error:
            raise forms.ValidationError(f"Line {number}: {_brief(str(error))}") from None
        conditions.append(built)
    return conditions


# A separator: a line holding only ---, blanks around it allowed.
_PROMPT_SEPARATOR = re.compile(r"^[ \t]*---[ \t]*$", re.MULTILINE)


def prompts_split(text: str) -> list[str]:
    """The free-text prompts box -> its prompts: blocks between lines holding only ``---``;
    blank blocks are dropped, so a box of separators alone holds no prompt."""
    blocks = _PROMPT_SEPARATOR.split(text.replace("\r\n", "\n"))
    return [block.strip("\n") for block in blocks if block.strip()]


def _parse_built(rows: list[str]) -> list[BuiltCondition]:
    """The builder's rows (hidden inputs, one JSON object each), checked again."""
    built = []
    for number, row in enumerate(rows, start=1):
        try:
            built.append(BuiltCondition.from_json(row))
        except ValueError as error:
            raise forms.ValidationError(
                f"Built condition {number}: {_brief(str(error))}"
            ) from None
    return built


# The options a criterion line may end with (`name | question | optional, can't judge`).
_CRITERION_OPTIONS = {"optional": "required", "can't judge": "cant_judge",
                      "cant judge": "cant_judge"}


def _parse_criteria(text: str) -> list[dict]:
    """`name | question` per line, optionally `| optional, can't judge` ->
    [{"name", "question", "required", "cant_judge"}]."""
    criteria = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, rest = line.partition("|")
        question, _, options = rest.partition("|")
        if not sep or not name.strip() or not question.strip():
            raise forms.ValidationError(f"Line {number}: write `name | question`.")
        chosen = {o.strip().lower().replace("’", "'") for o in options.split(",") if o.strip()}
        unknown = chosen - set(_CRITERION_OPTIONS)
        if unknown:
            raise forms.ValidationError(
                f"Line {number}: “{sorted(unknown)[0]}” is not an option; "
                "write `optional` and/or `can't judge` after a third `|`."
            )
        criteria.append({
            "name": name.strip()[:50], "question": question.strip()[:200],
            "required": "optional" not in chosen,
            "cant_judge": bool(chosen & {"can't judge", "cant judge"}),
        })
    if len({c["name"] for c in criteria}) != len(criteria):
        raise forms.ValidationError("Criterion names must be different.")
    return criteria


def _parse_profile_questions(text: str) -> list[dict]:
    """`name | question | choice; choice; …` per line -> [{"name", "label", "choices"}]."""
    questions: list[dict] = []
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = [part.strip() for part in line.split("|")]
        if len(parts) != 3:
            raise forms.ValidationError(
                f"Line {number}: write `name | question | choice; choice; …`."
            )
        name, label, choices = parts
        question = {
            "name": name,
            "label": label,
            "choices": [c.strip() for c in choices.split(";") if c.strip()],
        }
        problem = profile_question_problem(question)
        if problem:
            raise forms.ValidationError(f"Line {number}: {problem}.")
        if name in lines:
            raise forms.ValidationError(
                f"Line {number}: the name “{name}” is already used on line {lines[name]}."
            )
        lines[name] = number
        questions.append(question)
    return questions


class ConditionAdminForm(forms.ModelForm):
    """A condition edited in the admin: its policy JSON is checked like the setup form's
    (types first, then the engine's own validation) before it is stored."""

    class Meta:
        model = Condition
        fields = ["study", "name", "policy", "position"]

    def clean_policy(self) -> dict:
        policy = self.cleaned_data["policy"]
        try:
            policy_check(policy)
        except (ValueError, TypeError, RecursionError) as error:
            raise forms.ValidationError(_brief(str(error))) from None
        return policy


class RaterTitleForm(forms.ModelForm):
    """The title raters see, which may change at any time (it is no part of the design)."""

    class Meta:
        model = Study
        fields = ["rater_title"]


def _gold_rate(rate: float) -> float:
    if not 0 <= rate <= 1:
        raise forms.ValidationError("A share between 0 and 1, e.g. 0.1.")
    return rate


class JudgePilotForm(forms.Form):
    """Which OpenAI-compatible endpoint judges the study's pairs (its API key is read from
    the environment variable the settings name, never typed here or stored)."""

    url = forms.URLField(
        label="Endpoint", max_length=500, assume_scheme="http",
        help_text="The base URL of an OpenAI-compatible API, e.g. http://127.0.0.1:8001/v1",
    )
    model = forms.CharField(
        label="Model", max_length=200, help_text="The model name the endpoint serves."
    )

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        if not url.startswith(("http://", "https://")):
            raise forms.ValidationError("An http:// or https:// URL.")
        return url.rstrip("/")


class GoldSettingsForm(forms.ModelForm):
    """How often raters get an attention check and how many wrong end their session: the
    setup page's gold section changes them in any state (a rater's next pair follows)."""

    class Meta:
        model = Study
        fields = ["gold_rate", "gold_block_after"]

    def clean_gold_rate(self) -> float:
        return _gold_rate(self.cleaned_data["gold_rate"])


class BuiltConditionsField(forms.Field):
    """The condition builder's rows: a list of hidden inputs named `built`."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value) -> list[str]:
        return [str(v) for v in value or []]


class StudySetupForm(forms.ModelForm):
    """Everything a researcher decides before launch, on one page."""

    built = BuiltConditionsField(required=False)
    conditions = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Conditions as JSON (optional, for experts)",
        help_text="One per line after the built ones: name = policy JSON, e.g. "
        'static 0.05 = {"kind": "static", "threshold": 0.05}. The first condition of all '
        "is the baseline.",
    )
    criteria = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        initial="correctness | How correct is this response?\n"
        "readability | How readable is this code?",
        help_text="Optional Likert questions, one per line: name | question (1–5 scale), "
        "each required for both responses unless it ends | optional; add can't judge to "
        "offer that answer (e.g. readability | How readable is it? | optional, can't judge).",
    )
    profile_questions = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Rater profile questions",
        help_text="Optional, asked on the consent page (needs a consent text), one per line: "
        "name | question | choice; choice; …  Raters may always prefer not to say. Answers "
        "are personal data: reports show only group statistics.",
    )
    datasets = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Data sets",
        help_text="Draw items from the problem library: tick one or more (e.g. HumanEval and "
        "MBPP for a mixed study); each gives “How many” problems.",
    )
    task_contains = forms.CharField(required=False, max_length=100, label="Task id contains")
    prompt_contains = forms.CharField(required=False, max_length=100, label="Prompt contains")
    item_count = forms.IntegerField(
        min_value=1, max_value=5000, initial=20, label="How many (per data set)"
    )
    seed = forms.IntegerField(initial=0, min_value=0, max_value=2**32 - 1, label="Random seed")
    prompts = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Or free-text prompts, separated by a line holding only ---.",
    )

    class Meta:
        model = Study
        fields = [
            "name", "rater_title", "description", "instructions", "consent_text", "pair_design",
            "overlap", "adaptive_assignment", "items_per_rater", "gold_rate", "gold_block_after",
            "min_response_ms", "lease_minutes", "completion_code", "completion_url",
            "min_judgments",
            "max_new_tokens", "samples_per_item", "temperature", "profile_questions",
        ]
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "instructions": forms.Textarea(attrs={"rows": 3}),
            "consent_text": forms.Textarea(attrs={"rows": 3}),
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        datasets = Problem.objects.order_by("dataset").values_list("dataset", flat=True).distinct()
        self.fields["datasets"].choices = [(d, d) for d in datasets]
        self.fields["samples_per_item"].required = False
        self.fields["temperature"].required = False
        self.fields["min_judgments"].required = False
        self.fields["rater_title"].required = False

    def clean_built(self) -> list[BuiltCondition]:
        return _parse_built(self.cleaned_data["built"])

    def clean_conditions(self) -> list[BuiltCondition]:
        conditions = self.cleaned_data.get("built", []) + _parse_conditions(
            self.cleaned_data["conditions"]
        )
        names = [c.name for c in conditions]
        if len(conditions) < 2:
            raise forms.ValidationError("A study needs at least two conditions.")
        if len(set(names)) != len(names):
            raise forms.ValidationError("Condition names must be different.")
        for number, condition in enumerate(conditions, start=1):
            problem = selectors.model_choice_problem(condition.model)
            if problem:
                raise forms.ValidationError(f"Condition {number} ({condition.name}): {problem}.")
        return conditions

    def clean_criteria(self) -> list[dict]:
        return _parse_criteria(self.cleaned_data["criteria"])

    def clean_profile_questions(self) -> list[dict]:
        return _parse_profile_questions(self.cleaned_data["profile_questions"])

    def clean_gold_rate(self) -> float:
        return _gold_rate(self.cleaned_data["gold_rate"])

    def clean_prompts(self) -> list[str]:
        text = self.cleaned_data["prompts"]
        prompts = prompts_split(text)
        if text.strip() and not prompts:
            raise forms.ValidationError(
                "The prompts box holds only separators (---): write a prompt between them, "
                "or leave the box empty."
            )
        return prompts

    def clean(self) -> dict:
        data = super().clean()
        # Optional: one greedy output per item and condition unless asked otherwise.
        if data.get("samples_per_item") is None:
            data["samples_per_item"] = 1
        if data.get("temperature") is None:
            data["temperature"] = 0.0
        if data.get("min_judgments") is None and not self.has_error("min_judgments"):
            data["min_judgments"] = 1
        if not data.get("rater_title") and not self.has_error("rater_title"):
            data["rater_title"] = RATER_TITLE_DEFAULT
        if data["samples_per_item"] > 1 and not data["temperature"] > 0:
            self.add_error(
                "temperature", "Several samples per item need sampling: set a temperature > 0."
            )
        if not data.get("datasets") and not data.get("prompts") and not self.has_error("prompts"):
            raise forms.ValidationError("Pick a data set or give free-text prompts.")
        if not self.errors:
            drawn = self._drawn(data)
            if not self.errors:
                self._refuse_prompts_past_the_context(data, drawn)
        return data

    def _drawn(self, data: dict) -> list[Problem]:
        """The problems the study will draw from every ticked data set. One that draws none
        is an error, not a study quietly missing it: every chosen data set, or no study."""
        drawn, empty = [], []
        for dataset in data.get("datasets", []):
            problems = selectors.problems_drawn(
                dataset=dataset, task_contains=data["task_contains"],
                prompt_contains=data["prompt_contains"], item_count=data["item_count"],
                seed=data["seed"],
            )
            drawn += problems
            if not problems:
                empty.append(dataset)
        if empty:
            self.add_error(
                "datasets",
                f"No problem of {', '.join(empty)} matches the filters (or can be scored "
                "here): untick it or change the filters.",
            )
        return drawn

    def _refuse_prompts_past_the_context(self, data: dict, drawn: list[Problem]) -> None:
        """Each prompt, as the study will ask it, must leave room for `max_new_tokens` in the
        model's context (`annotations.context_limit`): a form error naming the prompt."""
        free = data.get("prompts") or []
        try:
            refused = context_limit.prompts_overflow(
                free + [task_prompt(p.as_task()) for p in drawn],
                max_new_tokens=data["max_new_tokens"],
            )
        except OSError as error:
            self.add_error(None, f"The prompts cannot be checked against the model: {error}")
            return
        named = [("prompts", f"Prompt {n}") for n in range(1, len(free) + 1)] + [
            ("datasets", p.task_id) for p in drawn
        ]
        errors = [(*at, why) for at, why in zip(named, refused, strict=True) if why]
        for field, name, why in errors[:_PROMPT_ERRORS_SHOWN]:
            self.add_error(field, f"{name}: {why}.")
        if len(errors) > _PROMPT_ERRORS_SHOWN:
            self.add_error(None, f"{len(errors)} prompts are too long for the model; the first "
                                 f"{_PROMPT_ERRORS_SHOWN} are named at their fields.")


class ModelRegisterForm(forms.ModelForm):
    """A model staff add by path (on the workers' machines) under a short key."""

    class Meta:
        model = ModelEntry
        fields = ["key", "path", "display_name"]

    def clean_path(self) -> str:
        path = self.cleaned_data["path"].strip()
        if not path.startswith(("/", "~")):
            raise forms.ValidationError(
                "Give the absolute path of a Hugging Face model directory or a .gguf file as "
                "the workers see it, e.g. /models/smollm2-dpo."
            )
        return path
