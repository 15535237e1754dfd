from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from annotations.services import rater_data_delete


class Command(BaseCommand):
    help = (
        "Delete a rater's personal data (account, enrolments, Prolific ids, invite links) and "
        "their judgments, freeing their pairs; --keep-judgments moves the judgments to an "
        "inactive pseudonymous account instead. All or nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--keep-judgments",
            action="store_true",
            help="Anonymize: keep the judgments under a new inactive pseudonymous account.",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Say what would be done; change nothing."
        )

    def handle(self, *args, username: str, keep_judgments: bool, dry_run: bool, **options):
        rater = get_user_model().objects.filter(username=username).first()
        if rater is None:
            raise CommandError(f"no user {username!r}")
        try:
            summary = rater_data_delete(
                rater=rater, keep_judgments=keep_judgments, dry_run=dry_run
            )
        except ValueError as error:
            raise CommandError(str(error)) from None
        if dry_run:
            self.stdout.write("Dry run: nothing was changed. It would do this:")
        for line in summary.lines():
            self.stdout.write(f"- {line}")
