"""The rater flow and the study page in a real headless chromium."""

import pytest

from annotations.models import Assignment, Generation, Judgment, Study
from tests.annotations.conftest import finish_generations, make_study
from tests.support.browser import browser_page, log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def wait_for_next_pair(page, judged: int) -> None:
    """Wait until the fragment for the next pair is swapped in *and* settled: htmx wires
    up new content during settle, and a click before that would submit the form natively."""
    page.wait_for_selector(f"text={judged} judged")
    page.wait_for_function(
        "!document.querySelector('.htmx-request, .htmx-settling, .htmx-swapping, .htmx-added')"
    )


def test_rater_judges_pairs_with_keys_and_clicks_without_reload(live_server, users):
    staff, alice, _ = users
    study = make_study(n_items=2, raters=[alice], overlap=1)
    finish_generations(study)
    with browser_page(live_server.url) as page:
        log_in(page, "alice", "pw-alice-123")
        page.get_by_role("link", name=study.name, exact=True).click()
        page.wait_for_selector("#pair .choices")
        screenshot(page, "rater-pair")
        html = page.content()
        for condition in study.conditions.all():
            assert condition.name not in html, f"condition {condition.name!r} visible to rater"
        # A marker on window survives only if htmx swaps the fragment (no full reload).
        page.evaluate("window.__noReload = true")
        first = Assignment.objects.get(rater=alice)
        page.keyboard.press("1")
        wait_for_next_pair(page, 1)
        assert f"/assignments/{first.id}/" not in page.content(), "the judged pair is still shown"
        assert page.evaluate("window.__noReload") is True, "the page reloaded instead of swapping"
        page.click("button[value=tie]")
        wait_for_next_pair(page, 2)
        page.keyboard.press("ArrowRight")
        wait_for_next_pair(page, 3)
        assert page.evaluate("window.__noReload") is True
        judgments = list(Judgment.objects.filter(assignment__rater=alice).order_by("id"))
        assert [j.choice for j in judgments[:3]] == ["left", "tie", "right"]
        for j in judgments:
            expected = {"left": "a" if j.assignment.a_on_left else "b",
                        "right": "b" if j.assignment.a_on_left else "a", "tie": "tie"}[j.choice]
            assert j.winner == expected
            assert j.time_on_task_ms is not None and j.time_on_task_ms >= 0
        for judged in (4, 5, 6):
            page.keyboard.press("0")
            wait_for_next_pair(page, judged)
        page.wait_for_selector("text=All done")
        screenshot(page, "rater-done")
    assert Judgment.objects.filter(assignment__rater=alice).count() == 6


def test_staff_sees_progress_alpha_and_win_rates(live_server, users):
    staff, alice, _ = users
    study = make_study(n_items=2, raters=[alice], overlap=1)
    finish_generations(study)
    with browser_page(live_server.url) as page:
        log_in(page, "staff", "pw-staff-123")
        page.get_by_role("link", name=study.name, exact=True).click()
        page.wait_for_selector("#win-rates")
        assert "6 / 6" in page.inner_text("#progress")
        assert "Krippendorff" in page.inner_text("#results")
        screenshot(page, "study-page")


def test_prolific_rater_consents_rates_by_keyboard_resumes_after_reload_and_finishes(
    live_server, users
):
    study = make_study(n_items=1, overlap=1)
    Study.objects.filter(id=study.id).update(
        consent_text="We store your choices and time on task.",
        instructions="Prefer code that is correct, then readable.",
        completion_code="CC-7731",
        completion_url="https://app.prolific.com/submissions/complete?cc=CC-7731",
    )
    criterion = study.criteria.create(name="readability", question="How readable is it?",
                                      scale_points=5)
    finish_generations(study)
    Generation.objects.filter(item__study=study).update(
        text="def f():\n    return '<img src=x onerror=\"window.__xss=1\">'"
    )
    with browser_page(live_server.url) as page:
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(f"/p/{study.id}/?PROLIFIC_PID=60aa11bb22cc33dd44ee55ff&STUDY_ID=s1&SESSION_ID=x1")
        page.wait_for_selector("text=Before you start")
        screenshot(page, "rater-consent")
        page.get_by_label("I have read the above").check()
        page.get_by_role("button", name="Start").click()
        page.wait_for_selector("#pair .choices")
        assert page.evaluate("window.__xss") is None, "model output ran as HTML"
        assert page.locator("#pair .hl span.k").count() > 0, "output is not highlighted"
        # Ratings are required: choosing without them keeps the pair and says why.
        page.get_by_role("radiogroup", name="How readable is it?: response 1 (left)") \
            .get_by_label("4").check()
        page.get_by_role("radiogroup", name="How readable is it?: response 2 (right)") \
            .get_by_label("2").check()
        page.fill("#rationale", "Left names things better.")
        screenshot(page, "rater-pair-criteria")
        page.keyboard.press("Escape")  # leave the comment box: keys vote again
        page.keyboard.press("1")
        wait_for_next_pair(page, 1)
        first = Judgment.objects.get(assignment__rater__username__startswith="prolific-")
        assert first.rationale == "Left names things better." and first.ratings.count() == 1
        rating = first.ratings.get(criterion=criterion)
        assert {rating.value_a, rating.value_b} == {4, 2}
        # Reload mid-study: the same open pair comes back.
        open_before = Assignment.objects.get(judgment__isnull=True)
        page.reload()
        page.wait_for_selector("#pair .choices")
        assert f"/assignments/{open_before.id}/judge/" in page.content()
        assert Assignment.objects.filter(judgment__isnull=True).count() == 1
        for judged in (2, 3):
            page.get_by_role("radiogroup", name="How readable is it?: response 1 (left)") \
                .get_by_label("3").check()
            page.get_by_role("radiogroup", name="How readable is it?: response 2 (right)") \
                .get_by_label("3").check()
            page.keyboard.press("3" if judged == 2 else "0")
            wait_for_next_pair(page, judged)
        page.wait_for_selector("text=CC-7731")
        screenshot(page, "rater-complete")
        assert not dialogs
    choices = list(Judgment.objects.order_by("id").values_list("choice", "both_bad"))
    assert choices == [("left", False), ("both_bad", True), ("tie", False)]


def test_staff_sets_up_a_study_and_launch_says_why_it_waits(live_server, users):
    with browser_page(live_server.url) as page:
        log_in(page, "staff", "pw-staff-123")
        page.goto("/staff/studies/new/")
        page.fill("#id_name", "Browser study")
        page.fill("#id_instructions", "Pick the more correct answer.")
        page.fill("#id_prompts", "Write fizzbuzz.\n---\nReverse a string.")
        page.fill("#id_completion_code", "DONE-1")
        page.fill("#p_threshold", "0.05")
        page.click("#add-condition")
        page.wait_for_selector("#built-list li:nth-child(2)")
        screenshot(page, "setup-new")
        page.get_by_role("button", name="Create draft study").click()
        page.wait_for_selector("text=Recruit raters")
        page.get_by_role("button", name="Launch").click()
        page.wait_for_selector("#launch-refused")
        assert "Generations have not been started" in page.inner_text("#launch-refused")
        page.get_by_role("button", name="New invite link").click()
        page.wait_for_selector("#invites li")
        screenshot(page, "setup-study")
    study = Study.objects.get(name="Browser study")
    assert study.status == "draft" and study.items.count() == 2
