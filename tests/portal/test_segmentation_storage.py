"""The lesion outline stored with each classification (issue 14, part 1): computed after the
classifier's run, stored with the result (mask, area in px and mm² with a scale, descriptors),
shown on the result page and in the API, the mask served as a scoped, audited PNG; a
segmentation failure never fails the classification."""

from __future__ import annotations

import base64
import datetime as dt

import cv2
import numpy as np
import pytest

from diagnosis import inference, services
from diagnosis.models import AuditEvent, Classification, LesionImage
from tests.portal.helpers import RED, image_bytes


@pytest.fixture(autouse=True)
def classical_segmenter(monkeypatch):
    """These tests are about storing and showing an outline, not about how well a segmenter finds
    a lesion: the classical one (deterministic, exact on a drawn ellipse) is pinned, whatever
    segmentation bundle ml/models/SEGMENTER names. Imported by the compare and browser tests."""
    from ml.segmentation.segmenter import reset_segmenter

    monkeypatch.setenv("SKINPORTAL_SEGMENTER_DIR", "classical")
    reset_segmenter()
    yield
    reset_segmenter()


def lesion_png(*, size: tuple[int, int] = (400, 300), axes: tuple[int, int] = (70, 50), seed: int = 0) -> bytes:
    """A dermoscopy-like picture: a dark brown ellipse on skin, with a little noise."""
    width, height = size
    rng = np.random.default_rng(seed)
    rgb = np.empty((height, width, 3), np.int16)
    rgb[:] = (214, 170, 150)
    cv2.ellipse(rgb, (width // 2, height // 2), axes, 15, 0, 360, (110, 60, 35), -1)
    rgb = np.clip(rgb + rng.integers(-6, 7, rgb.shape), 0, 255).astype(np.uint8)
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def upload_with_scale(owner, lesion, run_on_commit, data: bytes, *, pixels_per_mm=None, captured_at=None) -> LesionImage:
    with run_on_commit():
        (image,) = services.uploads.lesion_image_upload(
            user=owner, lesion=lesion, files=[services.uploads.ImageUpload(name="lesion.png", data=data)],
            captured_at=captured_at, pixels_per_mm=pixels_per_mm,
        )
    return image


def test_it_stores_the_outline_and_descriptors_with_the_classification(owner, lesion, run_on_commit):
    image = upload_with_scale(owner, lesion, run_on_commit, lesion_png(), pixels_per_mm=10)
    seg = image.classifications.get().segmentation
    assert seg["method"] and seg["fallback"] is False
    assert (seg["width"], seg["height"]) == (400, 300)
    expected_area = np.pi * 70 * 50
    assert seg["area_px"] == pytest.approx(expected_area, rel=0.05)
    assert seg["area_mm2"] == pytest.approx(expected_area / 100, rel=0.05)  # 10 px per mm
    assert seg["diameter_mm"] == pytest.approx(14, rel=0.05)
    assert seg["centroid"] == pytest.approx([200, 150], abs=2)
    assert len(seg["outline"]) >= 8
    mask = cv2.imdecode(np.frombuffer(base64.b64decode(seg["mask_png_base64"]), np.uint8), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (300, 400) and set(np.unique(mask)) <= {0, 255}
    assert len(str(seg)) < 20_000  # small enough to keep with every result


def test_it_measures_a_large_image_reduced_but_reports_its_own_pixels(owner, lesion, run_on_commit):
    image = upload_with_scale(owner, lesion, run_on_commit, lesion_png(size=(2400, 1800), axes=(420, 300)))
    seg = image.classifications.get().segmentation
    assert max(seg["mask_width"], seg["mask_height"]) == inference.SEGMENTATION_MAX_SIDE
    assert seg["area_px"] == pytest.approx(np.pi * 420 * 300, rel=0.05)
    assert seg["area_mm2"] is None and seg["pixels_per_mm"] is None


def test_it_keeps_the_classification_when_the_segmentation_fails(owner, lesion, run_on_commit, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("segmenter exploded")

    monkeypatch.setattr(inference, "segment_image", broken)
    image = upload_with_scale(owner, lesion, run_on_commit, lesion_png())
    classification = image.classifications.get()
    assert classification.succeeded and classification.segmentation is None
    assert "segmentation failed" in caplog.text


def test_it_refuses_a_scale_out_of_range_on_page_and_api_storing_nothing(owner, lesion, client_for, api_for):
    page = client_for(owner).post(
        f"/lesions/{lesion.pk}/upload/",
        {"images": [_file(lesion_png())], "captured_at": "2026-01-01", "pixels_per_mm": "0.5"},
    )
    assert page.status_code == 400
    assert "pixels_per_mm" in page.context["form"].errors
    for bad in ("0", "-3", "5000", "nan", "inf", "many"):
        response = api_for(owner).post(
            "/api/v1/images/", {"lesion": lesion.pk, "image": _file(lesion_png()), "pixels_per_mm": bad},
            format="multipart",
        )
        assert response.status_code == 400, (bad, response.content)
        assert response.json()["error"]["fields"]["pixels_per_mm"]
    assert not LesionImage.objects.exists()


def test_it_refuses_a_non_finite_scale_in_the_service(owner, lesion):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        services.uploads.lesion_image_upload(
            user=owner, lesion=lesion, files=[services.uploads.ImageUpload(name="a.png", data=lesion_png())],
            pixels_per_mm=float("nan"),
        )


def test_it_accepts_a_scale_through_the_api_and_returns_the_outline(owner, lesion, api_for, run_on_commit):
    with run_on_commit():
        response = api_for(owner).post(
            "/api/v1/images/", {"lesion": lesion.pk, "image": _file(lesion_png()), "pixels_per_mm": "12.5"},
            format="multipart",
        )
    assert response.status_code == 201, response.content
    image_id = response.json()["id"]
    body = api_for(owner).get(f"/api/v1/images/{image_id}/").json()
    assert body["pixels_per_mm"] == 12.5
    seg = body["classification"]["segmentation"]
    assert seg["area_mm2"] == pytest.approx(np.pi * 70 * 50 / 12.5**2, rel=0.05)
    assert seg["mask_url"].endswith(f"/api/v1/images/{image_id}/mask/")
    assert "mask_png_base64" not in seg
    classification_id = body["classification"]["id"]
    detail = api_for(owner).get(f"/api/v1/classifications/{classification_id}/").json()
    assert detail["segmentation"]["area_px"] == seg["area_px"]


def test_it_serves_the_mask_to_members_only_and_audits_it(owner, colleague, outsider, lesion, upload, client_for,
                                                          api_for):
    image = upload(lesion_png())
    for user in (owner, colleague):
        response = api_for(user).get(f"/api/v1/images/{image.pk}/mask/")
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        assert response.content.startswith(b"\x89PNG")
    assert api_for(outsider).get(f"/api/v1/images/{image.pk}/mask/").status_code == 404
    assert client_for(owner).get(f"/images/{image.pk}/mask/").status_code == 200
    assert client_for(outsider).get(f"/images/{image.pk}/mask/").status_code == 404
    routes = set(AuditEvent.objects.values_list("route", flat=True))
    assert {"api-image-mask", "image-mask"} <= routes


def test_it_shows_the_outline_and_measurements_on_the_result_page(owner, lesion, run_on_commit, client_for):
    image = upload_with_scale(owner, lesion, run_on_commit, lesion_png(), pixels_per_mm=10)
    html = client_for(owner).get(f"/images/{image.pk}/").content.decode()
    assert 'id="outline-overlay"' in html and "<polygon points=" in html
    assert "Lesion outline and measurements" in html and "mm²" in html
    assert "Scale 10 pixels per mm" in html


def test_it_shows_nothing_for_a_result_without_an_outline(owner, lesion, upload, client_for, api_for):
    image = upload(image_bytes(RED))
    Classification.objects.filter(image=image).update(segmentation=None)  # as stored before 0009
    html = client_for(owner).get(f"/images/{image.pk}/").content.decode()
    assert "outline-overlay" not in html and "Lesion outline and measurements" not in html
    assert api_for(owner).get(f"/api/v1/images/{image.pk}/").json()["classification"]["segmentation"] is None
    response = api_for(owner).get(f"/api/v1/images/{image.pk}/mask/")
    assert response.status_code == 404 and response.json()["error"]["code"]
    assert client_for(owner).get(f"/images/{image.pk}/mask/").status_code == 404


def test_it_says_when_no_lesion_was_found(owner, lesion, upload, client_for):
    image = upload(lesion_png())
    classification = image.classifications.get()
    classification.segmentation["fallback"] = True  # what the segmenter stores when it finds none
    classification.save(update_fields=["segmentation"])
    html = client_for(owner).get(f"/images/{image.pk}/").content.decode()
    assert "No lesion outline was found" in html and "outline-overlay" not in html


def test_it_clears_the_outline_when_a_rerun_fails(owner, lesion, upload, monkeypatch, run_on_commit):
    image = upload(lesion_png())
    assert image.classifications.get().segmentation

    def unreadable(*args, **kwargs):
        raise inference.InvalidImageError("broken")

    monkeypatch.setattr(inference, "classify_many",
                        lambda images, contexts=None: [inference.InvalidImageError("broken")] * len(images))
    with run_on_commit():
        services.classification.classification_request(user=owner, image=image)
    classification = image.classifications.get()
    assert classification.failed and classification.segmentation is None


def _file(data: bytes, name: str = "lesion.png"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type="image/png")


def test_it_dates_are_not_needed_for_the_outline(owner, lesion, run_on_commit):
    image = upload_with_scale(owner, lesion, run_on_commit, lesion_png(seed=3), captured_at=dt.date(2025, 1, 1))
    assert image.classifications.get().segmentation["area_px"] > 0


def test_it_gives_older_results_an_outline_with_reclassify_outlines(owner, lesion, upload, run_on_commit):
    from io import StringIO

    from django.core.management import call_command

    image = upload(lesion_png())
    Classification.objects.filter(image=image).update(segmentation=None)  # as stored before 0009
    out = StringIO()
    call_command("reclassify", "--dry-run", "--outlines", stdout=out)
    assert "Would queue 1 image(s) without a lesion outline" in out.getvalue()
    assert Classification.objects.get(image=image).segmentation is None
    call_command("reclassify", stdout=StringIO())  # without the flag: the result stands as it is
    assert Classification.objects.get(image=image).segmentation is None
    with run_on_commit():
        call_command("reclassify", "--outlines", stdout=out)
    classification = Classification.objects.get(image=image)
    assert classification.succeeded and classification.segmentation["area_px"] > 0


def test_it_runs_the_segmenter_the_settings_name_with_the_settings_threads(owner, lesion, run_on_commit, settings,
                                                                         monkeypatch):
    """Like the classifier, the segmenter comes from Django settings (SKINPORTAL_SEGMENTER_DIR,
    SKINPORTAL_ORT_THREADS), passed to ml explicitly; the environment's choice is only the default."""
    from ml.manifest import named_segmenter_dir
    from ml.segmentation.segmenter import reset_segmenter
    from ml.segmentation.trained import TrainedSegmenter

    monkeypatch.delenv("SKINPORTAL_SEGMENTER_DIR")
    bundle = named_segmenter_dir()
    if bundle is None:
        pytest.skip("no trained segmentation bundle is named in ml/models/SEGMENTER")
    made: list[tuple[str, int | None]] = []
    real_init = TrainedSegmenter.__init__

    def recording_init(self, model_dir, *, threads=None):
        made.append((model_dir, threads))
        real_init(self, model_dir, threads=threads)

    monkeypatch.setattr(TrainedSegmenter, "__init__", recording_init)
    settings.SKINPORTAL_SEGMENTER_DIR, settings.SKINPORTAL_ORT_THREADS = bundle, 1
    reset_segmenter()
    trained = upload_with_scale(owner, lesion, run_on_commit, lesion_png(seed=1))
    assert made == [(bundle, 1)]
    assert trained.classifications.get().segmentation["method"].startswith("seg-")

    settings.SKINPORTAL_SEGMENTER_DIR = "classical"  # the settings win over the bundle ml/models names
    classical = upload_with_scale(owner, lesion, run_on_commit, lesion_png(seed=2))
    assert classical.classifications.get().segmentation["method"] == "classical-otsu-v1"
    assert made == [(bundle, 1)]  # no second trained session
