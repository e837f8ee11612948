"""Issue 12 on pages and in the API: warnings lead the result, a warned result is never green,
the heatmap is served like any image read, uncertainty and measured performance are shown, and
an image too small to classify is refused at upload.

The stand-in model (tests/portal/helpers.py): red -> melanoma (flagged), green -> nevus
(reassuring), blue -> vascular and far from both test colours (not_dermoscopic), darker than
luma 40 -> too_dark.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from diagnosis.interpretation import FLAGGED, REASSURING, UNCERTAIN, UNRELIABLE, read_result
from diagnosis.models import AuditEvent, Classification, LesionImage
from ml.inference import reset_classifier
from tests.portal.helpers import BLUE, GREEN, RED, build_stand_in_bundle, image_bytes
from tests.portal.test_reports import all_text

API = "/api/v1"
DARK = (10, 30, 12)


def _page(client, image) -> str:
    response = client.get(reverse("image-detail", args=[image.pk]))
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.parametrize(
    ("colour", "level", "warning"),
    [(RED, FLAGGED, None), (GREEN, REASSURING, None), (BLUE, UNRELIABLE, "not_dermoscopic"), (DARK, UNRELIABLE, "too_dark")],
)
def test_it_reads_each_result_at_its_level(upload, client_for, colleague, colour, level, warning):
    image = upload(image_bytes(colour))
    classification = image.classifications.get()
    assert read_result(classification).level == level
    assert (warning in classification.warnings) if warning else (classification.warnings == [])
    html = _page(client_for(colleague), image)
    assert f'data-level="{level}"' in html


def test_it_leads_a_non_dermatoscopic_result_with_the_warning_and_never_reassures(upload, client_for, colleague):
    image = upload(image_bytes(BLUE))
    html = _page(client_for(colleague), image)
    reading = html[html.index('id="reading"'):]
    # The warning comes before any figure, as an alert.
    assert 'role="alert"' in html[html.index('class="reading unreliable"'):][:200]
    assert reading.index("does not look like a dermatoscopic image") < reading.index("Malignancy score")
    assert 'class="badge ok"' not in html and "reading reassuring" not in html
    assert "below, but not a reassurance" in html


def test_it_shows_green_only_for_a_reassuring_result(upload, client_for, colleague):
    html = _page(client_for(colleague), upload(image_bytes(GREEN)))
    assert 'class="reading reassuring"' in html and 'class="badge ok"' in html and 'id="warnings"' not in html


@pytest.mark.parametrize("warnings", [["blurred"], ["too_bright"], ["low_contrast"], ["low_confidence"], ["not_dermoscopic", "too_dark"]])
def test_it_never_shows_a_warned_result_below_the_threshold_in_green(upload, client_for, colleague, warnings):
    image = upload(image_bytes(GREEN))
    Classification.objects.filter(image=image).update(warnings=warnings)
    html = _page(client_for(colleague), image)
    assert 'class="badge ok"' not in html and "reading reassuring" not in html
    for code in warnings:
        assert f'data-warning="{code}"' in html
    api = client_for(colleague).get(f"{API}/images/{image.pk}/")
    reading = api.json()["classification"]["reading"]
    assert reading["level"] == (UNCERTAIN if warnings == ["low_confidence"] else UNRELIABLE)


def test_it_says_in_words_when_the_malignant_group_outweighs_a_benign_top_class(upload, client_for, colleague):
    image = upload(image_bytes(GREEN))
    probabilities = {"akiec": 0.15, "bcc": 0.1, "bkl": 0.05, "df": 0.02, "mel": 0.18, "nv": 0.45, "vasc": 0.05}
    Classification.objects.filter(image=image).update(
        probabilities=probabilities, top_class="nv", malignancy_score=0.43, malignant=True, threshold=0.3)
    html = _page(client_for(colleague), image)
    assert "Melanocytic nevus (nv)" in html and 'class="badge flagged"' in html
    assert "the malignant classes together" in html and "the flag follows the malignant group" in html


def test_it_shows_how_sure_the_model_is_and_what_it_measured(upload, client_for, colleague):
    image = upload(image_bytes(RED))
    html = _page(client_for(colleague), image)
    classification = image.classifications.get()
    runner_up = classification.runner_up
    assert f"ahead of {runner_up[1]} by" in html
    # The stand-in bundle has no test figures: the page says so instead of inventing them.
    assert 'id="performance"' in html and "not available" in html


def test_it_shows_the_served_models_measured_sensitivity_and_specificity(shipped_model, upload, client_for, colleague):
    image = upload(image_bytes((150, 90, 70), size=(200, 150)))
    html = _page(client_for(colleague), image)
    assert "held-out test images this model flagged" in html and "sensitivity, 95% CI" in html
    body = client_for(colleague).get(f"{API}/images/{image.pk}/").json()["classification"]
    performance = body["model_performance"]
    assert performance["model_version"] == shipped_model and 0 < performance["sensitivity"] <= 1
    assert performance["sensitivity_interval"][0] <= performance["sensitivity"] <= performance["sensitivity_interval"][1]


def test_it_answers_the_api_with_warnings_reading_and_uncertainty(upload, api_for, colleague):
    image = upload(image_bytes(BLUE))
    body = api_for(colleague).get(f"{API}/images/{image.pk}/").json()["classification"]
    assert body["warnings"][0]["code"] == "not_dermoscopic" and "not reliable" in body["warnings"][0]["message"]
    assert body["reading"]["level"] == UNRELIABLE and body["reading"]["headline"].startswith("This does not look")
    uncertainty = body["uncertainty"]
    assert 0 <= uncertainty["top_two_margin"] <= 1 and uncertainty["runner_up"] != body["top_class"]
    assert set(body["screening"]) >= {"brightness", "contrast", "sharpness", "margin", "feature_distance"}
    assert body["heatmap_url"].endswith(f"/api/v1/images/{image.pk}/heatmap/") and body["model_performance"] is None


# --- Heatmaps ------------------------------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int]:
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return decoded.shape[1], decoded.shape[0]


def _half_and_half(width: int = 160, height: int = 120, frame: int = 0) -> bytes:
    """Red on the left, green on the right; `frame` pixels of black around it (a dermatoscope's)."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:, : width // 2] = RED
    rgb[:, width // 2 :] = GREEN
    rgb = cv2.copyMakeBorder(rgb, frame, frame, frame, frame, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    _, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return data.tobytes()


def _overlay(response) -> np.ndarray:
    data = b"".join(response.streaming_content) if response.streaming else response.content
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(int)


def test_it_serves_the_heatmap_over_the_image_from_the_api(upload, api_for, colleague):
    image = upload(_half_and_half())
    response = api_for(colleague).get(f"{API}/images/{image.pk}/heatmap/", {"class": "mel"})
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    data = b"".join(response.streaming_content) if response.streaming else response.content
    assert _png_size(data) == (image.width, image.height)
    # The melanoma evidence is the red half: the overlay changes the left half, not the right one.
    overlay = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(int)
    left_change = np.abs(overlay[:, 10:60] - np.array(RED)).mean()
    right_change = np.abs(overlay[:, 100:150] - np.array(GREEN)).mean()
    assert left_change > 10 * max(right_change, 1)


@pytest.fixture
def cropping_model(settings, tmp_path):
    """The stand-in model, cropping to the dermatoscope's field of view (ml.field_of_view)."""
    settings.SKINPORTAL_MODEL_DIR = str(build_stand_in_bundle(tmp_path / "cropping", field_of_view=True))
    reset_classifier()
    yield
    reset_classifier()


def test_it_answers_and_draws_the_heatmap_inside_the_dermatoscopes_field_of_view(
        cropping_model, upload, api_for, client_for, colleague):
    framed, bare = upload(_half_and_half(frame=60)), upload(_half_and_half())
    result, bare_result = framed.classifications.get(), bare.classifications.get()
    assert result.field_of_view == {"top": 60, "left": 60, "height": 120, "width": 160,
                                    "image_height": 240, "image_width": 280}
    assert bare_result.field_of_view is None
    # The API says which part of the upload the model read, and that it read all of the bare one.
    api = api_for(colleague)
    assert api.get(f"{API}/images/{framed.pk}/").json()["classification"]["field_of_view"] == result.field_of_view
    assert api.get(f"{API}/images/{bare.pk}/").json()["classification"]["field_of_view"] is None
    # The model read what is inside the frame: the same answer as for the bare image.
    assert result.probabilities == pytest.approx(bare_result.probabilities, abs=1e-4)
    overlay = _overlay(api_for(colleague).get(f"{API}/images/{framed.pk}/heatmap/", {"class": "mel"}))
    assert overlay.shape == (240, 280, 3)
    assert overlay[:55].max() == 0 and overlay[185:].max() == 0 and overlay[:, :55].max() == 0  # the frame as it was
    left_change = np.abs(overlay[70:170, 70:120] - np.array(RED)).mean()
    right_change = np.abs(overlay[70:170, 160:210] - np.array(GREEN)).mean()
    assert left_change > 10 * max(right_change, 1)  # melanoma's evidence is the red half, inside the box
    page = client_for(colleague).get(reverse("image-detail", args=[framed.pk])).content.decode()
    assert 'id="field-of-view-note"' in page and "160×120 px" in page
    assert 'id="field-of-view-note"' not in client_for(colleague).get(reverse("image-detail", args=[bare.pk])).content.decode()


def test_it_prints_the_heatmap_inside_the_field_of_view_in_the_pdf_report(cropping_model, upload, owner, client_for):
    from diagnosis.reports.pictures import visit_pictures

    red = np.zeros((240, 280, 3), np.uint8)
    red[60:180, 60:220] = RED  # melanoma to the stand-in model, its evidence everywhere in the box
    image = upload(cv2.imencode(".png", cv2.cvtColor(red, cv2.COLOR_RGB2BGR))[1].tobytes())
    assert image.classifications.get().top_class == "mel"
    printed = visit_pictures(image=image, classification=image.classifications.get())
    heatmap = cv2.imdecode(np.frombuffer(printed.heatmap.jpeg, np.uint8), cv2.IMREAD_COLOR).astype(int)
    photo = cv2.imdecode(np.frombuffer(printed.photo.jpeg, np.uint8), cv2.IMREAD_COLOR).astype(int)
    assert heatmap.shape == photo.shape == (240, 280, 3)
    assert heatmap[:50].max() < 25 and heatmap[:, :50].max() < 25  # the frame stays black (JPEG noise aside)
    assert np.abs(heatmap[70:170, 70:210] - photo[70:170, 70:210]).mean() > 10  # the map is inside the box
    # The report says, as the result page does, that the skin under the frame was not seen.
    text = all_text(client_for(owner).get(reverse("image-report", args=[image.pk])).content)
    assert "field of view only (160×120 px of the image)" in text and "Skin the frame covers was not seen" in text


def test_it_gives_a_clear_404_when_a_stored_crop_box_cannot_be_drawn(cropping_model, upload, api_for, colleague):
    image = upload(_half_and_half(frame=60))
    Classification.objects.filter(image=image).update(field_of_view={"top": "sixty"})
    response = api_for(colleague).get(f"{API}/images/{image.pk}/heatmap/")
    assert response.status_code == 404 and "could not be drawn" in response.json()["error"]["message"]
    # The result itself still reads, without a box it cannot vouch for.
    result = api_for(colleague).get(f"{API}/images/{image.pk}/")
    assert result.status_code == 200 and result.json()["classification"]["field_of_view"] is None


def test_it_defaults_the_heatmap_to_the_top_class_and_refuses_an_unknown_class(upload, api_for, client_for, colleague):
    image = upload(_half_and_half())
    api = api_for(colleague)
    top = image.classifications.get().top_class
    default, explicit = api.get(f"{API}/images/{image.pk}/heatmap/"), api.get(f"{API}/images/{image.pk}/heatmap/", {"class": top})
    assert default.content == explicit.content
    error = api.get(f"{API}/images/{image.pk}/heatmap/", {"class": "cat"})
    assert error.status_code == 400 and "class" in error.json()["error"]["fields"]
    page = client_for(colleague).get(reverse("image-heatmap", args=[image.pk]), {"class": "cat"})
    assert page.status_code == 400 and b"Unknown class" in page.content


def test_it_gives_a_clear_404_when_a_result_has_no_heatmap(upload, api_for, colleague):
    image = upload(image_bytes(RED))
    Classification.objects.filter(image=image).update(activation_map=None)
    response = api_for(colleague).get(f"{API}/images/{image.pk}/heatmap/")
    assert response.status_code == 404 and "classify it again" in response.json()["error"]["message"]


def test_it_hides_the_heatmap_from_an_outsider_and_audits_every_read(upload, api_for, client_for, colleague, outsider):
    image = upload(image_bytes(RED))
    assert api_for(outsider).get(f"{API}/images/{image.pk}/heatmap/").status_code == 404
    assert client_for(outsider).get(reverse("image-heatmap", args=[image.pk])).status_code == 404
    ok = api_for(colleague).get(f"{API}/images/{image.pk}/heatmap/")
    events = AuditEvent.objects.filter(route__in=["api-image-heatmap", "image-heatmap"]).order_by("pk")
    assert [e.outcome for e in events] == ["denied", "denied", "ok"]
    assert ok.status_code == 200 and events.last().object_id == image.pk


def test_it_puts_the_heatmap_toggle_on_the_result_page(upload, client_for, colleague):
    image = upload(image_bytes(RED))
    html = _page(client_for(colleague), image)
    assert 'id="show-heatmap"' in html and f'src="{reverse("image-heatmap", args=[image.pk])}"' in html
    heatmap = client_for(colleague).get(reverse("image-heatmap", args=[image.pk]))
    assert heatmap.status_code == 200 and heatmap["Content-Type"] == "image/png"


# --- Minimum size ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (99, 400), (400, 40)])
def test_it_refuses_an_image_too_small_to_classify_and_stores_nothing(client_for, api_for, colleague, lesion, size):
    before = LesionImage.objects.count()
    data = image_bytes(RED, size=size)
    small = SimpleUploadedFile("small.png", data, content_type="image/png")
    response = api_for(colleague).post(f"{API}/images/", {"lesion": lesion.pk, "image": small}, format="multipart")
    assert response.status_code == 400
    assert "too small to classify" in str(response.json()["error"]["fields"]["image"])
    small = SimpleUploadedFile("small.png", data, content_type="image/png")
    page = client_for(colleague).post(reverse("lesion-upload", args=[lesion.pk]), {"images": [small], "captured_at": "2024-05-01"})
    assert page.status_code == 400 and b"too small to classify" in page.content
    assert LesionImage.objects.count() == before
