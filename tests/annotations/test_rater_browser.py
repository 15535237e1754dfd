"""The rater flow and the study page in a real headless chromium."""

import pytest

from annotations import services
from annotations.models import Assignment, CriterionRating, Generation, Judgment, Study
from tests.annotations.conftest import expire, finish_generations, make_study
from tests.support.browser import browser_page, log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def wait_for_next_pair(page, judged: int) -> None:
    """Wait until the fragment for the next pair is swapped in *and* settled: htmx wires
    up new content during settle, and a click before that would submit the form natively."""
    page.wait_for_selector(f"text={judged} judged")
    # A function, not an expression: Playwright would eval() an expression, which the
    # page's Content-Security-Policy forbids.
    page.wait_for_function(
        "() => !document.querySelector('.htmx-request, .htmx-settling, .htmx-swapping, "
        ".htmx-added')"
    )


def wait_for_page(page, selector: str) -> None:
    """After a click that loads a page: wait for `selector`, then for the page's deferred
    scripts (rate.js listens for the keys), which run only after the whole document is
    parsed: a key pressed before then does nothing (the race that made a focus wait time out
    on a loaded machine). `goto` and `go_back` wait for the load themselves."""
    page.wait_for_selector(selector)
    page.wait_for_load_state("domcontentloaded")


def test_rater_judges_pairs_with_keys_and_clicks_without_reload(live_server, users):
    staff, alice, _ = users
    study = make_study(n_items=2, raters=[alice], overlap=1, name="Static h at 25 %")
    Study.objects.filter(id=study.id).update(rater_title="Compare two answers to a task")
    finish_generations(study)
    with browser_page(live_server.url) as page:
        log_in(page, "alice", "pw-alice-123")
        page.get_by_role("link", name="Compare two answers to a task", exact=True).click()
        wait_for_page(page, "#pair .choices")
        screenshot(page, "rater-pair")
        # Blind: the title the researcher set for raters, never the study's name or the lab's.
        assert page.title() == "Compare two answers to a task"
        assert page.inner_text(".topbar .brand") == "Compare two answers to a task"
        html = page.content()
        assert study.name not in html and "Sparsity" not in html
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
        wait_for_page(page, "#pair .choices")
        assert page.evaluate("window.__xss") is None, "model output ran as HTML"
        assert page.locator("#pair .hl span.k").count() > 0, "output is not highlighted"
        # Ratings are required: choosing without them keeps the pair and says why.
        page.get_by_role("radiogroup", name="How readable is it?: response 1") \
            .get_by_label("4").check()
        page.get_by_role("radiogroup", name="How readable is it?: response 2") \
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
            page.get_by_role("radiogroup", name="How readable is it?: response 1") \
                .get_by_label("3").check()
            page.get_by_role("radiogroup", name="How readable is it?: response 2") \
                .get_by_label("3").check()
            page.keyboard.press("Escape")  # a focused radio takes no voting key
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
        page.fill("#id_rater_title", "Which answer is better?")
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
        # Generation started by itself when the study was made (no worker runs here).
        assert "Generations are not complete: 0 of 4 done" in page.inner_text("#launch-refused")
        page.get_by_role("button", name="New invite link").click()
        page.wait_for_selector("#invites li")
        assert page.input_value("#rater-title input[name=rater_title]") == (
            "Which answer is better?"
        )
        screenshot(page, "setup-study")
        # The worker's part (none runs here), then gold chosen on the page, seeing both
        # outputs, and a launch without the admin.
        study = Study.objects.get(name="Browser study")
        finish_generations(study)
        page.reload()
        page.fill("#id_gold_rate", "0.2")
        page.get_by_role("button", name="Save gold settings").click()
        page.wait_for_selector("#gold-candidate")
        assert "Output A" in page.inner_text("#gold") and "Output B" in page.inner_text("#gold")
        page.get_by_role("button", name="A is better: make it gold").click()
        page.wait_for_selector("#gold-pairs")
        assert "1 gold pair, each an extra copy" in page.inner_text("#gold-cost")
        screenshot(page, "setup-gold")
        page.get_by_role("button", name="Launch").click()
        page.wait_for_selector("text=Open for rating")
    study.refresh_from_db()
    assert study.status == "open" and study.items.count() == 2 and study.gold_rate == 0.2
    assert study.pairs.filter(gold_copy=False).count() == 2, "no comparison lost its pair"


def csp_violations(page) -> list[str]:
    """Collect the console's Content-Security-Policy complaints for the page's lifetime."""
    seen: list[str] = []
    page.on("console", lambda m: seen.append(f"{m.text} ({m.location['url']})")
            if "Content Security Policy" in m.text
            else None)
    return seen


def likert(page, side: str) -> str | None:
    return page.evaluate(
        f"(document.querySelector('fieldset.criterion input[name$=\"_{side}\"]:checked')"
        " || {}).value || null")


def study_with_a_scale(rater) -> Study:
    study = make_study(n_items=1, raters=[rater], overlap=1)
    study.criteria.create(name="readability", question="How readable is it?")
    finish_generations(study)
    return study


def open_as_alice(page, study: Study) -> None:
    log_in(page, "alice", "pw-alice-123")
    page.goto(f"/studies/{study.id}/rate/")
    page.wait_for_selector("#pair .choices")


def test_keys_never_misfire_and_likert_has_its_own(live_server, users):
    _, alice, _ = users
    study = study_with_a_scale(alice)
    with browser_page(live_server.url) as page:
        violations = csp_violations(page)
        open_as_alice(page, study)
        left = page.get_by_role("radiogroup", name="How readable is it?: response 1")
        left.get_by_label("3").click()
        # A focused radio: arrows move it, digits do nothing; nothing is submitted.
        page.keyboard.press("ArrowRight")
        assert likert(page, "left") == "4", "the arrow moves the Likert radio"
        page.keyboard.press("3")
        page.keyboard.press("1")
        page.wait_for_timeout(300)
        assert not Judgment.objects.exists(), "a key in a radio group voted"
        # Likert keys: q–t response 1, y–p response 2, on the focused question.
        page.keyboard.press("w")
        page.keyboard.press("o")
        assert (likert(page, "left"), likert(page, "right")) == ("2", "4")
        # Typing in the comment box never votes or rates.
        page.fill("#rationale", "")
        page.type("#rationale", "1 2 3 q p tie")
        assert page.input_value("#rationale") == "1 2 3 q p tie"
        assert (likert(page, "left"), likert(page, "right")) == ("2", "4")
        assert not Judgment.objects.exists()
        screenshot(page, "rater-keys")
        page.keyboard.press("Escape")
        page.keyboard.press("2")
        wait_for_next_pair(page, 1)
        judgment = Judgment.objects.get()
        assert judgment.choice == "right" and judgment.rationale == "1 2 3 q p tie"
        rating = judgment.ratings.get()
        a_on_left = judgment.assignment.a_on_left
        assert (rating.value_a, rating.value_b) == ((2, 4) if a_on_left else (4, 2))
        # Without focus in a field, the Likert keys go to the first question unanswered.
        page.keyboard.press("e")
        page.keyboard.press("y")
        assert (likert(page, "left"), likert(page, "right")) == ("3", "1")
        assert not violations, violations


def test_likert_keys_fill_each_question_in_turn_for_each_response(live_server, users):
    """With two questions, r then w rated response 1 of the first question twice: a question
    counted as unanswered until both responses had a value, so the second key overwrote the
    first instead of going on to the next question's response 1."""
    _, alice, _ = users
    study = study_with_a_scale(alice)
    study.criteria.create(name="correctness", question="How correct is it?")
    with browser_page(live_server.url) as page:
        open_as_alice(page, study)
        for key in ("r", "w", "u", "i"):
            page.keyboard.press(key)
        values = page.evaluate(
            "() => Array.from(document.querySelectorAll('#pair fieldset.criterion'))"
            ".map(f => Array.from(f.querySelectorAll('input:checked')).map(i => i.value))"
        )
        assert values == [["4", "2"], ["2", "3"]], values


def test_a_choice_key_with_a_scale_unanswered_shows_the_scale_above_the_sticky_buttons(
    live_server, users
):
    """The choice buttons stick to the bottom of the window: the browser scrolled the
    unanswered scale it focused to just inside the window, under them, out of sight."""
    _, alice, _ = users
    study = study_with_a_scale(alice)
    with browser_page(live_server.url) as page:
        page.set_viewport_size({"width": 1280, "height": 360})
        open_as_alice(page, study)
        page.keyboard.press("1")
        page.wait_for_function("() => document.activeElement.type === 'radio'")
        page.wait_for_timeout(300)
        focused_bottom = page.evaluate(
            "() => document.activeElement.closest('.likert').getBoundingClientRect().bottom"
        )
        buttons_top = page.evaluate(
            "() => document.querySelector('#pair .choices').getBoundingClientRect().top"
        )
        assert focused_bottom <= buttons_top, (focused_bottom, buttons_top)


def test_drafts_survive_reload_and_back_forward_and_go_on_submit(live_server, users):
    _, alice, _ = users
    study = study_with_a_scale(alice)
    with browser_page(live_server.url) as page:
        violations = csp_violations(page)
        open_as_alice(page, study)
        first = Assignment.objects.get(rater=alice)
        page.keyboard.press("r")
        page.keyboard.press("u")
        page.fill("#rationale", "Right handles the empty list.")
        page.reload()
        page.wait_for_selector("#pair .choices")
        assert page.input_value("#rationale") == "Right handles the empty list."
        assert (likert(page, "left"), likert(page, "right")) == ("4", "2")
        # Away and back: the page is asked for again (no-store), the draft restored.
        page.goto("/")
        page.go_back()
        page.wait_for_selector("#pair .choices")
        assert page.input_value("#rationale") == "Right handles the empty list."
        assert f"/assignments/{first.id}/judge/" in page.content()
        page.keyboard.press("Escape")
        page.keyboard.press("1")
        wait_for_next_pair(page, 1)
        assert page.input_value("#rationale") == "", "the next pair starts empty"
        assert page.evaluate("Object.keys(sessionStorage).filter(k => k.startsWith('draft:'))"
                             ) == [], "the submitted pair's draft was cleared"
        # Away and back again: no stale page of the judged pair, but the current one.
        page.goto("/")
        page.go_back()
        page.wait_for_selector("#pair")
        assert f"/assignments/{first.id}/judge/" not in page.content()
        assert "1 judged" in page.inner_text("#pair")
        assert Judgment.objects.get().rationale == "Right handles the empty list."
        assert not violations, violations


def test_a_waiting_rater_gets_the_pair_when_it_frees_up(live_server, users):
    _, alice, bob = users
    study = make_study(n_items=1, overlap=1, raters=[alice, bob],
                       conditions=[("dense", {"kind": "dense"}), ("s", {"kind": "dense"})])
    Study.objects.filter(id=study.id).update(completion_code="NOT-YET")
    finish_generations(study)
    held = services.assignment_next(study=study, rater=alice)
    with browser_page(live_server.url) as page:
        violations = csp_violations(page)
        log_in(page, "bob", "pw-bob-123")
        page.goto(f"/studies/{study.id}/rate/")
        page.wait_for_selector("#waiting")
        assert "NOT-YET" not in page.content()
        screenshot(page, "rater-waiting")
        expire(held)
        page.wait_for_selector("#pair .choices", timeout=15_000)  # the poll hands it out
        assert Assignment.objects.get(rater=bob).pair_id == held.pair_id
        assert not violations, violations


def test_draft_links_preview_and_the_error_summary(live_server, users):
    study = make_study(n_items=1, overlap=1)
    study.criteria.create(name="readability", question="How readable is it?")
    finish_generations(study)
    Study.objects.filter(id=study.id).update(status=Study.Status.DRAFT)
    with browser_page(live_server.url) as page:
        violations = csp_violations(page)
        page.goto(f"/p/{study.id}/?PROLIFIC_PID=abc&STUDY_ID=s&SESSION_ID=x")
        page.wait_for_selector("#not-started")
        screenshot(page, "rater-not-started")
        log_in(page, "staff", "pw-staff-123")
        page.goto(f"/staff/studies/{study.id}/setup/")
        page.click("#preview-link")
        wait_for_page(page, "#preview-banner")
        page.keyboard.press("1")  # the scale is required: the browser focuses it instead
        # The browser moves the focus after its validation pass; on a loaded machine that
        # lands after the key press returns, so wait for it (fails after the timeout). A
        # function, not an expression: the page's CSP forbids the eval() of an expression.
        page.wait_for_function(
            "() => (document.activeElement && document.activeElement.name || '')"
            ".endsWith('_left')"
        )
        page.keyboard.press("q")
        page.keyboard.press("p")
        screenshot(page, "staff-preview")
        page.keyboard.press("Escape")
        page.keyboard.press("1")
        page.wait_for_selector("text=1 judged")  # the next pair, nothing stored
        page.goto("/staff/studies/new/")
        page.fill("#id_name", "Zero overlap")
        page.fill("#id_overlap", "0")
        page.fill("#id_prompts", "Write fizzbuzz.")
        page.get_by_role("button", name="Create draft study").click()
        page.wait_for_selector("#error-summary")
        page.click("#error-summary a[href='#id_overlap']")
        assert page.evaluate("location.hash") == "#id_overlap"
        screenshot(page, "setup-error-summary")
        assert not violations, violations
    assert not Assignment.objects.exists() and not Judgment.objects.exists()


@pytest.mark.parametrize("width,height", [(1280, 900), (390, 844)], ids=["desktop", "phone"])
def test_the_rater_path_at_desktop_and_phone_size(live_server, users, width, height):
    """Both window sizes: the sides are named for where they are shown (left / right side by
    side, top / bottom stacked) and so are the keys; no Likert radio is ever under the
    choice buttons; an optional scale may stay blank or say "can't judge"; Back never shows
    the consent page again; the completion page shows no keyboard instructions."""
    _, alice, _ = users
    phone = width < 800
    study = make_study(n_items=1, raters=[alice], overlap=1)
    Study.objects.filter(id=study.id).update(
        consent_text="We store your choices.",
        rater_title="Compare two answers to a programming task",  # the demo's: a long one
    )
    study.criteria.create(name="readability", question="How readable is it?")
    study.criteria.create(name="style", question="Is it idiomatic?", position=1,
                          required=False, cant_judge=True)
    finish_generations(study)
    size = "phone" if phone else "desktop"
    with browser_page(live_server.url) as page:
        violations = csp_violations(page)
        page.set_viewport_size({"width": width, "height": height})
        log_in(page, "alice", "pw-alice-123")
        page.goto(f"/studies/{study.id}/rate/")
        page.get_by_label("I have read the above").check()
        page.get_by_role("button", name="Start").click()
        wait_for_page(page, "#pair .choices")
        # A long title takes the top bar's room from its own text, never breaks "Log out".
        lines = page.evaluate(
            "() => { const b = document.querySelector('.topbar button.link');"
            " return b.getBoundingClientRect().height / parseFloat(getComputedStyle(b).lineHeight"
            " === 'normal' ? 1.2 * parseFloat(getComputedStyle(b).fontSize)"
            " : getComputedStyle(b).lineHeight); }")
        assert lines < 1.5, f"'Log out' is broken over {lines:.1f} lines"
        shown = page.inner_text("#pair")  # what is displayed, not what is hidden
        first, second = ("top", "bottom") if phone else ("left", "right")
        hidden = ("left", "right") if phone else ("top", "bottom")
        assert f"Response 1 ({first})" in shown and f"Response 2 ({second})" in shown
        assert f"{first.capitalize()} is better" in shown
        assert f"{second.capitalize()} is better" in shown
        assert f"({hidden[0]})" not in shown and f"{hidden[1].capitalize()} is better" not in shown
        assert ("←" in page.inner_text("#shortcuts")) is not phone, "arrow keys on stacked sides"
        # Each radio put at the window's bottom edge: what is at its centre is its own label.
        covered = page.evaluate(
            "() => Array.from(document.querySelectorAll('#pair fieldset.criterion input'))"
            ".filter(input => { input.scrollIntoView({block: 'end'});"
            " const r = input.getBoundingClientRect();"
            " const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);"
            " return !hit || hit.closest('label') !== input.closest('label'); })"
            ".map(input => input.name + '=' + input.value)")
        assert not covered, f"radios under the choice buttons: {covered}"
        screenshot(page, f"rater-pair-{size}")
        for judged in (1, 2, 3):
            page.get_by_role("radiogroup", name="How readable is it?: response 1") \
                .get_by_label("4").check()
            page.get_by_role("radiogroup", name="How readable is it?: response 2") \
                .get_by_label("2").check()
            if judged == 2:
                page.get_by_role("radiogroup", name="Is it idiomatic?: response 2") \
                    .get_by_label("Can't judge").check()
            page.keyboard.press("Escape")
            page.keyboard.press("1")
            wait_for_next_pair(page, judged)
            if judged == 1:
                page.go_back()
                page.wait_for_selector("#pair")
                assert "Before you start" not in page.content(), "Back showed the consent page"
        page.wait_for_selector("text=All done")
        assert page.locator("#shortcuts").count() == 0, "keyboard help on the completion page"
        screenshot(page, f"rater-complete-{size}")
        assert not violations, violations
    ratings = CriterionRating.objects.filter(criterion__name="style")
    assert [(r.cant_judge_a or r.cant_judge_b, r.value_a, r.value_b) for r in ratings] == [
        (True, None, None)], "one can't judge; the blank scales stored nothing"
