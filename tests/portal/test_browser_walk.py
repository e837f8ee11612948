"""A clinician's whole walk in a real browser (Debian's chromium driven by Playwright): log in,
create a patient and a lesion, upload two visits, compare them, review the later image, plan a
follow-up and find it on the dashboard's due list.

Skips, saying why, where chromium or the playwright package is missing (tests/portal/test_browser.py's
pattern: it never downloads a browser). Waits on load events and selectors, never on sleeps.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.portal.browser import new_patient_and_lesion, require_browser
from tests.portal.helpers import PASSWORD
from tests.portal.test_segmentation_storage import classical_segmenter, lesion_png  # noqa: F401

sync_api = require_browser()

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _upload(page, path: Path, captured_at: str) -> None:
    page.set_input_files("#id_images", str(path))
    page.fill("#id_captured_at", captured_at)
    page.click("button:has-text('Upload and classify')")
    page.wait_for_selector("#classification [data-status=succeeded]")
    page.wait_for_load_state("load")


def test_it_walks_from_login_through_compare_review_and_follow_up(colleague, live_server, browser_page, tmp_path):
    page = browser_page
    console: list[str] = []  # a Content-Security-Policy refusal shows here
    page.on("console", lambda message: console.append(message.text))
    first, second = tmp_path / "visit-1.png", tmp_path / "visit-2.png"
    first.write_bytes(lesion_png(axes=(50, 40), seed=1))
    second.write_bytes(lesion_png(axes=(62, 48), seed=2))

    # Log in.
    page.goto(f"{live_server.url}/")
    page.fill("#id_username", colleague.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")

    # A patient and a lesion.
    new_patient_and_lesion(page, external_id="MRN-WALK-1", name="Wanda Walker", born="1968-09-12", sex="female",
                           label="Left shoulder blade", body_site="back")

    # Two visits, six months apart; each result shows its outline and measurements.
    _upload(page, first, "2026-01-10")
    assert page.locator("#outline-overlay").is_visible()
    assert "Area" in page.locator("#outline").inner_text()
    page.click("nav.crumbs >> text=Left shoulder blade")
    page.click("text=Upload images")
    page.wait_for_selector("h1:has-text('Upload images')")
    _upload(page, second, "2026-07-10")

    # Compare them from the lesion page.
    page.click("nav.crumbs >> text=Left shoulder blade")
    page.click("#compare-link")
    page.wait_for_selector("#summary")
    page.wait_for_load_state("load")
    summary = page.locator("#summary").inner_text()
    assert summary.startswith("Area +") and "in 6 months" in summary and "malignancy score" in summary
    assert "not a diagnosis" in summary
    assert page.locator(".compare-view").count() == 2
    assert page.locator(".compare-view polygon.outline").first.is_visible()
    heatmap = page.locator(".compare-view image.heatmap").first
    assert not heatmap.is_visible()
    page.click("label[for=compare-heatmaps]")
    heatmap.wait_for(state="visible")
    page.click("label[for=compare-outlines]")
    page.locator(".compare-view polygon.outline").first.wait_for(state="hidden")

    # Review the later image.
    page.click("#compare-later figcaption a")
    page.wait_for_selector("#classification [data-status=succeeded]")
    page.select_option("#id_diagnosis", "nv")
    page.fill("#id_comment", "Grew since January; dermoscopy otherwise regular.")
    page.click("button:has-text('Save review')")
    page.wait_for_selector("#reviews .reviews li")
    assert "Grew since January" in page.locator("#reviews").inner_text()

    # Plan a follow-up within the due window and find it on the dashboard.
    follow_up = (dt.date.today() + dt.timedelta(days=3)).isoformat()
    page.click("nav.crumbs >> text=Left shoulder blade")
    page.click("#follow-up >> text=Plan a follow-up")
    page.fill("#id_follow_up_on", follow_up)
    page.click("button:has-text('Save the follow-up date')")
    page.wait_for_selector(f"#follow-up >> text={follow_up}")
    page.click("nav.mainnav >> text=Dashboard")
    row = page.locator("#follow-ups tr[data-follow-up=due]", has_text="Left shoulder blade")
    row.wait_for()
    assert follow_up in row.inner_text() and "Wanda Walker" in row.inner_text()
    assert not [text for text in console if "Content Security Policy" in text]
