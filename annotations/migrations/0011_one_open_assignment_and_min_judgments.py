"""A rater holds at most one open assignment per study, enforced by the database; a study
sets how many judgments earn the completion code (at least 1; overlap too).

Before the index is built, a rater's extra open assignments in one study (parallel
requests used to create several) are released, newest kept: their pairs go back to the
pool exactly as an expired lease given up would."""

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models
from django.utils import timezone


def release_extra_open(apps, schema_editor):
    Assignment = apps.get_model("annotations", "Assignment")
    open_ = Assignment.objects.filter(completed_at__isnull=True, released_at__isnull=True)
    kept: set[tuple[int, int]] = set()
    extra = []
    for id_, study_id, rater_id in open_.order_by("-id").values_list("id", "study_id",
                                                                      "rater_id"):
        if (study_id, rater_id) in kept:
            extra.append(id_)
        kept.add((study_id, rater_id))
    Assignment.objects.filter(id__in=extra).update(released_at=timezone.now())


class Migration(migrations.Migration):

    dependencies = [("annotations", "0010_assignment_study")]

    operations = [
        migrations.AlterField(
            model_name="assignment",
            name="study",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="+",
                to="annotations.study",
            ),
        ),
        migrations.AddField(
            model_name="study",
            name="min_judgments",
            field=models.PositiveIntegerField(
                default=1,
                help_text="Judged pairs (attention checks not counted) a rater needs before "
                "the completion code is shown.",
                validators=[django.core.validators.MinValueValidator(1)],
                verbose_name="minimum judgments",
            ),
        ),
        migrations.AlterField(
            model_name="study",
            name="overlap",
            field=models.PositiveSmallIntegerField(
                default=3, help_text="How many raters judge each pair.",
                validators=[django.core.validators.MinValueValidator(1)],
            ),
        ),
        migrations.AddConstraint(
            model_name="study",
            constraint=models.CheckConstraint(
                condition=models.Q(("min_judgments__gte", 1)), name="study_min_judgments_positive"
            ),
        ),
        migrations.RunPython(release_extra_open, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="assignment",
            constraint=models.UniqueConstraint(
                condition=models.Q(("completed_at__isnull", True), ("released_at__isnull", True)),
                fields=("study", "rater"),
                name="assignment_one_open_per_rater",
            ),
        ),
    ]
