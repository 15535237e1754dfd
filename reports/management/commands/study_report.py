"""`manage.py study_report STUDY_ID --out DIR`: the report's files, as the staff page has them."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotations.models import Study
from reports.build import cached_report_files


class Command(BaseCommand):
    help = "Write a study's report (report.html, CSV and JSON exports) into a folder."

    def add_arguments(self, parser):
        parser.add_argument("study_id", type=int)
        parser.add_argument("--out", required=True, type=Path, help="Folder to write into.")
        parser.add_argument(
            "--bootstrap", type=int, default=None, help="Resamples (default 1000, as the page)"
        )
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, study_id: int, out: Path, bootstrap: int | None, seed: int, **options):
        study = Study.objects.filter(id=study_id).first()
        if study is None:
            raise CommandError(f"no study with id {study_id}")
        if bootstrap is not None and bootstrap < 0:
            raise CommandError("--bootstrap must be 0 or more")
        # Through the page's cache: the same files as the page, and the page starts warm.
        files = cached_report_files(study, bootstrap=bootstrap, seed=seed)
        out.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            (out / name).write_bytes(content)
        self.stdout.write(f"Wrote {', '.join(files)} to {out}")
