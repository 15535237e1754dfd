"""Rater entry and page features: Prolific and invite links, consent, completion,
highlighted and escaped outputs, both bad, rationale, criteria, attention checks."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotations import selectors, services
from annotations.models import (
    Assignment,
    CriterionRating,
    Enrolment,
    Generation,
    GoldAnswer,
    Judgment,
    Study,
)
from tests.annotations.conftest import finish_generations, make_study, refused

pytestmark = pytest.mark.django_db

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def configure(study: Study, **fields) -> Study:
    Study.objects.filter(id=study.id).update(**fields)
    study.refresh_from_db()
    return study


def test_outputs_are_highlighted_and_hostile_html_stays_inert(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    finish_generations(study)
    Generation.objects.filter(item__study=study).update(text=f"def f():\n    return '{XSS}'")
    html = login(alice).get(reverse("rate", args=[study.id])).content.decode()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;" in html or "&lt;" in html
    assert '<span class="k">def</span>' in html, "Pygments markup expected"


def test_rate_page_shows_all_four_choices_and_the_shortcuts(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    configure(study, instructions="Prefer <i>correct</i> code.")
    finish_generations(study)
    html = login(alice).get(reverse("rate", args=[study.id])).content.decode()
    for value in ("left", "right", "tie", "both_bad"):
        assert f'value="{value}"' in html
    assert "<kbd>3</kbd>" in html and 'id="shortcuts"' in html
    assert "Prefer &lt;i&gt;correct&lt;/i&gt; code." in html
    assert 'for="rationale"' in html


def test_both_bad_with_rationale_and_criteria_over_htmx(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    criterion = study.criteria.create(name="correct", question="Is it correct?", scale_points=5)
    finish_generations(study)
    client = login(alice)
    client.get(reverse("rate", args=[study.id]))
    a = Assignment.objects.get(rater=alice)
    url = reverse("judge", args=[a.id])
    missing = client.post(url, {"choice": "both_bad"}, HTTP_HX_REQUEST="true")
    assert missing.status_code == 200 and "for both responses" in missing.content.decode()
    assert not Judgment.objects.exists(), "a judgment without the required ratings was stored"
    client.post(
        url,
        {"choice": "both_bad", "rationale": "neither runs", f"c{criterion.id}_left": "1",
         f"c{criterion.id}_right": "2"},
        HTTP_HX_REQUEST="true",
    )
    judgment = Judgment.objects.get()
    assert judgment.both_bad and judgment.winner == "tie" and judgment.rationale == "neither runs"
    assert judgment.ratings.count() == 1


def test_an_optional_criterion_may_be_left_blank_and_cant_judge_is_its_own_answer(users):
    """Likert was required by the browser whatever the study wanted: a criterion is
    required or optional, and may offer "can't judge", stored apart from the values so
    analyses and exports leave it out."""
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice], overlap=1)
    required = study.criteria.create(name="correct", question="Is it correct?")
    optional = study.criteria.create(name="style", question="Is it idiomatic?", position=1,
                                     required=False, cant_judge=True)
    finish_generations(study)
    client = login(alice)
    html = client.get(reverse("rate", args=[study.id])).content.decode()
    assert f'name="c{optional.id}_left" value="cant_judge"' in html
    assert f'name="c{required.id}_left" value="cant_judge"' not in html, "not offered there"
    assert f'name="c{optional.id}_left" value="1" data-likert-key="q">' in html, "not required"
    a = Assignment.objects.get(rater=alice)
    url = reverse("judge", args=[a.id])
    refused = client.post(url, {"choice": "tie", f"c{required.id}_left": "cant_judge",
                                f"c{required.id}_right": "2"}, HTTP_HX_REQUEST="true")
    assert refused.status_code == 200 and not Judgment.objects.exists()
    client.post(url, {"choice": "tie", f"c{required.id}_left": "4", f"c{required.id}_right": "2",
                      f"c{optional.id}_left": "cant_judge"}, HTTP_HX_REQUEST="true")
    judgment = Judgment.objects.get()
    rows = {r.criterion.name: r for r in judgment.ratings.select_related("criterion")}
    left_is_a = a.a_on_left
    style = rows["style"]
    assert (style.cant_judge_a, style.cant_judge_b) == (left_is_a, not left_is_a)
    assert (style.value_a, style.value_b) == (None, None), "no number for can't judge or blank"
    assert {rows["correct"].value_a, rows["correct"].value_b} == {4, 2}
    # Exports: "cant_judge" where the rater said so, no row for the blank side; the table
    # the statistics read has only ratings with both values.
    from reports.study_tables import criterion_ratings_table, judgment_rows, rating_rows

    names = selectors.rater_pseudonyms(study)
    exported = rating_rows(study, judgment_rows(study, names, counted=set()))
    assert sorted((r["criterion"], r["value"]) for r in exported) == [
        ("correct", 2), ("correct", 4), ("style", "cant_judge")]
    assert list(criterion_ratings_table(study)["criterion"]) == ["correct"]


def test_overlong_rationale_is_a_form_error(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    finish_generations(study)
    a = services.assignment_next(study=study, rater=alice)
    response = login(alice).post(
        reverse("judge", args=[a.id]), {"choice": "tie", "rationale": "x" * 1001},
        HTTP_HX_REQUEST="true",
    )
    assert "at most 1000 characters" in response.content.decode()
    assert not Judgment.objects.exists()


def test_consent_is_required_and_timestamped(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    configure(study, consent_text="We record your choices.")
    finish_generations(study)
    client = login(alice)
    response = client.get(reverse("rate", args=[study.id]))
    assert response.status_code == 302 and response.url == reverse("consent", args=[study.id])
    assert client.post(reverse("consent", args=[study.id]), {}).status_code == 400
    response = client.post(reverse("consent", args=[study.id]), {"accept": "yes"})
    assert response.url == reverse("rate", args=[study.id])
    assert Enrolment.objects.get(study=study, rater=alice).consented_at is not None
    assert client.get(reverse("rate", args=[study.id])).status_code == 200
    # Back from the rating page: never the consent form again, and nothing cached to show.
    again = client.get(reverse("consent", args=[study.id]))
    assert again.status_code == 302 and again.url == reverse("rate", args=[study.id])
    assert "no-store" in again["Cache-Control"]


def test_judge_refused_before_consent(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    finish_generations(study)
    a = services.assignment_next(study=study, rater=alice)
    configure(study, consent_text="We record your choices.")
    assert login(alice).post(reverse("judge", args=[a.id]), {"choice": "tie"}).status_code == 400


def test_prolific_entry_creates_and_logs_in_the_rater(users):
    study = make_study(n_items=1)
    finish_generations(study)
    client = Client()
    url = reverse("prolific_entry", args=[study.id])
    query = "?PROLIFIC_PID=5f1a2b3c4d5e6f7a8b9c0d1e&STUDY_ID=st1&SESSION_ID=se1"
    response = client.get(url + query)
    assert response.status_code == 302 and response.url == reverse("rate", args=[study.id])
    enrolment = Enrolment.objects.get(study=study)
    assert (enrolment.prolific_pid, enrolment.prolific_study_id, enrolment.prolific_session_id) == (
        "5f1a2b3c4d5e6f7a8b9c0d1e", "st1", "se1")
    assert client.get(reverse("rate", args=[study.id])).status_code == 200
    # The same PID comes back to the same account.
    Client().get(url + query)
    assert get_user_model().objects.filter(username__startswith="prolific-").count() == 1


@pytest.mark.parametrize("query", ["", "?PROLIFIC_PID=<script>", "?PROLIFIC_PID=a&STUDY_ID=a b"])
def test_prolific_entry_rejects_bad_ids_clearly(query):
    study = make_study(n_items=1)
    response = Client().get(reverse("prolific_entry", args=[study.id]) + query)
    assert response.status_code == 400 and b"does not work" in response.content


def test_prolific_entry_to_a_closed_study_is_404():
    study = make_study(n_items=1)
    configure(study, status=Study.Status.CLOSED)
    url = reverse("prolific_entry", args=[study.id]) + "?PROLIFIC_PID=abc"
    assert Client().get(url).status_code == 404


def test_prolific_id_is_not_shown_to_other_raters(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    finish_generations(study)
    Client().get(reverse("prolific_entry", args=[study.id]) + "?PROLIFIC_PID=SECRETPID123")
    for name in ("home", "rate"):
        url = reverse(name) if name == "home" else reverse(name, args=[study.id])
        assert "SECRETPID123" not in login(alice).get(url).content.decode()


def test_invite_link_enrols_and_logs_in_once(users):
    study = make_study(n_items=1)
    finish_generations(study)
    invite = services.invite_create(study=study)
    client = Client()
    response = client.get(reverse("invite_entry", args=[invite.token]))
    assert response.url == reverse("rate", args=[study.id])
    invite.refresh_from_db()
    assert invite.rater is not None and study.raters.filter(id=invite.rater_id).exists()
    assert client.get(reverse("rate", args=[study.id])).status_code == 200
    Client().get(reverse("invite_entry", args=[invite.token]))
    invite.refresh_from_db()
    assert get_user_model().objects.filter(username__startswith="rater-").count() == 1


def test_unknown_invite_is_404():
    assert Client().get(reverse("invite_entry", args=["nope"])).status_code == 404


def test_out_of_work_shows_the_completion_code_and_redirect(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice], overlap=1)
    url = "https://app.prolific.com/submissions/complete?cc=C0DE42"
    configure(study, completion_code="C0DE42", completion_url=url)
    finish_generations(study)
    client = login(alice)
    while (a := services.assignment_next(study=study, rater=alice)) is not None:
        services.judgment_submit(assignment=a, choice="tie")
    html = client.get(reverse("rate", args=[study.id])).content.decode()
    assert "C0DE42" in html and url.replace("&", "&amp;") in html
    assert Enrolment.objects.get(study=study, rater=alice).completed_at is not None
    assert "C0DE42" in client.get(reverse("complete", args=[study.id])).content.decode()


def test_wrong_gold_answer_warns_then_blocks(users):
    _, alice, _ = users
    study = make_study(n_items=2, raters=[alice], overlap=1)
    configure(study, gold_rate=1.0, gold_block_after=2, completion_code="NOPE")
    finish_generations(study)
    pairs = list(study.pairs.all()[:2])
    for pair in pairs:
        GoldAnswer.objects.create(pair=pair, winner="a")
    client = login(alice)
    for expected in ("attention check", "session has ended"):
        client.get(reverse("rate", args=[study.id]))
        a = Assignment.objects.filter(rater=alice, judgment__isnull=True).get()
        wrong = "right" if a.a_on_left else "left"
        html = client.post(reverse("judge", args=[a.id]), {"choice": wrong},
                           HTTP_HX_REQUEST="true").content.decode()
        assert expected in html
    assert "NOPE" not in html, "a blocked rater gets no completion code"
    assert study not in selectors.studies_for_rater(alice), "blocked raters lose the study"


def test_too_fast_answer_is_refused_with_a_message(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    configure(study, min_response_ms=60_000)
    finish_generations(study)
    a = services.assignment_next(study=study, rater=alice)
    html = login(alice).post(reverse("judge", args=[a.id]), {"choice": "tie"},
                             HTTP_HX_REQUEST="true").content.decode()
    assert "very quick" in html and f"/assignments/{a.id}/judge/" in html
    assert not Judgment.objects.exists()


@pytest.mark.parametrize("name", ["consent", "judge"])
def test_rater_posts_require_csrf(users, name):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    finish_generations(study)
    a = services.assignment_next(study=study, rater=alice)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    url = reverse(name, args=[study.id if name == "consent" else a.id])
    response = client.post(url, {"accept": "yes", "choice": "tie"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 403


def test_diff_view_is_escaped_and_blind(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    finish_generations(study)
    Generation.objects.filter(item__study=study).update(text=XSS)
    a = services.assignment_next(study=study, rater=alice)
    Generation.objects.filter(id=a.generation_on("left").id).update(text=XSS + "\nextra")
    html = login(alice).get(reverse("rate", args=[study.id])).content.decode()
    diff = html[html.index('class="diff"'):html.index('class="judgment"')]
    assert "Show the differences" in diff and '<span class="gd">' in diff
    assert "<script>" not in html and "<img" not in html


def test_paused_study_tells_the_rater_to_come_back(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    configure(study, status=Study.Status.PAUSED)
    response = login(alice).get(reverse("rate", args=[study.id]))
    assert response.status_code == 200 and b"paused" in response.content


def test_htmx_submit_to_a_closed_study_explains_instead_of_failing_silently(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    finish_generations(study)
    a = services.assignment_next(study=study, rater=alice)
    configure(study, status=Study.Status.CLOSED)
    response = login(alice).post(reverse("judge", args=[a.id]), {"choice": "tie"},
                                 HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and b"was not recorded" in response.content
    assert not Judgment.objects.exists()


def test_no_rater_page_leaks_conditions_or_telemetry(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice], overlap=1)
    configure(study, consent_text="ok", completion_code="ZZ9")
    study.criteria.create(name="readability", question="How readable?")
    finish_generations(study)
    client = login(alice)
    pages = [client.get(reverse("consent", args=[study.id]))]
    client.post(reverse("consent", args=[study.id]), {"accept": "yes"})
    pages.append(client.get(reverse("rate", args=[study.id])))
    while (a := services.assignment_next(study=study, rater=alice)) is not None:
        pages.append(client.post(reverse("judge", args=[a.id]), {
            "choice": "tie", f"c{study.criteria.get().id}_left": "3",
            f"c{study.criteria.get().id}_right": "3"}, HTTP_HX_REQUEST="true"))
    pages += [client.get(reverse("complete", args=[study.id])), client.get(reverse("home"))]
    assert "ZZ9" in pages[-3].content.decode()
    for response in pages:
        html = response.content.decode()
        for leak in ("dense", "static t=", "dynamic", "threshold", "policy", "active_fraction",
                     "tokens_per_s", "latency"):
            assert leak not in html, f"{leak!r} leaked in {response.request['PATH_INFO']}"


def test_progress_counted_on_the_way_equals_progress_counted_afresh(users):
    # The rate page reuses assignment_next's candidate count instead of counting again:
    # both must give the rater the same "N judged · M to go".
    _, alice, bob = users
    study = make_study(n_items=3, raters=[alice, bob], overlap=1)
    finish_generations(study)
    services.judgment_submit(
        assignment=services.assignment_next(study=study, rater=bob), choice="tie"
    )
    client = login(alice)
    for _ in range(3):
        html = client.get(reverse("rate", args=[study.id])).content.decode()
        fresh = selectors.rater_progress(study, alice)
        assert f"{fresh.judged} judged · {fresh.remaining} to go" in html
        a = Assignment.objects.get(rater=alice, judgment__isnull=True)
        services.judgment_submit(assignment=a, choice="left")


def test_rate_page_query_count_is_bounded(users, django_assert_max_num_queries):
    # A regression guard for the page every rater loads per pair (docs/benchmarks.md, Load):
    # session, user, enrolment with its study, the rater's history, candidates, the lease
    # (lock, then room and insert in one statement, inside a savepoint here), criteria,
    # what is shown — and no query per criterion, per output or per earlier assignment.
    # A rater who has answered nothing yet: two more, the study's lock and one read of the
    # newcomers' share (services.pairs_assignments._newcomer_room).
    _, alice, _ = users
    study = make_study(n_items=4, raters=[alice], overlap=1)
    finish_generations(study)
    client = login(alice)
    client.get(reverse("rate", args=[study.id]))
    Assignment.objects.filter(rater=alice).update(released_at=timezone.now())
    with django_assert_max_num_queries(13):
        assert client.get(reverse("rate", args=[study.id])).status_code == 200
    judged = Assignment.objects.get(rater=alice, released_at__isnull=True)
    assert client.post(reverse("judge", args=[judged.id]), {"choice": "tie"}).status_code == 302
    with django_assert_max_num_queries(11):
        assert client.get(reverse("rate", args=[study.id])).status_code == 200


def test_submit_query_count_is_bounded(users, django_assert_max_num_queries):
    # The submit every rater makes per pair: session, user, the assignment with its study,
    # gold answer and any judgment already made (one read), enrolment, criteria, then the
    # judgment, its ratings and the assignment's end in a savepoint (four with it here).
    _, alice, _ = users
    study = make_study(n_items=2, raters=[alice], overlap=1)
    criteria = [study.criteria.create(name=f"c{i}", question=f"q{i}?") for i in range(3)]
    finish_generations(study)
    client = login(alice)
    client.get(reverse("rate", args=[study.id]))
    a = Assignment.objects.get(rater=alice)
    form = {"choice": "left", **{f"c{c.id}_{side}": "3" for c in criteria
                                 for side in ("left", "right")}}
    with django_assert_max_num_queries(10):
        assert client.post(reverse("judge", args=[a.id]), form).status_code == 302
    assert CriterionRating.objects.filter(judgment__assignment=a).count() == 3
    with django_assert_max_num_queries(5):  # a replay: the judgment comes with the assignment
        assert client.post(reverse("judge", args=[a.id]), form).status_code == 302
    assert Judgment.objects.filter(assignment=a).count() == 1


def test_outputs_are_highlighted_when_paired_not_on_a_raters_clock(users):
    from django.core.cache import caches

    from annotations import highlight

    _, alice, _ = users
    caches["html"].clear()
    study = make_study(n_items=1, raters=[alice], overlap=1)
    finish_generations(study)  # makes the pairs
    texts = set(Generation.objects.filter(item__study=study).values_list("text", flat=True))
    assert len(texts) == 3
    for text in texts:
        key = highlight._key(highlight._OUTPUT, text)
        assert caches["html"].has_key(key), "output not highlighted yet"
    pairs = [(p.generation_a.text, p.generation_b.text) for p in study.pairs.all()]
    assert len(pairs) == 3
    for a, b in pairs:
        for left, right in ((a, b), (b, a)):
            key, _ = highlight._diff(left, right)
            assert caches["html"].has_key(key), "diff not built for one of the sides"
    assert highlight.pairs_warm(pairs) == 0, "warming twice must build nothing"
    html = login(alice).get(reverse("rate", args=[study.id])).content.decode()
    assert '<span class="k">def</span>' in html


def test_a_refused_submit_keeps_what_was_typed(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    criterion = study.criteria.create(name="readability", question="How readable?")
    configure(study, min_response_ms=60_000)
    finish_generations(study)
    a = services.assignment_next(study=study, rater=alice)
    form = {"choice": "tie", "rationale": "Left <b>misses</b> the edge case",
            f"c{criterion.id}_left": "4", f"c{criterion.id}_right": "2"}
    html = login(alice).post(reverse("judge", args=[a.id]), form,
                             HTTP_HX_REQUEST="true").content.decode()
    assert "very quick" in html
    assert ">Left &lt;b&gt;misses&lt;/b&gt; the edge case</textarea>" in html
    assert f'name="c{criterion.id}_left" value="4" data-likert-key="r" required checked' in html
    assert f'name="c{criterion.id}_right" value="2" data-likert-key="u" required checked' in html


def test_a_submit_refused_for_a_lost_lease_shows_the_rationale(users):
    _, alice, bob = users
    study = make_study(n_items=1, overlap=1, raters=[alice, bob],
                       conditions=[("dense", {"kind": "dense"}), ("s", {"kind": "dense"})])
    finish_generations(study)
    held = services.assignment_next(study=study, rater=alice)
    Assignment.objects.filter(id=held.id).update(lease_until=timezone.now())
    services.judgment_submit(assignment=services.assignment_next(study=study, rater=bob),
                             choice="tie")
    html = login(alice).post(reverse("judge", args=[held.id]),
                             {"choice": "left", "rationale": "careful reading"},
                             HTTP_HX_REQUEST="true").content.decode()
    assert "ran out" in html and "careful reading" in html


@pytest.mark.parametrize("htmx", [True, False])
def test_a_resubmit_of_a_judged_pair_says_so(users, htmx):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    finish_generations(study)
    a = services.assignment_next(study=study, rater=alice)
    client = login(alice)
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    client.post(reverse("judge", args=[a.id]), {"choice": "left"}, **headers)
    again = client.post(reverse("judge", args=[a.id]), {"choice": "right"}, **headers,
                        follow=not htmx)
    html = again.content.decode()
    assert "You had already answered that pair; your first answer stands." in html
    assert Judgment.objects.get(assignment=a).choice == "left"
    if not htmx:  # said once, not on every later page
        later = client.get(reverse("rate", args=[study.id])).content.decode()
        assert "already answered" not in later


def test_rate_pages_are_never_cached(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    finish_generations(study)
    client = login(alice)
    rate = client.get(reverse("rate", args=[study.id]))
    a = Assignment.objects.get(rater=alice)
    judge = client.post(reverse("judge", args=[a.id]), {"choice": "left"},
                        HTTP_HX_REQUEST="true")
    complete = client.get(reverse("complete", args=[study.id]))
    for response in (rate, judge, complete):
        assert "no-store" in response["Cache-Control"], response.request["PATH_INFO"]


def test_get_on_the_judge_url_goes_back_to_the_pair(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    finish_generations(study)
    a = services.assignment_next(study=study, rater=alice)
    response = login(alice).get(reverse("judge", args=[a.id]))
    assert response.status_code == 302 and response["Location"] == reverse("rate",
                                                                            args=[study.id])


def test_likert_keys_are_shown_beside_the_scales(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    study.criteria.create(name="readability", question="How readable?")
    study.criteria.create(name="ten", question="Ten points?", scale_points=10)
    finish_generations(study)
    html = login(alice).get(reverse("rate", args=[study.id])).content.decode()
    assert "<kbd>q</kbd>" in html and "<kbd>p</kbd>" in html and 'id="shortcuts"' in html
    assert html.count("data-likert-key=") == 10, "keys only on scales of up to 5 points"


# What the rate page and the submit answer in each state the one rule refuses
# (`services.judging_refusal`, which `judgment_submit` asks too: test_services_judgments.py).
_PAGES = {
    services.Refusal.NOT_STARTED: (200, "has not started yet", 200, "was not recorded"),
    services.Refusal.STOPPED: (200, "paused", 200, "was not recorded"),
    services.Refusal.NO_CONSENT: (302, "", 400, "consent form first"),
    services.Refusal.BLOCKED: (200, "Your session has ended", 200,
                               "session in this study has ended"),
}


@pytest.mark.parametrize("refusal", list(_PAGES), ids=lambda r: r.name)
def test_the_rate_page_and_the_submit_refuse_by_the_one_rule(leased, refusal):
    refused(leased, refusal)
    page_status, page_text, submit_status, submit_text = _PAGES[refusal]
    client = login(leased.rater)
    page = client.get(reverse("rate", args=[leased.pair.study_id]))
    assert page.status_code == page_status and page_text in page.content.decode()
    if refusal is services.Refusal.NO_CONSENT:
        assert page.url == reverse("consent", args=[leased.pair.study_id])
    submit = client.post(reverse("judge", args=[leased.id]), {"choice": "tie"},
                         HTTP_HX_REQUEST="true")
    assert submit.status_code == submit_status and submit_text in submit.content.decode()
    assert not Judgment.objects.exists()


def test_a_judged_pair_submitted_again_keeps_its_first_answer(leased):
    client = login(leased.rater)
    client.post(reverse("judge", args=[leased.id]), {"choice": "left"}, HTTP_HX_REQUEST="true")
    again = client.post(reverse("judge", args=[leased.id]), {"choice": "right"},
                        HTTP_HX_REQUEST="true")
    assert services.Refusal.JUDGED.value in again.content.decode()
    assert Judgment.objects.get().choice == "left"
