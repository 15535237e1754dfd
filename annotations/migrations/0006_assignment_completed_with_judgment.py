"""Every judged assignment has `completed_at` set: the assignment queries now read it as
"judged" (selectors.live_assignments). Judgments have always set it in their transaction;
this mends any row that was written otherwise, so that no judged pair is offered again."""

from django.db import migrations


def completed_from_judgments(apps, schema_editor):
    Judgment = apps.get_model("annotations", "Judgment")
    Assignment = apps.get_model("annotations", "Assignment")
    for assignment_id, created_at in Judgment.objects.filter(
        assignment__completed_at__isnull=True
    ).values_list("assignment_id", "created_at"):
        Assignment.objects.filter(id=assignment_id).update(completed_at=created_at)


class Migration(migrations.Migration):
    dependencies = [("annotations", "0005_rater_profile")]

    operations = [migrations.RunPython(completed_from_judgments, migrations.RunPython.noop)]
