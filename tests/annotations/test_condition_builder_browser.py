"""A researcher builds a 2-family × 4-sparsity sweep in chromium without typing JSON."""

import re

import pytest

from annotations.models import Calibration, Study
from tests.support.browser import browser_page, log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TARGETS = "20, 35, 50, 65"


def _rows(page) -> int:
    return page.locator("#built-list li").count()


def test_a_two_family_sweep_is_built_with_clicks(live_server, users):
    with browser_page(live_server.url) as page:
        log_in(page, "staff", "pw-staff-123")
        page.goto("/staff/studies/new/")
        page.fill("#id_name", "Sweep from the browser")
        page.fill("#id_prompts", "Write fizzbuzz.\n---\nReverse a string.\n---\nSum a list.")
        assert _rows(page) == 1, "the page starts with the dense baseline"
        # Family 1: static thresholds, calibrated to four sparsities.
        page.fill("#b_sparsities", TARGETS)
        page.click("#add-sweep")
        page.wait_for_selector("#built-list li:nth-child(5)")
        # Family 2: dynamic, its own fields appear when it is chosen.
        page.select_option("#b_family", "dynamic")
        page.wait_for_selector("#p_entropy_scale")
        assert "follows the model" in page.inner_text("#family-help")
        # The family options are whole sentences: the builder must not widen the page.
        assert page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")
        page.fill("#p_entropy_scale", "0.5")
        page.fill("#b_sparsities", TARGETS)
        page.click("#add-sweep")
        page.wait_for_selector("#built-list li:nth-child(9)")
        # A mistyped field is explained in the builder and adds nothing.
        page.fill("#b_sparsities", "20, abc")
        page.click("#add-sweep")
        page.wait_for_selector("#builder-error:has-text('abc')")
        assert _rows(page) == 9
        # The pair count follows the design, with a warning for all pairs.
        page.select_option("#id_pair_design", "all_pairs")
        page.wait_for_selector("#pair-count-text:has-text('108 pairs')")
        assert "alert warning" in page.get_attribute("#pair-count-text", "class")
        page.select_option("#id_pair_design", "vs_first")
        page.wait_for_selector("#pair-count-text:has-text('24 pairs')")
        # Remove one and add it back: the list and the count follow.
        page.locator("#built-list li").last.get_by_role("button", name="Remove").click()
        page.wait_for_selector("#pair-count-text:has-text('21 pairs')")
        page.fill("#b_sparsities", "65")
        page.click("#add-sweep")
        page.wait_for_selector("#pair-count-text:has-text('24 pairs')")
        listed = page.inner_text("#built-list")
        assert "{" not in listed, "a built condition showed its JSON"
        screenshot(page, "setup-sweep")
        page.get_by_role("button", name="Create draft study").click()
        page.wait_for_selector("#calibration")
        summaries = page.inner_text("#condition-summaries")
        assert "calibrated to 65 % sparsity" in summaries and "{" not in summaries
        screenshot(page, "setup-calibration")
    study = Study.objects.get(name="Sweep from the browser")
    names = list(study.conditions.values_list("name", flat=True))
    assert names[0] == "dense" and len(names) == 9
    for family in ("static", "dynamic"):
        mine = [n for n in names if n.startswith(family)]
        assert sorted(int(re.search(r"(\d+)%", n).group(1)) for n in mine) == [20, 35, 50, 65]
    targets = sorted(Calibration.objects.filter(condition__study=study)
                     .values_list("condition__policy__kind", "target_sparsity"))
    assert targets == sorted((f, t) for f in ("dynamic", "static")
                             for t in (0.2, 0.35, 0.5, 0.65))
    assert all(c.policy.get("entropy_scale") == 0.5 for c in study.conditions.all()
               if c.policy["kind"] == "dynamic")
