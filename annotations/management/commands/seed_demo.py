from django.core.management.base import BaseCommand

from annotations import services, tasks
from annotations.demo import DEMO_ADMIN, DEMO_RATER, demo_seed
from annotations.models import Study
from annotations.selectors import calibration_state, study_progress


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
        created = services.generations_create(study=study)
        sent = 0 if no_enqueue else tasks.generations_enqueue(study=study)
        # A restart may find finished outputs whose Pass@1 check never ran (safe to repeat).
        checks = 0 if no_enqueue else tasks.executions_enqueue(study=study)
        work = _work(study, sent=sent, checks=checks, calibrating=calibrating,
                     no_enqueue=no_enqueue)
        self.stdout.write(
            f"Demo study #{study.id} '{study.name}': {_outputs(study)}; {created} generation"
            f"{'' if created == 1 else 's'} created, {work}.\n"
            f"  admin: {DEMO_ADMIN.username} / {DEMO_ADMIN.password}\n"
            f"  rater: {DEMO_RATER.username} / {DEMO_RATER.password}"
        )


def _outputs(study: Study) -> str:
    """How many outputs the demo has in all, and how many of them wait for the sweep's
    calibration (their rows are created when it is done), so the banner's count is the
    README's."""
    per_condition = study.items.count() * study.samples_per_item
    total = study.conditions.count() * per_condition
    later = (study.conditions.count() - study.conditions.ready().count()) * per_condition
    if not later:
        return f"{total} outputs"
    return f"{total} outputs, {later} of them once the sweep is calibrated"


def _work(study: Study, *, sent: int, checks: int, calibrating: bool, no_enqueue: bool) -> str:
    """What the worker was given for the demo, as `make run`'s banner says it: on a restart
    often nothing, or work that an earlier run's worker still holds a lease on."""
    if no_enqueue:
        return "nothing sent (--no-enqueue)"
    given = [f"{n} {noun}{'' if n == 1 else 's'}"
             for n, noun in ((sent, "generation"), (checks, "Pass@1 check")) if n]
    if given:
        return (" and ".join(given) + " sent to the worker"
                + (", calibration of the sweep sent first" if calibrating else ""))
    if calibrating:
        return "calibration of the sweep sent to the worker"
    progress = study_progress(study)
    held = progress.total - progress.done - progress.failed - progress.cancelled
    if held or not calibration_state(study).finished:
        what = f"{held} output{'' if held == 1 else 's'}" if held else "the sweep's calibration"
        return (f"nothing sent now: {what} still leased by an earlier run's worker, "
                "taken over when the lease ends")
    failed = f", {progress.failed} failed" if progress.failed else ""
    return f"nothing to generate: its {progress.done} outputs are done{failed}"
