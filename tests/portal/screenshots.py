"""Screenshots of the portal's pages for the docs (docs/screenshots/*.png), made by a real browser
(Debian's chromium through Playwright) over a live test server with generated patients, lesions
and images. Not part of the test run (the file name does not start with test_); regenerate with

    .venv/bin/python -m pytest tests/portal/screenshots.py -p no:cacheprovider -q

It writes compare.png, lesion.png, patient-body-map.png, dashboard.png, batch.png, agreement.png
and result-outline.png into docs/screenshots/ (SKINPORTAL_SCREENSHOTS_DIR to write elsewhere).
With ../shared beside the repository and SKINPORTAL_SCREENSHOTS_DIR set, it also writes
result-suggested.png there: the served model suggesting melanoma over a more probable naevus on a
HAM10000 image, and saying why. That one never goes into docs/: it shows a HAM10000 image, and
nothing from ../shared is committed.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import HAM_IMAGES, needs_ham10000
from tests.portal.browser import CHROMIUM, CHROMIUM_ARGS, in_own_thread, require_browser
from tests.portal.test_operating_point import FAVOURED_IMAGE  # naevus most probable, melanoma suggested
from tests.portal.helpers import PASSWORD, REPO_ROOT
from tests.portal.test_segmentation_storage import classical_segmenter  # noqa: F401 - drawn lesions

OUT = Path(os.environ.get("SKINPORTAL_SCREENSHOTS_DIR", REPO_ROOT / "docs" / "screenshots"))
sync_api = require_browser()
pytestmark = [pytest.mark.django_db(transaction=True)]


def lesion_picture(*, radius: int, seed: int, size: tuple[int, int] = (640, 480),
                   colour: tuple[int, int, int] = (120, 70, 45)) -> bytes:
    """A dermoscopy-like picture: an irregular brown lesion with a darker centre on skin."""
    width, height = size
    rng = np.random.default_rng(seed)
    rgb = np.empty((height, width, 3), np.float32)
    rgb[:] = (222, 178, 160)
    angles = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    wobble = 1 + 0.12 * np.sin(3 * angles + seed) + 0.06 * rng.standard_normal(90).cumsum() / 5
    points = np.stack([width / 2 + radius * 1.2 * wobble * np.cos(angles),
                       height / 2 + radius * wobble * np.sin(angles)], axis=1).astype(np.int32)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [points], 255)
    mask = cv2.GaussianBlur(mask, (0, 0), 3).astype(np.float32)[..., None] / 255
    rgb = rgb * (1 - mask) + np.array(colour, np.float32) * mask
    centre = np.zeros((height, width), np.uint8)
    cv2.ellipse(centre, (width // 2 + 8, height // 2 - 4), (radius // 2, radius // 3), 20, 0, 360, 255, -1)
    centre = cv2.GaussianBlur(centre, (0, 0), 6).astype(np.float32)[..., None] / 255
    rgb = rgb * (1 - 0.6 * centre) + np.array((60, 35, 30), np.float32) * 0.6 * centre
    rgb += rng.normal(0, 2, rgb.shape)  # a little grain; more makes megabyte PNGs
    ok, data = cv2.imencode(".png", cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def _clinic(owner, colleague, org) -> dict:
    """Patients, lesions on the body map, two visits of one, a batch, reviews and follow-ups."""
    from diagnosis import services
    from diagnosis.models import Lesion

    def upload(lesion, data, captured_at, pixels_per_mm=None):
        (image,) = services.uploads.lesion_image_upload(
            user=colleague, lesion=lesion, files=[services.uploads.ImageUpload("visit.png", data)],
            captured_at=captured_at, pixels_per_mm=pixels_per_mm,
        )
        services.classification.classification_run(image_ids=[image.pk])
        return image

    ada = services.patients.patient_create(user=owner, organisation=org, external_id="MRN-1042", name="Ada Example",
                                           date_of_birth=dt.date(1961, 4, 2), sex="female")
    ben = services.patients.patient_create(user=owner, organisation=org, external_id="MRN-2210", name="Ben Sample",
                                           date_of_birth=dt.date(1975, 9, 30), sex="male")
    back = services.patients.lesion_create(user=colleague, patient=ada, body_site="back", label="Left shoulder blade",
                                           laterality="left", map_view="back", map_x=0.40, map_y=0.27)
    arm = services.patients.lesion_create(user=colleague, patient=ada, body_site="upper extremity",
                                          label="Right forearm", laterality="right", map_view="front",
                                          map_x=0.80, map_y=0.45)
    services.patients.lesion_create(user=colleague, patient=ada, body_site="lower extremity", label="Left shin",
                                    laterality="left", map_view="front", map_x=0.44, map_y=0.80)
    chest = services.patients.lesion_create(user=colleague, patient=ben, body_site="chest", label="Sternum")
    first = upload(back, lesion_picture(radius=70, seed=1), dt.date(2026, 3, 2), pixels_per_mm=20)
    later = upload(back, lesion_picture(radius=86, seed=2, colour=(105, 55, 40)), dt.date(2026, 9, 1),
                   pixels_per_mm=22)
    arm_image = upload(arm, lesion_picture(radius=60, seed=3, colour=(150, 95, 60)), dt.date(2026, 10, 5))
    chest_image = upload(chest, lesion_picture(radius=75, seed=4, colour=(90, 50, 45)), dt.date(2026, 11, 20))
    services.reviews.review_create(user=colleague, image=first, diagnosis="nv", comment="Regular network.")
    services.reviews.review_create(user=owner, image=arm_image, diagnosis="bkl", histopathology_confirmed=True)
    services.reviews.review_create(user=colleague, image=chest_image, diagnosis="mel", histopathology_confirmed=True)
    services.patients.lesion_follow_up_set(user=colleague, lesion=back, follow_up_on=dt.date.today() + dt.timedelta(days=5))
    Lesion.objects.filter(pk=arm.pk).update(follow_up_on=dt.date.today() - dt.timedelta(days=4))  # overdue
    batch = services.batches.batch_create(
        user=colleague, organisation=org,
        files=[services.uploads.ImageUpload(f"clinic-{i}.png", lesion_picture(radius=50 + 7 * i, seed=10 + i,
                                                                              colour=(100 + 12 * i, 60, 40)))
               for i in range(5)],
        lesion=chest,
    )
    services.classification.classification_run(image_ids=list(batch.images.values_list("id", flat=True)))
    return {"ada": ada.pk, "back": back.pk, "later": later.pk, "batch": batch.pk, "org": org.pk}


def test_screenshots(owner, colleague, org, live_server):
    ids = in_own_thread(lambda: _clinic(owner, colleague, org))
    _take(live_server, owner, [
        ("dashboard.png", "/", "#follow-ups"),
        ("compare.png", f"/lesions/{ids['back']}/compare/", "#summary"),
        ("lesion.png", f"/lesions/{ids['back']}/", "svg.plot"),
        ("patient-body-map.png", f"/patients/{ids['ada']}/", "h1"),
        ("batch.png", f"/batches/{ids['batch']}/", "h1"),
        ("agreement.png", f"/organisations/{ids['org']}/agreement/", "h1"),
        ("result-outline.png", f"/images/{ids['later']}/", "#outline-overlay"),
    ])


@needs_ham10000
@pytest.mark.skipif("SKINPORTAL_SCREENSHOTS_DIR" not in os.environ,
                    reason="it shows a HAM10000 image, which is not committed: set SKINPORTAL_SCREENSHOTS_DIR")
def test_screenshot_of_a_suggested_melanoma(shipped_model, owner, colleague, org, live_server):
    def upload() -> int:
        from diagnosis import services

        patient = services.patients.patient_create(user=owner, organisation=org, external_id="MRN-3307",
                                                   name="Cleo Example")
        lesion = services.patients.lesion_create(user=colleague, patient=patient, body_site="unknown",
                                                 label="Referred image")
        with open(os.path.join(HAM_IMAGES, f"{FAVOURED_IMAGE}.jpg"), "rb") as fh:
            (image,) = services.uploads.lesion_image_upload(
                user=colleague, lesion=lesion, files=[services.uploads.ImageUpload("referred.jpg", fh.read())],
                captured_at=dt.date(2026, 11, 30))
        services.classification.classification_run(image_ids=[image.pk])
        assert image.classifications.get().favoured_over_most_likely
        return image.pk

    image_id = in_own_thread(upload)
    _take(live_server, owner, [("result-suggested.png", f"/images/{image_id}/", "#top-class")])


def _take(live_server, user, shots: list[tuple[str, str, str]]) -> None:
    """Log in as `user` and save (file name, path, selector to wait for) as full-page PNGs in OUT."""
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{live_server.url}/accounts/login/")
        page.fill("#id_username", user.username)
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{live_server.url}/")
        for name, path, ready in shots:
            page.goto(f"{live_server.url}{path}")
            page.wait_for_selector(ready)
            page.wait_for_load_state("load")
            page.screenshot(path=str(OUT / name), full_page=True)
        browser.close()
    for name, _, _ in shots:
        _smaller(OUT / name)
        assert (OUT / name).stat().st_size > 10_000


def _smaller(path: Path) -> None:
    """256 colours, no dithering: text stays sharp and the PNG about half the size."""
    from PIL import Image

    with Image.open(path) as image:
        quantized = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                                                  dither=Image.Dither.NONE)
    quantized.save(path, optimize=True)
