from django.contrib import admin

from annotations.forms import ConditionAdminForm
from annotations.models import (
    Assignment,
    Condition,
    Criterion,
    CriterionRating,
    Enrolment,
    Generation,
    GoldAnswer,
    Invite,
    Item,
    Judgment,
    ModelEntry,
    Pair,
    Study,
)
from annotations.views.auth import AdminLoginForm

# The admin's log-in page counts failures and locks out like the site's own.
admin.site.login_form = AdminLoginForm


class ConditionInline(admin.TabularInline):
    model = Condition
    form = ConditionAdminForm
    extra = 1


class CriterionInline(admin.TabularInline):
    model = Criterion
    extra = 0


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "overlap", "pair_design", "items_per_rater", "created_at"]
    list_filter = ["status"]
    search_fields = ["name"]
    filter_horizontal = ["raters"]
    inlines = [ConditionInline, CriterionInline]


@admin.register(ModelEntry)
class ModelEntryAdmin(admin.ModelAdmin):
    list_display = ["key", "display_name", "status", "path", "created_at"]
    list_filter = ["status"]
    # What the worker found: staff register and re-validate on the models page.
    readonly_fields = ["description", "status", "error"]


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ["task_id", "dataset", "study"]
    list_filter = ["study", "dataset"]
    search_fields = ["task_id", "prompt"]


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin):
    list_display = ["item", "condition", "sample_index", "status", "attempts", "active_fraction",
                    "tokens_per_s"]
    list_filter = ["status", "condition__study", "condition"]
    readonly_fields = ["telemetry"]


@admin.register(Pair)
class PairAdmin(admin.ModelAdmin):
    list_display = ["id", "study", "item", "generation_a", "generation_b"]
    list_filter = ["study"]
    raw_id_fields = ["item", "generation_a", "generation_b"]


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["id", "pair", "rater", "a_on_left", "created_at", "lease_until",
                    "completed_at", "released_at"]
    list_filter = ["pair__study"]
    raw_id_fields = ["pair"]
    # Set only with a judgment (selectors.rater._LIVE_SQL reads it as "judged").
    readonly_fields = ["completed_at"]


class CriterionRatingInline(admin.TabularInline):
    model = CriterionRating
    extra = 0


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    list_display = ["id", "assignment", "choice", "winner", "both_bad", "gold_correct",
                    "time_on_task_ms", "created_at"]
    list_filter = ["winner", "both_bad", "gold_correct", "assignment__pair__study"]
    raw_id_fields = ["assignment"]
    inlines = [CriterionRatingInline]


@admin.register(GoldAnswer)
class GoldAnswerAdmin(admin.ModelAdmin):
    """Attention checks: pick a pair whose better side is known (e.g. one output is broken)."""

    list_display = ["pair", "winner", "note"]
    list_filter = ["pair__study"]
    raw_id_fields = ["pair"]


@admin.register(Enrolment)
class EnrolmentAdmin(admin.ModelAdmin):
    list_display = ["rater", "study", "consented_at", "prolific_pid", "gold_failures",
                    "blocked_at", "completed_at"]
    list_filter = ["study"]
    search_fields = ["prolific_pid", "rater__username"]
    raw_id_fields = ["rater"]


@admin.register(Invite)
class InviteAdmin(admin.ModelAdmin):
    list_display = ["study", "token", "rater", "created_at", "used_at"]
    list_filter = ["study"]
    raw_id_fields = ["rater"]
