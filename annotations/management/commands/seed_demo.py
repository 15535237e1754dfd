from django.core.management.base import BaseCommand

from annotations import pipeline, tasks
from annotations.demo import DEMO_ADMIN, DEMO_RATER, demo_seed


class Command(BaseCommand):
    help = "Create the demo admin, rater and study, and enqueue its missing generations."

    def add_arguments(self, parser):
        parser.add_argument(
            "--items", type=int, default=4, help="prompts, half HumanEval, half MBPP (default 4)"
        )
        parser.add_argument("--max-new-tokens", type=int, default=128)
        parser.add_argument("--no-enqueue", action="store_true", help="Only create the rows.")

    def handle(self, *args, items: int, max_new_tokens: int, no_enqueue: bool, **options):
        study = demo_seed(n_items=items, max_new_tokens=max_new_tokens)
        # The calibration first: the worker takes one task at a time, and the calibrated
        # conditions' generations are created when it is done.
        calibrating = not no_enqueue and tasks.calibrations_enqueue(study=study)
        created = pipeline.generations_create(study=study)
        sent = 0 if no_enqueue else tasks.generations_enqueue(study=study)
        work = (f"{sent} generation{'' if sent == 1 else 's'} sent to the worker"
                + (", calibration of the sweep sent first" if calibrating else "")
                if sent or calibrating else "nothing to generate: its outputs are done")
        self.stdout.write(
            f"Demo study #{study.id} '{study.name}': {created} generations created, {work}.\n"
            f"  admin: {DEMO_ADMIN.username} / {DEMO_ADMIN.password}\n"
            f"  rater: {DEMO_RATER.username} / {DEMO_RATER.password}"
        )
