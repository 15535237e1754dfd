"""The study report opens in a real headless chromium with its plots, offline."""

import pytest
from django.core.management import call_command

from tests.reports.test_build import SWEEP, rated_study
from tests.support.browser import browser_page, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db]


def test_report_opens_in_chromium_with_its_plots_and_no_script(tmp_path):
    study, _ = rated_study(n_items=8, n_raters=4, name="Threshold sweep <demo>", conditions=SWEEP)
    call_command("study_report", study.id, "--out", str(tmp_path), "--bootstrap", "200")
    with browser_page("file://") as page:
        requests = []
        page.on("request", lambda request: requests.append(request.url))
        dialogs = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto((tmp_path / "report.html").as_uri())
        page.wait_for_load_state("load")
        widths = page.eval_on_selector_all("img", "images => images.map(i => i.naturalWidth)")
        assert len(widths) == 3 and all(w > 100 for w in widths), "a plot did not decode"
        assert page.title() == "Report: Threshold sweep <demo>"
        # The policy column is prose (label and bytes note): right-aligned like the numbers
        # it read as a ragged column several times taller than its row needed.
        aligns = page.eval_on_selector_all(
            "#conditions td:nth-child(2)", "cells => cells.map(c => getComputedStyle(c).textAlign)"
        )
        assert aligns and set(aligns) == {"left"}, aligns
        # At desktop width the page never scrolls sideways: the conditions table (a dozen
        # columns) scrolls inside its own box instead of pushing the page to ~1400 px.
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the report is {overflow} px wider than a 1280 px window"
        screenshot(page, "report")
    assert dialogs == [], "a payload in the data ran as script"
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
