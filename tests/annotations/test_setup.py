"""Staff study setup: create from the library or free text, launch rules, invites, export."""

import html
import json
import re

import pytest
from django.test import Client
from django.urls import reverse

from annotations import selectors, services
from annotations.models import (
    Condition,
    Criterion,
    Generation,
    GoldAnswer,
    Item,
    Judgment,
    Pair,
    Problem,
    Study,
)
from evaluation import datasets
from evaluation.prompts import task_prompt
from tests.annotations.conftest import finish_generations, make_study

pytestmark = pytest.mark.django_db

BASE = {
    "name": "Sparse vs dense",
    "pair_design": "vs_first",
    "overlap": "2",
    "gold_rate": "0",
    "gold_block_after": "2",
    "min_response_ms": "0",
    "lease_minutes": "30",
    "max_new_tokens": "128",
    "item_count": "3",
    "seed": "7",
    "conditions": 'dense = {"kind": "dense"}\nstatic = {"kind": "static", "threshold": 0.05}',
    "criteria": "readability | How readable?",
}


def staff_client(users) -> Client:
    client = Client()
    client.force_login(users[0])
    return client


def test_create_study_from_the_problem_library_with_a_seed(users):
    for i in range(10):
        Problem.objects.create(dataset="humaneval", task_id=f"HumanEval/{i}", prompt=f"p{i}",
                               tests="")
    client = staff_client(users)
    response = client.post(reverse("study_new"), {**BASE, "datasets": "humaneval"})
    study = Study.objects.get(name="Sparse vs dense")
    assert response.url == reverse("study_setup", args=[study.id])
    assert study.status == "draft" and study.pair_design == "vs_first"
    assert list(study.conditions.values_list("name", flat=True)) == ["dense", "static"]
    assert study.criteria.get().question == "How readable?"
    first = sorted(study.items.values_list("task_id", flat=True))
    assert len(first) == 3
    client.post(reverse("study_new"), {**BASE, "name": "again", "datasets": "humaneval"})
    again = sorted(Study.objects.get(name="again").items.values_list("task_id", flat=True))
    assert again == first, "the same seed must draw the same problems"


def test_library_items_get_their_data_sets_prompt_shown_before_launch(users):
    """MBPP as in its paper (task text, the test asserts, the function's name), HumanEval as an
    instruction over its stub: the item's prompt is what the model is asked, never the bare
    task text (which names no function: every check would fail with NameError)."""
    mbpp = [t for t in datasets.load_mbpp() if t.task_id in ("mbpp/11", "mbpp/12")]
    services.problems_import(tasks=[*mbpp, datasets.load_humaneval()[0]])
    client = staff_client(users)
    client.post(reverse("study_new"), {**BASE, "name": "mbpp", "datasets": "mbpp"})
    study = Study.objects.get(name="mbpp")
    item = study.items.get(task_id="mbpp/11")
    task = item.problem.as_task()
    assert item.prompt == task_prompt(task)
    assert item.prompt.startswith("You are an expert Python programmer")
    for test in task.metadata["test_list"]:
        assert test in item.prompt
    assert "Write the function `remove_Occ`" in item.prompt
    page = client.get(reverse("study_setup", args=[study.id])).content.decode()
    shown = re.search(r'id="item-prompts">(.*?)</section>', page, re.S).group(1)
    assert html.escape('assert remove_Occ("hello","l") == "heo"', quote=True) in shown

    client.post(reverse("study_new"), {**BASE, "name": "he", "datasets": "humaneval"})
    item = Study.objects.get(name="he").items.get()
    assert item.prompt == task_prompt(item.problem.as_task())
    assert item.prompt.startswith("Complete this Python function")


def _library(n: int = 5) -> None:
    for i in range(n):
        Problem.objects.create(dataset="humaneval", task_id=f"HumanEval/{i}", prompt=f"p{i}",
                               tests="")
        Problem.objects.create(dataset="mbpp", task_id=f"mbpp/{i}", prompt=f"m{i}", tests="")


def test_a_mixed_study_draws_its_count_from_each_ticked_data_set(users):
    _library()
    client = staff_client(users)
    page = client.get(reverse("study_new")).content.decode()
    assert 'type="checkbox" name="datasets" value="humaneval"' in page
    assert 'type="checkbox" name="datasets" value="mbpp"' in page
    client.post(reverse("study_new"),
                {**BASE, "name": "mixed", "datasets": ["humaneval", "mbpp"], "item_count": "2"})
    items = Study.objects.get(name="mixed").items
    assert sorted(items.values_list("dataset", flat=True)) == ["humaneval"] * 2 + ["mbpp"] * 2
    client.post(reverse("study_new"), {**BASE, "name": "he only", "datasets": "humaneval",
                                       "item_count": "2"})
    alone = Study.objects.get(name="he only").items.values_list("task_id", flat=True)
    mixed = items.filter(dataset="humaneval").values_list("task_id", flat=True)
    assert sorted(alone) == sorted(mixed), "the same seed draws the same problems"


def test_a_ticked_data_set_that_draws_nothing_is_an_error_and_no_study_is_made(users):
    _library()
    response = staff_client(users).post(reverse("study_new"), {
        **BASE, "name": "half", "datasets": ["humaneval", "mbpp"], "task_contains": "HumanEval",
    })
    assert response.status_code == 200
    assert "No problem of mbpp matches the filters" in response.content.decode()
    assert not Study.objects.filter(name="half").exists() and not Item.objects.exists()


def test_the_pair_count_counts_each_data_set(users):
    data = {"pair_design": "vs_first", "overlap": "1", "item_count": "10", "prompts": "",
            "conditions": 'a = {"kind": "dense"}\nb = {"kind": "dense"}'}
    client = staff_client(users)
    one = client.post(reverse("condition_count"), {**data, "datasets": ["humaneval"]})
    two = client.post(reverse("condition_count"), {**data, "datasets": ["humaneval", "mbpp"]})
    assert "10 pairs" in one.content.decode() and "20 pairs" in two.content.decode()


def test_create_study_from_free_text_prompts(users):
    prompts = "Write fizzbuzz.\n---\nReverse a list.\n  keep order stable"
    staff_client(users).post(reverse("study_new"), {**BASE, "prompts": prompts})
    items = Item.objects.filter(study__name="Sparse vs dense").order_by("task_id")
    assert [i.prompt for i in items] == ["Write fizzbuzz.", "Reverse a list.\n  keep order stable"]


@pytest.mark.parametrize(
    "conditions, message",
    [
        ('dense = {"kind": "dense"}', "at least two conditions"),
        ('dense = {"kind": "dense"}\nbad = {"kind": "static"}', "Line 2: policy &#x27;static"),
        ('dense = {"kind": "dense"}\nbad = {kind}', "Line 2: not valid JSON"),
        ('dense = {"kind": "dense"}\nweird = {"kind": "magic"}', "unknown policy kind"),
    ],
)
def test_bad_conditions_are_form_errors_with_line_numbers(users, conditions, message):
    response = staff_client(users).post(
        reverse("study_new"), {**BASE, "prompts": "x", "conditions": conditions}
    )
    assert response.status_code == 200 and message in response.content.decode()
    assert not Study.objects.exists()


def test_a_new_study_starts_generating_by_itself(users, django_capture_on_commit_callbacks):
    """Nothing to click after creating a study: its ready conditions' outputs are created and
    sent to the worker at once (the calibrated ones follow their calibration)."""
    with django_capture_on_commit_callbacks(execute=False) as sent:
        staff_client(users).post(reverse("study_new"), {**BASE, "prompts": "a\n---\nb"})
    study = Study.objects.get()
    assert Generation.objects.filter(item__study=study, status="pending").count() == 4
    assert len(sent) == 4, "every output sent to the worker"


def test_criteria_lines_say_optional_and_cant_judge(users):
    client = staff_client(users)
    client.post(reverse("study_new"), {**BASE, "prompts": "x", "criteria": (
        "readability | How readable? | optional, can't judge\ncorrect | Is it correct?")})
    rows = list(Criterion.objects.values_list("name", "required", "cant_judge"))
    assert rows == [("readability", False, True), ("correct", True, False)]
    page = client.get(reverse("study_setup", args=[Study.objects.get().id])).content.decode()
    assert "How readable? <span class=\"muted\">(optional; “can't judge” offered)" in page
    response = client.post(reverse("study_new"), {**BASE, "name": "bad", "prompts": "x",
                                                  "criteria": "r | Readable? | sometimes"})
    assert "“sometimes” is not an option" in response.content.decode()


def test_items_are_required(users):
    response = staff_client(users).post(reverse("study_new"), BASE)
    assert "Pick a data set or give free-text prompts." in response.content.decode()


def test_launch_refuses_until_generations_are_complete(users):
    study = make_study(n_items=1)
    Study.objects.filter(id=study.id).update(status=Study.Status.DRAFT)
    client = staff_client(users)
    response = client.post(reverse("study_launch", args=[study.id]))
    assert response.status_code == 409
    # It names the study page's button by its label, so a researcher can find it.
    assert (
        "Generations have not been started (use “Create and enqueue missing generations” "
        "on the study page)." in response.content.decode()
    )
    services.generations_create(study=study)
    response = client.post(reverse("study_launch", args=[study.id]))
    assert "Generations are not complete: 0 of 3 done" in response.content.decode()
    study.refresh_from_db()
    assert study.status == "draft"
    finish_generations(study)
    response = client.post(reverse("study_launch", args=[study.id]))
    study.refresh_from_db()
    assert response.status_code == 302 and study.status == "open"


def test_pause_and_close(users):
    study = make_study(n_items=1)
    client = staff_client(users)
    client.post(reverse("study_pause", args=[study.id]))
    study.refresh_from_db()
    assert study.status == "paused"
    client.post(reverse("study_close", args=[study.id]))
    study.refresh_from_db()
    assert study.status == "closed"
    assert services.study_launch(study=study) == ["The study is closed."]


def test_setup_page_shows_invites_and_the_prolific_url(users):
    study = make_study(n_items=1)
    client = staff_client(users)
    client.post(reverse("invite_new", args=[study.id]))
    html = client.get(reverse("study_setup", args=[study.id])).content.decode()
    assert reverse("invite_entry", args=[study.invites.get().token]) in html
    assert "PROLIFIC_PID={{%PROLIFIC_PID%}}" in html


@pytest.mark.parametrize("name", ["study_new", "study_setup", "study_launch", "export_preferences"])
def test_setup_is_closed_to_raters(users, name):
    study = make_study(n_items=1)
    url = reverse(name) if name == "study_new" else reverse(name, args=[study.id])
    client = Client()
    client.force_login(users[1])
    assert client.get(url).status_code == 302
    assert client.post(url).status_code == 302


def test_export_preference_pairs_as_dpo_jsonl(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice], overlap=1)
    finish_generations(study)
    choices = iter(["left", "tie", "both_bad"])
    while (a := services.assignment_next(study=study, rater=alice)) is not None:
        services.judgment_submit(assignment=a, choice=next(choices))
    response = staff_client(users).get(reverse("export_preferences", args=[study.id]))
    rows = [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]
    assert len(rows) == 1, "ties and both-bad are not preference pairs"
    row = rows[0]
    assert set(row) >= {"prompt", "chosen", "rejected", "pair_id", "judgment_id", "item_id"}
    judged = Judgment.objects.get(id=row["judgment_id"])
    pair = judged.assignment.pair
    winner = pair.generation_a if judged.winner == "a" else pair.generation_b
    assert row["chosen"] == winner.text and row["prompt"] == pair.item.prompt
    assert Condition.objects.filter(name=row["chosen_condition"]).exists()
    # The raters' pseudonyms of every other export, never a database id.
    assert row["rater"] == "rater-1" and "rater_id" not in row


@pytest.mark.parametrize("model", ["goldanswer", "enrolment", "invite", "judgment", "study"])
def test_admin_pages_for_the_rater_flow_load(admin_client, model):
    study = make_study(n_items=1)
    services.invite_create(study=study)
    assert admin_client.get(reverse(f"admin:annotations_{model}_changelist")).status_code == 200
    change = reverse("admin:annotations_study_change", args=[study.id])
    assert admin_client.get(change).status_code == 200


def test_several_samples_need_a_temperature(users):
    client = staff_client(users)
    response = client.post(reverse("study_new"), {**BASE, "prompts": "x", "samples_per_item": "5"})
    assert "Several samples per item need sampling" in response.content.decode()
    assert not Study.objects.exists()
    client.post(
        reverse("study_new"),
        {**BASE, "prompts": "x", "samples_per_item": "5", "temperature": "0.8"},
    )
    study = Study.objects.get()
    assert (study.samples_per_item, study.temperature) == (5, 0.8)


PROFILE_TEXT = (
    "experience | Years of Python? | under 1; 1 to 5; over 5\n"
    "role | Your role | student; professional"
)


def test_profile_questions_are_stored_and_shown(users):
    client = staff_client(users)
    client.post(
        reverse("study_new"),
        {**BASE, "prompts": "x", "consent_text": "ok", "profile_questions": PROFILE_TEXT},
    )
    study = Study.objects.get()
    assert study.profile_questions == [
        {"name": "experience", "label": "Years of Python?",
         "choices": ["under 1", "1 to 5", "over 5"]},
        {"name": "role", "label": "Your role", "choices": ["student", "professional"]},
    ]
    html = client.get(reverse("study_setup", args=[study.id])).content.decode()
    assert "Years of Python?" in html and "1 to 5 · over 5" in html


@pytest.mark.parametrize(
    "text, message",
    [
        ("experience | Years?", "Line 1: write `name | question | choice; choice; …`."),
        ("role | Role | a; b\nExperience | Years? | a; b", "Line 2: the name must be lower-case"),
        ("role | Role | only one", "Line 1: “role” needs at least two different choices."),
        ("role | Role | a; a", "Line 1: “role” needs at least two different choices."),
        ("role |  | a; b", "Line 1: “role” needs a label"),
        ("role | Role | a; b\n\nrole | Again | c; d", "Line 3: the name “role” is already used"),
    ],
)
def test_bad_profile_questions_are_form_errors_with_line_numbers(users, text, message):
    response = staff_client(users).post(
        reverse("study_new"),
        {**BASE, "prompts": "x", "consent_text": "ok", "profile_questions": text},
    )
    assert response.status_code == 200 and message in response.content.decode()
    assert not Study.objects.exists()


def test_profile_questions_need_a_consent_page(users):
    response = staff_client(users).post(
        reverse("study_new"), {**BASE, "prompts": "x", "profile_questions": PROFILE_TEXT}
    )
    assert "asked on the consent page: set a consent text too" in response.content.decode()
    assert not Study.objects.exists()


@pytest.mark.parametrize(
    "value, message",
    [
        ({"name": "x"}, "must be a list of questions"),
        ([{"name": "x", "label": "X", "choices": ["a", "b"], "extra": 1}], "unknown key(s) extra"),
        ([{"name": "x", "label": "X", "choices": "a, b"}], "needs a list of choices"),
        ([{"name": "x", "label": "X", "choices": ["a", "b"]}] * 2, "names must be different"),
    ],
)
def test_the_model_validates_profile_questions_too(value, message):
    from django.core.exceptions import ValidationError

    study = Study(name="s", consent_text="ok", profile_questions=value)
    with pytest.raises(ValidationError, match=re.escape(message)):
        study.full_clean()


def test_adaptive_assignment_is_off_unless_ticked(users):
    client = staff_client(users)
    client.post(reverse("study_new"), {**BASE, "name": "plain", "prompts": "x"})
    client.post(
        reverse("study_new"),
        {**BASE, "name": "adaptive", "prompts": "x", "adaptive_assignment": "on"},
    )
    chosen = dict(Study.objects.values_list("name", "adaptive_assignment"))
    assert chosen == {"plain": False, "adaptive": True}
    page = client.get(reverse("study_setup", args=[Study.objects.get(name="adaptive").id]))
    assert "adaptive: the condition pair whose win rate is least certain first" in (
        page.content.decode()
    )


def test_setup_page_states_what_the_design_can_detect(users):
    study = make_study(
        n_items=40, overlap=3, conditions=[("dense", {"kind": "dense"}), ("s", {"kind": "dense"})]
    )
    html = staff_client(users).get(reverse("study_setup", args=[study.id])).content.decode()
    # Two conditions, 120 independent verdicts: the sign test's exact power (analysis.power).
    assert "40 items × overlap 3 detect a 60/40 preference with 54 % power; 80 % needs 65 " \
        "items." in html
    three = make_study(n_items=10, overlap=2, name="three")
    html = staff_client(users).get(reverse("study_setup", args=[three.id])).content.decode()
    assert re.search(r"10 items × overlap 2 detect a 60/40 preference with (&lt;1|\d+) % power per "
                     r"comparison \(Holm across 3\); 80 % needs \d+ items\.", html)


def test_setup_page_names_the_pair_design_in_a_phrase(users):
    """'0 made so far (Each condition against the first (dense))' read as a riddle."""
    study = make_study(n_items=2, conditions=[("baseline h", {"kind": "dense"}),
                                              ("s", {"kind": "dense"})])
    Study.objects.filter(id=study.id).update(pair_design="vs_first")
    html = staff_client(users).get(reverse("study_setup", args=[study.id])).content.decode()
    design = html[html.index('id="pair-design"'):].split("</td>")[0]
    assert design.endswith(">Each condition against the first, baseline h")
    assert "0 made so far; the design asks for 2 (1 per item)" in html
    assert "((" not in html and "))" not in html
    Study.objects.filter(id=study.id).update(pair_design="all_pairs")
    html = staff_client(users).get(reverse("study_setup", args=[study.id])).content.decode()
    assert 'id="pair-design">All condition pairs<' in html


def test_overlap_zero_is_a_form_error_on_the_field_with_a_summary_on_top(users):
    response = staff_client(users).post(reverse("study_new"),
                                        {**BASE, "prompts": "x", "overlap": "0"})
    html = response.content.decode()
    assert response.status_code == 200 and not Study.objects.exists()
    assert 'id="error-summary"' in html and 'href="#id_overlap"' in html
    assert "greater than or equal to 1" in html
    assert html.index('id="error-summary"') < html.index('id="id_name"'), "summary on top"


def test_minimum_judgments_is_set_on_the_setup_page(users):
    client = staff_client(users)
    client.post(reverse("study_new"), {**BASE, "prompts": "x", "min_judgments": "5"})
    study = Study.objects.get()
    assert study.min_judgments == 5
    assert "after at least 5 judged pairs" in client.get(
        reverse("study_setup", args=[study.id])).content.decode()
    Study.objects.all().delete()
    client.post(reverse("study_new"), {**BASE, "prompts": "x"})
    assert Study.objects.get().min_judgments == 1, "at least 1 by default"
    response = client.post(reverse("study_new"),
                           {**BASE, "name": "zero", "prompts": "x", "min_judgments": "0"})
    assert 'href="#id_min_judgments"' in response.content.decode()


def test_study_page_counts_with_plurals(users):
    _, alice, _ = users
    study = make_study(n_items=1, overlap=1, raters=[alice])
    html = staff_client(users).get(reverse("study_detail", args=[study.id])).content.decode()
    assert "1 item · 3 conditions · overlap 1 rater per pair · 1 rater enrolled" in html


def test_setup_page_counts_of_one_read_in_the_singular(users):
    study = make_study(n_items=1, overlap=1, conditions=[
        ("dense", {"kind": "dense"}), ("static", {"kind": "static", "threshold": 0.05}),
    ])
    page = staff_client(users).get(reverse("study_setup", args=[study.id])).content.decode()
    assert "the design asks for 1 (1 per item), 1 judgment at 1 per pair" in page


def test_every_summary_names_its_family_site_and_target(users):
    """"static · calibrated to 25 % sparsity" read the same for site h and site input: a
    summary now says the site always, whatever the name says."""
    staff, _, _ = users
    study = make_study(n_items=1, conditions=[
        ("dense", {"kind": "dense"}),
        ("static 50% @input", {"kind": "static", "threshold": 0.0123, "site": "input"}),
        ("static 50%", {"kind": "static", "threshold": 0.0321}),
        ("fast", {"kind": "static", "threshold": 0.05, "site": "gate"}),
    ])
    client = Client()
    client.force_login(staff)
    setup = client.get(reverse("study_setup", args=[study.id])).content.decode()
    summaries = setup[setup.index('id="condition-summaries"'):].split("</td>")[0]
    page = client.get(reverse("study_detail", args=[study.id])).content.decode()
    progress = page[page.index('id="progress"'):].split("</table>")[0]
    for shown in (summaries, progress):
        for summary in ("static t=0.0123 @input", "static t=0.0321 @h", "static t=0.05 @gate"):
            assert summary in shown, shown


def test_free_text_prompts_past_the_context_are_form_errors_with_the_numbers(
    users, tiny_model_configured
):
    # The tiny model: context 256; its template adds 5 tokens to a prompt's words.
    long = " ".join(["w7"] * 198)  # 203 tokens: fits with 53 new tokens, not with 54
    prompts = f"w1 w2\n---\n{long}\n---\nw3"
    client = staff_client(users)
    response = client.post(reverse("study_new"),
                           {**BASE, "prompts": prompts, "max_new_tokens": "54"})
    assert response.status_code == 200 and not Study.objects.exists()
    message = (
        "Prompt 2: the prompt is too long for the model: 203 prompt tokens + 54 new tokens "
        "(max_new_tokens) = 257 > 256, the model's context length."
    )
    assert response.context["form"].errors["prompts"] == [message]
    assert html.escape(message) in response.content.decode()
    client.post(reverse("study_new"), {**BASE, "prompts": prompts, "max_new_tokens": "53"})
    assert Study.objects.get().items.count() == 3


def test_library_prompts_are_checked_as_the_study_asks_them(users, tiny_model_configured):
    # As asked, a custom data set's prompt is the prompt itself (evaluation.prompts).
    for i, words in enumerate([3, 250, 4]):
        Problem.objects.create(dataset="mine", task_id=f"mine/{i}", tests="",
                               prompt=" ".join(["w9"] * words))
    response = staff_client(users).post(
        reverse("study_new"), {**BASE, "datasets": "mine", "max_new_tokens": "16"}
    )
    assert not Study.objects.exists()
    assert response.context["form"].errors["datasets"] == [
        "mine/1: the prompt is too long for the model: 255 prompt tokens + 16 new tokens "
        "(max_new_tokens) = 271 > 256, the model's context length."
    ]


def test_many_prompts_past_the_context_are_named_up_to_ten_and_counted(
    users, tiny_model_configured
):
    prompts = "\n---\n".join(" ".join(["w9"] * 300) for _ in range(12))
    response = staff_client(users).post(reverse("study_new"), {**BASE, "prompts": prompts})
    errors = response.context["form"].errors
    assert [e.split(":")[0] for e in errors["prompts"]] == [f"Prompt {n}" for n in range(1, 11)]
    assert errors["__all__"] == [
        "12 prompts are too long for the model; the first 10 are named at their fields."
    ]
    assert not Study.objects.exists()


def test_a_960k_character_prompt_is_refused_before_the_gguf_was_ever_converted(
    users, settings, tmp_path
):
    # The shipped model, no converted tokenizer yet: the bound from its vocabulary refuses it.
    settings.MODEL_PATH, settings.MODEL_CACHE_DIR = "", tmp_path / "empty-cache"
    response = staff_client(users).post(reverse("study_new"), {**BASE, "prompts": "x" * 960_000})
    assert not Study.objects.exists()
    assert response.context["form"].errors["prompts"] == [
        "Prompt 1: the prompt is too long for the model: at least 11852 prompt tokens (960000 "
        "characters, none of the model's tokens covers more than 81) + 128 new tokens "
        "(max_new_tokens) = 11980 > 8192, the model's context length."
    ]


def test_gold_pairs_are_chosen_on_the_setup_page_as_extra_copies(users):
    """Staff read both outputs on the setup page and say which is better; the check is a
    copy of the pair, so the comparison keeps every pair (marking a real pair as gold took
    it out of the analysis: one comparison fell to n = 12 over 6 items)."""
    _, alice, _ = users
    study = make_study(n_items=2, raters=[alice], overlap=1)
    finish_generations(study)
    ordinary = list(Pair.objects.filter(study=study).order_by("id"))
    client = staff_client(users)
    page = client.get(reverse("study_setup", args=[study.id])).content.decode()
    assert "No gold pairs yet" in page and "Pair 1 of 6 not yet gold" in page
    shown = ordinary[0]
    # Both outputs, highlighted as raters see them (finish_generations numbers them).
    assert f"output {shown.generation_a_id}" in page and f"output {shown.generation_b_id}" in page
    response = client.post(reverse("study_gold", args=[study.id, shown.id]),
                           {"winner": "b", "index": "0"})
    assert response.status_code == 302 and response["Location"].endswith("?gold=0#gold")
    copy = Pair.objects.get(study=study, gold_copy=True)
    assert (copy.generation_a_id, copy.generation_b_id, copy.gold.winner) == (
        shown.generation_a_id, shown.generation_b_id, "b")
    assert shown.gold_or_none() is None, "the pair itself stays in its comparison"
    page = client.get(reverse("study_setup", args=[study.id])).content.decode()
    assert "Pair 1 of 5 not yet gold" in page, "the chosen pair left the candidates"
    assert "1 gold pair, each an extra copy of a pair" in page
    client.post(reverse("study_gold_settings", args=[study.id]),
                {"gold_rate": "0.2", "gold_block_after": "2"})
    page = client.get(reverse("study_setup", args=[study.id])).content.decode()
    assert "about 0.25 checks per ordinary judgment (25 % more rating time), at most 1" in page
    # The rater gets all six ordinary pairs and the check besides.
    Study.objects.filter(id=study.id).update(gold_rate=1.0)
    study.refresh_from_db()
    given = []
    while (a := services.assignment_next(study=study, rater=alice)) is not None:
        given.append(a.pair_id)
        services.judgment_submit(assignment=a, choice="right" if a.a_on_left else "left")
    assert sorted(given) == sorted([p.id for p in ordinary] + [copy.id])
    counted = selectors.judgments_for_analysis(study).counted
    assert counted.count() == 6 and Judgment.objects.get(
        assignment__pair=copy).gold_correct is True
    # Given to a rater: its answer cannot change, nor can it go.
    response = client.post(reverse("study_gold", args=[study.id, shown.id]), {"winner": ""})
    assert response.status_code == 409 and "Raters have had this gold pair" in (
        response.content.decode())
    assert Pair.objects.filter(gold_copy=True).count() == 1


def test_a_gold_pair_no_rater_had_can_be_changed_and_removed(users):
    study = make_study(n_items=1)
    finish_generations(study)
    pair = Pair.objects.filter(study=study).first()
    client = staff_client(users)
    client.post(reverse("study_gold", args=[study.id, pair.id]), {"winner": "a"})
    client.post(reverse("study_gold", args=[study.id, pair.id]), {"winner": "b"})
    assert GoldAnswer.objects.get().winner == "b"
    assert Pair.objects.filter(gold_copy=True).count() == 1
    assert client.post(reverse("study_gold", args=[study.id, pair.id]),
                       {"winner": "tie"}).status_code == 400
    client.post(reverse("study_gold", args=[study.id, pair.id]), {"winner": ""})
    assert not Pair.objects.filter(gold_copy=True).exists() and not GoldAnswer.objects.exists()
    assert Pair.objects.filter(study=study).count() == 3
