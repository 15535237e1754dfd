"""The rater flow and the study page in a real headless chromium."""

import pytest

from annotations.models import Assignment, Judgment
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
