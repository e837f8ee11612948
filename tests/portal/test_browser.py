"""A real browser (Debian's chromium driven by Playwright) logs in, creates a patient and a
lesion, uploads an image and reads the result page.

Skips, saying why, where chromium or the playwright package is missing. Never downloads a
browser: it launches /usr/bin/chromium (apt-get install chromium).
"""

from __future__ import annotations

import pytest

from tests.portal.browser import in_own_thread, new_patient_and_lesion, require_browser
from tests.portal.helpers import PASSWORD, RED, STAND_IN_VERSION, image_bytes

sync_api = require_browser()

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_it_walks_from_login_to_a_classified_upload(colleague, live_server, browser_page, tmp_path):
    page = browser_page
    image_path = tmp_path / "dermatoscopy.png"
    image_path.write_bytes(image_bytes(RED, size=(320, 240)))

    page.goto(f"{live_server.url}/")
    assert "/accounts/login/" in page.url
    page.fill("#id_username", colleague.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    assert page.locator("h1").inner_text() == "Dashboard"

    new_patient_and_lesion(page, external_id="MRN-BROWSER-1", name="Brenda Browser", born="1970-03-04",
                           sex="female", label="Right forearm, dorsal", body_site="upper extremity")

    page.set_input_files("#id_images", str(image_path))
    page.fill("#id_captured_at", "2024-05-01")
    page.click("button:has-text('Upload and classify')")
    page.wait_for_selector("#classification [data-status=succeeded]")

    assert page.locator("#top-class").inner_text() == "Melanoma (mel)"
    assert page.locator("tr.prob").count() == 7
    assert page.locator("#model-version").inner_text() == STAND_IN_VERSION
    assert "Decision support, not a diagnosis." in page.locator(".disclaimer").inner_text()
    picture = page.locator("figure.image .zoom-open img")
    picture.evaluate("img => img.complete || new Promise(done => img.addEventListener('load', done))")
    assert picture.evaluate("img => img.naturalWidth") == 320  # served through the checked view

    page.click("nav.crumbs >> text=Right forearm, dorsal")
    page.wait_for_selector("svg.plot")
    assert page.locator("svg.plot circle.dot").count() == 1


def _log_in(page, live_server, user, next_path: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/?next={next_path}")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")


def test_it_updates_the_batch_progress_bar_by_itself(colleague, lesion, live_server, browser_page, monkeypatch):
    from diagnosis import services, tasks
    from diagnosis.models import LesionImage

    monkeypatch.setattr(tasks.classify_images, "delay", lambda *args, **kwargs: None)  # no worker yet
    batch = in_own_thread(
        lambda: services.batches.batch_create(
            user=colleague,
            lesion=lesion,
            files=[services.uploads.ImageUpload(f"{i}.png", image_bytes(RED)) for i in range(3)],
        )
    )
    page = browser_page
    _log_in(page, live_server, colleague, f"/batches/{batch.pk}/")
    page.wait_for_selector("#batch-progress[data-status=running]")
    assert page.locator('[data-count="queued"]').inner_text() == "3"

    # The "worker" finishes the images while the page is open: it follows without a reload.
    in_own_thread(
        lambda: services.classification.classification_run(
            image_ids=list(LesionImage.objects.filter(batch=batch).values_list("id", flat=True))
        )
    )
    page.wait_for_selector("#batch-progress[data-status=finished]", timeout=15_000)
    assert page.locator('[data-count="done"]').inner_text() == "3"
    assert page.locator("#batch-bar").evaluate("bar => bar.value") == 3
    assert page.locator('.image-status[data-status="done"]').count() == 3


def test_it_turns_the_heatmap_on_and_downloads_the_pdf_report(colleague, lesion, upload, live_server, browser_page,
                                                             tmp_path):
    image = in_own_thread(lambda: upload(image_bytes(RED, size=(320, 240)), user=colleague))
    page = browser_page
    _log_in(page, live_server, colleague, f"/images/{image.pk}/")
    page.wait_for_selector("#classification [data-status=succeeded]")

    heatmap = page.locator("img#heatmap")
    assert not heatmap.is_visible()  # off until asked for
    page.click("label[for=show-heatmap]")
    heatmap.wait_for(state="visible")
    # Loaded (lazily: only once shown) through the audited heatmap view, at the image's own size,
    # laid over the image.
    page.wait_for_function("() => { const img = document.querySelector('#heatmap'); return img.complete && img.naturalWidth > 0; }")
    assert heatmap.evaluate("img => img.naturalWidth") == 320
    box, under = heatmap.bounding_box(), page.locator("figure.image .zoom-open img").bounding_box()
    assert abs(box["x"] - under["x"]) < 1 and abs(box["width"] - under["width"]) < 1
    page.screenshot(path=str(tmp_path / "result-heatmap.png"))
    page.click("label[for=show-heatmap]")
    heatmap.wait_for(state="hidden")

    # A click on the picture opens it enlarged (CSS :target, no script); a click on that closes it.
    enlarged = page.locator(f"#zoom-{image.pk}")
    assert not enlarged.is_visible()
    page.click("figure.image .zoom-open")
    enlarged.wait_for(state="visible")
    enlarged.click()
    enlarged.wait_for(state="hidden")

    with page.expect_download() as download_info:
        page.click("#report-pdf")
    download = download_info.value
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    assert download.suggested_filename.endswith(".pdf") and path.read_bytes().startswith(b"%PDF")


def test_it_places_a_lesion_by_clicking_the_body_map(colleague, lesion, live_server, browser_page):
    page = browser_page
    console = []  # a Content-Security-Policy refusal shows here
    page.on("console", lambda message: console.append(message.text))
    _log_in(page, live_server, colleague, f"/lesions/{lesion.pk}/edit/")
    drawing = page.locator('#body-map-field svg[data-view="back"]')
    box = drawing.bounding_box()
    # A quarter across and a third down the back drawing (its box is the viewBox: same aspect).
    drawing.click(position={"x": box["width"] * 0.25, "y": box["height"] / 3})
    assert page.input_value("#id_map_view") == "back"
    assert abs(float(page.input_value("#id_map_x")) - 0.25) < 0.02
    assert abs(float(page.input_value("#id_map_y")) - 1 / 3) < 0.02
    assert page.locator('svg[data-view="back"] .map-marker:not(.off)').count() == 1
    assert page.locator('svg[data-view="front"] .map-marker.off').count() == 1
    page.click("button[type=submit].primary")
    page.wait_for_url(f"**/lesions/{lesion.pk}/")
    in_own_thread(lesion.refresh_from_db)  # here, under Playwright's loop, its connection would never be closed
    assert lesion.map_view == "back" and abs(lesion.map_x - 0.25) < 0.02 and abs(lesion.map_y - 1 / 3) < 0.02
    assert not [text for text in console if "Content Security Policy" in text]
