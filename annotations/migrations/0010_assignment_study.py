"""Assignments get their pair's study on the row (0011's one-open-assignment index needs
it): added, then filled from the pair. Its own migration, so PostgreSQL's deferred
foreign-key checks of the fill are done before 0011 alters the table."""

from django.db import migrations, models
from django.db.models import OuterRef, Subquery
import django.db.models.deletion


def study_from_pair(apps, schema_editor):
    Assignment = apps.get_model("annotations", "Assignment")
    Pair = apps.get_model("annotations", "Pair")
    Assignment.objects.filter(study__isnull=True).update(
        study_id=Subquery(Pair.objects.filter(id=OuterRef("pair_id")).values("study_id")[:1])
    )


class Migration(migrations.Migration):

    dependencies = [("annotations", "0009_execution_containment")]

    operations = [
        migrations.AddField(
            model_name="assignment",
            name="study",
            field=models.ForeignKey(
                null=True, on_delete=django.db.models.deletion.CASCADE, related_name="+",
                to="annotations.study",
            ),
        ),
        migrations.RunPython(study_from_pair, migrations.RunPython.noop),
    ]
