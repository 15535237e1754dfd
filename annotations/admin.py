from django.contrib import admin

from annotations.models import Assignment, Condition, Generation, Item, Judgment, Pair, Study


class ConditionInline(admin.TabularInline):
    model = Condition
    extra = 1


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "overlap", "created_at"]
    list_filter = ["status"]
    search_fields = ["name"]
    filter_horizontal = ["raters"]
    inlines = [ConditionInline]


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
    list_display = ["id", "pair", "rater", "a_on_left", "created_at", "completed_at"]
    list_filter = ["pair__study"]
    raw_id_fields = ["pair"]


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    list_display = ["id", "assignment", "choice", "winner", "time_on_task_ms", "created_at"]
    list_filter = ["winner", "assignment__pair__study"]
    raw_id_fields = ["assignment"]
