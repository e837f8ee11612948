"""PDF reports of a lesion and of one image (diagnosis/reports): what they say, who may read them,
that every read is audited, that the API answers whatever the Accept header, and how a page looks.

docs/screenshots/lesion-report.png is page 1 of a realistic report drawn by
test_it_draws_a_realistic_lesion_report; rewrite it with UPDATE_REPORT_SCREENSHOT=1.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import time

import cv2
import numpy as np
import pypdfium2
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from pypdf import PdfReader

from diagnosis import inference, reports, selectors, services
from diagnosis.inference import CLASSES, ModelPerformance, display_name, warning_text
from diagnosis.models import AuditEvent, AuditOutcome, Classification, ClassificationStatus, Lesion
from tests.portal.helpers import BLUE, GREEN, RED, REPO_ROOT, STAND_IN_VERSION, image_bytes

NOTE = "Decision support, not a diagnosis."
SCREENSHOT = REPO_ROOT / "docs" / "screenshots" / "lesion-report.png"
ROUTES = {
    "lesion-report": "lesion_id",
    "image-report": "image_id",
    "api-lesion-report": "lesion_id",
    "api-image-report": "image_id",
}


def pdf_text(data: bytes) -> list[str]:
    """Each page's text with its whitespace made single spaces (a line break is a space)."""
    assert data.startswith(b"%PDF-")
    return [" ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(data)).pages]


def all_text(data: bytes) -> str:
    return " ".join(pdf_text(data))


@pytest.fixture
def three_visits(owner, colleague, lesion, upload) -> list:
    """Flagged (red), not flagged (green) and a picture that is not dermatoscopic (blue), a
    month apart, uploaded newest first so the report must put them in capture order."""
    images = [
        upload(image_bytes(BLUE), captured_at=dt.date(2024, 3, 1)),
        upload(image_bytes(GREEN), captured_at=dt.date(2024, 2, 1)),
        upload(image_bytes(RED), captured_at=dt.date(2024, 1, 1)),
    ]
    services.reviews.review_create(
        user=colleague,
        image=images[2],
        diagnosis="mel",
        histopathology_confirmed=True,
        comment="Excised; melanoma in situ on histology.",
    )
    return images


def _get(client, name: str, object_id: int, **headers):
    return client.get(reverse(name, kwargs={ROUTES[name]: object_id}), **headers)


# --- What a report says ------------------------------------------------------------------------


def test_it_reports_every_visit_of_a_lesion_in_words(owner, lesion, three_visits, client_for):
    response = _get(client_for(owner), "lesion-report", lesion.pk)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == f'attachment; filename="lesion-{lesion.pk}-report.pdf"'
    pages = pdf_text(response.content)
    text = " ".join(pages)
    for expected in (
        "SkinPortal lesion report",
        NOTE,
        "not a certified medical device",
        "MRN-001",
        "Ada Lovelace",
        "Northside Dermatology",
        "Upper back, left",
        "Back",
        STAND_IN_VERSION,
        warning_text("not_dermoscopic"),
        "Excised; melanoma in situ on histology.",
        "histopathology confirmed",
        "bob",
        "3 images, 2024-01-01 to 2024-03-01",
        "Flagged: malignancy score at or above the threshold",
        "Image in doubt: this result is not reliable",
        "threshold of 50.0%",
        "Heatmap for Melanoma (mel)",
    ):
        assert expected in text, expected
    assert all(display_name(code) in text for code in CLASSES)
    visits = [text.index(f"Visit {n} of 3 · captured 2024-0{n}-01") for n in (1, 2, 3)]
    assert visits == sorted(visits)  # oldest first, whatever the upload order
    # Every page says what the report is not, and which page of how many it is.
    assert all(NOTE in page and f"Page {n} of {len(pages)}" in page for n, page in enumerate(pages, start=1))


def test_it_says_when_the_lesion_is_followed_up_or_how_it_was_closed(owner, lesion, upload, client_for):
    upload(image_bytes(RED), captured_at=dt.date(2024, 1, 1))
    client = client_for(owner)
    assert "Follow-up None planned" in all_text(_get(client, "lesion-report", lesion.pk).content)

    due = timezone.localdate() + dt.timedelta(days=3)
    services.patients.lesion_follow_up_set(user=owner, lesion=lesion, follow_up_on=due)
    assert f"Follow-up {due.isoformat()} (due)" in all_text(_get(client, "lesion-report", lesion.pk).content)
    overdue = timezone.localdate() - dt.timedelta(days=3)
    Lesion.objects.filter(pk=lesion.pk).update(follow_up_on=overdue)  # the date has passed since
    assert f"Follow-up {overdue.isoformat()} (overdue)" in all_text(_get(client, "lesion-report", lesion.pk).content)

    services.patients.lesion_close(
        user=owner, lesion=lesion, outcome="excised", outcome_note="Compound naevus on histology."
    )
    lesion.refresh_from_db()
    text = all_text(_get(client, "lesion-report", lesion.pk).content)
    assert f"Closed {lesion.closed_on.isoformat()}: {lesion.get_outcome_display()}" in text
    assert "Compound naevus on histology." in text
    assert "overdue" not in text


def test_it_never_calls_a_result_with_a_warning_reassuring(owner, lesion, upload, client_for):
    image = upload(image_bytes((20, 6, 6)))  # dark: too_dark (and far from any lesion colour)
    warnings = selectors.image_latest_classification(image=selectors.image_get(user=owner, image_id=image.pk)).warnings
    assert "too_dark" in warnings
    text = all_text(_get(client_for(owner), "image-report", image.pk).content)
    assert "SkinPortal image report" in text and f"#{image.pk}" in text
    assert warning_text("too_dark") in text
    assert "Below the threshold" not in text.replace("Below the threshold, but uncertain", "")


def test_it_says_so_when_no_image_of_a_lesion_is_classified(owner, patient, lesion, upload, client_for):
    empty = services.patients.lesion_create(user=owner, patient=patient, body_site="face", label="Left cheek")
    text = all_text(_get(client_for(owner), "lesion-report", empty.pk).content)
    assert "Left cheek" in text and "Face" in text and "No images yet" in text and NOTE in text

    image = upload(image_bytes(RED))
    Classification.objects.filter(image=image).update(
        status=ClassificationStatus.FAILED, error_message="the model bundle is missing"
    )
    text = all_text(_get(client_for(owner), "lesion-report", lesion.pk).content)
    assert "No image of this lesion has a successful classification yet." in text
    assert "Classification failed. the model bundle is missing" in text
    assert "No heatmap: the image has no successful classification." in text


def test_it_says_so_when_the_stored_file_is_gone(owner, lesion, upload, client_for):
    image = upload(image_bytes(GREEN))
    image.file.storage.delete(image.file.name)
    text = all_text(_get(client_for(owner), "image-report", image.pk).content)
    assert "The image file is missing or unreadable." in text and display_name("nv") in text


def test_it_shows_the_measured_performance_of_the_model_that_gave_the_result(
    owner, lesion, upload, client_for, monkeypatch
):
    measured = ModelPerformance(
        model_version=STAND_IN_VERSION,
        threshold=0.5,
        sensitivity=0.85,
        sensitivity_interval=(0.8, 0.9),
        specificity=0.7,
        specificity_interval=(0.65, 0.75),
        balanced_accuracy=0.6,
        test_images=1511,
        evaluated_on="1,511 held-out test images of HAM10000",
    )
    monkeypatch.setattr(inference, "model_performance", lambda version, variant="fp32", with_context=False: measured)
    image = upload(image_bytes(RED))
    text = all_text(_get(client_for(owner), "image-report", image.pk).content)
    assert (
        "On 1,511 held-out test images of HAM10000: sensitivity 85.0% (95% CI 80.0%–90.0%), "
        "specificity 70.0% (65.0%–75.0%) at threshold 50.0%."
    ) in text


def test_it_prints_what_people_typed_as_text_not_markup(owner, patient, upload, colleague, client_for):
    lesion = services.patients.lesion_create(
        user=owner, patient=patient, body_site="hand", label='Dorsum <b>left</b> & "ring" finger'
    )
    image = upload(image_bytes(RED), target=lesion)
    services.reviews.review_create(user=colleague, image=image, diagnosis="nv", comment="<i>stable</i> & flat\nok")
    text = all_text(_get(client_for(owner), "lesion-report", lesion.pk).content)
    assert 'Dorsum <b>left</b> & "ring" finger' in text and "<i>stable</i> & flat ok" in text


def test_it_reads_a_fixed_number_of_queries_and_writes_nothing(owner, lesion, upload):
    upload(image_bytes(RED))
    lesion = selectors.lesion_get(user=owner, lesion_id=lesion.pk)
    with CaptureQueriesContext(connection) as one_visit:
        reports.lesion_report_pdf(user=owner, lesion=lesion)
    upload(image_bytes(GREEN))
    upload(image_bytes(BLUE))
    with CaptureQueriesContext(connection) as three_visits:
        reports.lesion_report_pdf(user=owner, lesion=lesion)
    assert len(three_visits) == len(one_visit)  # no query per visit
    statements = [query["sql"].lstrip().split()[0].upper() for query in three_visits.captured_queries]
    assert set(statements) == {"SELECT"}, statements


# --- Who may read it, and the audit trail -------------------------------------------------------


def test_it_answers_404_to_an_outsider_and_audits_every_read(victim, owner, outsider, client_for, api_for):
    for name, key in ROUTES.items():
        ids = {"lesion_id": victim["lesion_id"], "image_id": victim["image_id"]}
        for user, status, outcome in ((outsider, 404, AuditOutcome.DENIED), (owner, 200, AuditOutcome.OK)):
            client = api_for(user) if name.startswith("api-") else client_for(user)
            response = _get(client, name, ids[key])
            assert response.status_code == status, (name, user)
            event = AuditEvent.objects.get(request_id=response["X-Request-ID"])
            assert (event.route, event.method, event.action, event.outcome) == (name, "GET", "export", outcome)
            assert (event.object_type, event.object_id) == (key.removesuffix("_id"), ids[key])
            assert event.organisation_id == victim["organisation_id"]  # a denied read, too: the victim's admins see it
            assert event.actor_username == user.username


def test_it_lets_a_read_only_member_download_both_reports(victim, reader, client_for, api_for):
    for name, key in ROUTES.items():
        client = api_for(reader) if name.startswith("api-") else client_for(reader)
        response = _get(client, name, victim[key])
        assert response.status_code == 200 and response["Content-Type"] == "application/pdf", name
        assert NOTE in all_text(response.content)


def test_it_sends_a_signed_out_visitor_to_sign_in(victim, client, api_for):
    page = _get(client, "lesion-report", victim["lesion_id"])
    assert page.status_code == 302 and "/login/" in page["Location"]
    assert _get(api_for(None), "api-lesion-report", victim["lesion_id"]).status_code == 401


def test_it_refuses_anything_but_get(victim, owner, client_for, api_for):
    assert client_for(owner).post(reverse("lesion-report", args=[victim["lesion_id"]])).status_code == 405
    assert api_for(owner).post(reverse("api-image-report", args=[victim["image_id"]])).status_code == 405


@pytest.mark.parametrize("accept", [None, "application/pdf", "application/json", "*/*", "text/html", "image/png"])
def test_it_answers_the_api_with_the_pdf_whatever_the_accept_header(victim, owner, outsider, api_for, accept):
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    for name, key in (("api-lesion-report", "lesion_id"), ("api-image-report", "image_id")):
        response = _get(api_for(owner), name, victim[key], **headers)
        assert response.status_code == 200, (name, accept, response.content[:200])
        assert response["Content-Type"] == "application/pdf"
        assert response["Content-Disposition"].startswith("attachment; filename=")
        assert NOTE in all_text(response.content)
        # An error is the JSON envelope, even to a client that asked for a PDF.
        refused = _get(api_for(outsider), name, victim[key], **headers)
        assert refused.status_code == 404 and refused["Content-Type"] == "application/json"
        assert refused.json()["error"]["code"] == "not_found"


def test_it_documents_both_endpoints_as_pdf_downloads(owner, api_for):
    schema = api_for(owner).get("/api/v1/schema/", {"format": "json"}).json()
    for path, tag in (
        ("/api/v1/lesions/{lesion_id}/report.pdf", "lesions"),
        ("/api/v1/images/{image_id}/report.pdf", "images"),
    ):
        operation = schema["paths"][path]["get"]
        assert operation["tags"] == [tag]
        assert operation["responses"]["200"]["content"] == {
            "application/pdf": {"schema": {"type": "string", "format": "binary"}}
        }
        assert "application/json" in operation["responses"]["404"]["content"]


# --- How it looks --------------------------------------------------------------------------------


def first_page_png(data: bytes, *, scale: float = 1.0):
    """Page 1 rendered by PDFium, as a PIL image."""
    document = pypdfium2.PdfDocument(data)
    try:
        return document[0].render(scale=scale).to_pil().convert("RGB")
    finally:
        document.close()


def test_it_renders_page_one_as_a_non_blank_a4_page(owner, lesion, three_visits):
    picture = first_page_png(reports.lesion_report_pdf(user=owner, lesion=lesion))
    assert picture.height / picture.width == pytest.approx(297 / 210, abs=0.01)  # A4 portrait
    pixels = np.asarray(picture, dtype=np.float32)
    assert (pixels < 200).mean() > 0.01  # text and pictures, not an empty page
    ink = np.argwhere((pixels < 128).all(axis=2))
    assert ink[:, 0].min() < 0.1 * picture.height and ink[:, 0].max() > 0.85 * picture.height  # header to footer
    reddish = (pixels[..., 0] > 150) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert reddish.sum() > 500  # the red visit's picture is drawn


@pytest.mark.slow
def test_it_keeps_a_thirty_visit_report_small(owner, lesion, upload):
    """30 visits of 600x450 photographs: a few MB at most (each picture embedded at print size)."""
    for visit in range(30):
        captured = dt.date(2022, 1, 1) + dt.timedelta(days=30 * visit)
        upload(dermatoscopic_jpeg(seed=visit), captured_at=captured)
    lesion = selectors.lesion_get(user=owner, lesion_id=lesion.pk)
    started, cpu_started = time.perf_counter(), time.process_time()
    pdf = reports.lesion_report_pdf(user=owner, lesion=lesion)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    pages = pdf_text(pdf)
    assert "Visit 30 of 30" in " ".join(pages) and "No heatmap" not in " ".join(pages)
    assert len(pdf) < 4_000_000, len(pdf)
    print(
        f"30-visit lesion report: {len(pdf) / 1e6:.2f} MB, {len(pages)} pages, {seconds:.2f} s ({cpu_seconds:.2f} s CPU)"
    )


def dermatoscopic_jpeg(*, size: tuple[int, int] = (600, 450), seed: int = 0, darker: int = 0) -> bytes:
    """A made-up dermatoscopic picture: an irregular brown lesion with a pigment network, dots and
    a darker centre on skin, sharp enough that the shipped model's screening passes it (seeds 1-3
    checked); `darker` (e.g. 130) makes it too dark and unlike any lesion it learnt."""
    width, height = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = width * (0.5 + 0.04 * (seed % 4)), height * (0.5 - 0.03 * (seed % 4))
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = 1 + 0.12 * np.sin(3 * angle + seed) + 0.06 * np.sin(7 * angle + 2 * seed)
    r = np.sqrt(((xx - cx) / (0.26 * width)) ** 2 + ((yy - cy) / (0.3 * height)) ** 2) / wobble
    lesion = np.clip((1.0 - r) * 4, 0, 1)[..., None]
    skin, brown = np.array([200, 150, 135], np.float32) - darker, np.array([120, 75, 55], np.float32) - darker
    dark = np.array([60, 38, 32], np.float32) - darker / 2
    rgb = skin * (1 - lesion) + brown * lesion
    grid = np.sin(xx / 6 + 2 * np.sin(yy / 23)) * np.sin(yy / 6 + 2 * np.sin(xx / 19))
    network = (np.abs(grid) < 0.25).astype(np.float32)[..., None] * lesion * 0.45
    rgb = rgb * (1 - network) + dark * network
    core = np.clip(1 - 2.5 * r, 0, 1)[..., None] * 0.6
    rgb = rgb * (1 - core) + dark * core
    for _ in range(40):
        centre = (int(rng.normal(cx, 0.1 * width)), int(rng.normal(cy, 0.1 * height)))
        cv2.circle(rgb, centre, int(rng.integers(2, 5)), tuple(float(v) for v in dark), -1)
    rgb = cv2.GaussianBlur(np.clip(rgb + rng.normal(0, 5, rgb.shape), 0, 255).astype(np.uint8), (3, 3), 0)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return data.tobytes()


@pytest.mark.slow
def test_it_draws_a_realistic_lesion_report(shipped_model, owner, colleague, lesion, upload):
    """The shipped model on three made-up dermatoscopic pictures (one dark: warnings) with a review;
    page 1 rendered to PNG for a person to look at (docs/screenshots/lesion-report.png)."""
    # The first visit's photograph is dark, and reviewed: page 1 shows a warning and a review.
    dark = upload(dermatoscopic_jpeg(seed=3, darker=130), captured_at=dt.date(2024, 1, 15))
    upload(dermatoscopic_jpeg(seed=1), captured_at=dt.date(2024, 7, 2))
    upload(dermatoscopic_jpeg(seed=2, size=(600, 400)), captured_at=dt.date(2025, 1, 20))
    services.reviews.review_create(
        user=colleague,
        image=dark,
        diagnosis="nv",
        comment="Photograph too dark to judge; taken again at the next visit.",
    )
    pdf = reports.lesion_report_pdf(user=owner, lesion=selectors.lesion_get(user=owner, lesion_id=lesion.pk))
    text = all_text(pdf)
    assert "Visit 3 of 3" in text and shipped_model in text and "held-out test images" in text
    # Ada (born 1960-12-10, female), the lesion on the back: visit 3 was taken at 64.
    assert "Weighed with the image: age 60-69, female, back" in text
    assert "with their age, sex and body site" in text
    warned = selectors.image_latest_classification(image=selectors.image_get(user=owner, image_id=dark.pk))
    assert warned.warnings and all(message in text for _, message in warned.warning_messages)
    picture = first_page_png(pdf, scale=1.5)
    assert (np.asarray(picture) < 200).mean() > 0.01
    if os.environ.get("REPORT_PDF_COPY"):  # for a look at every page
        with open(os.environ["REPORT_PDF_COPY"], "wb") as copy:
            copy.write(pdf)
    if os.environ.get("UPDATE_REPORT_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        picture.save(SCREENSHOT, optimize=True)
