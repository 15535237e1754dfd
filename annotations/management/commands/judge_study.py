from django.core.management.base import BaseCommand, CommandError

from annotations.models import JudgeVerdict, Study
from annotations.tasks import judge_verdicts_enqueue


class Command(BaseCommand):
    help = (
        "Have an LLM judge at an OpenAI-compatible endpoint judge every ordinary pair of a "
        "study in both orders, on the judge queue (a worker must consume it: -Q judge). The "
        "API key is read from the environment variable settings.JUDGE_API_KEY_ENV names "
        "(JUDGE_API_KEY by default). Safe to repeat: verdicts done or held are not redone."
    )

    def add_arguments(self, parser):
        parser.add_argument("study_id", type=int)
        parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8001/v1")
        parser.add_argument("--model", required=True, help="the model name the endpoint serves")

    def handle(self, *args, study_id: int, url: str, model: str, **options):
        study = Study.objects.filter(id=study_id).first()
        if study is None:
            raise CommandError(f"no study {study_id}")
        if not url.startswith(("http://", "https://")):
            raise CommandError(f"--url must be an http(s) URL, got {url!r}")
        sent = judge_verdicts_enqueue(study=study, url=url, model=model)
        total = JudgeVerdict.objects.filter(pair__study=study, judge_url=url, judge_model=model)
        self.stdout.write(
            f"{model} at {url}: {total.count()} verdicts for study {study_id} "
            f"(both orders of each pair), {sent} sent to the judge queue"
        )
