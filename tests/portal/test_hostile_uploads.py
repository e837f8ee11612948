"""Hostile uploads (tests/portal/hostile_corpus.py) through the page, the API and a ZIP batch.

Every refused case must answer 400 with a clear message and leave nothing behind: no image row,
no classification, no file under MEDIA_ROOT. Accepted cases are real JPEG/PNG content under a
misleading name or type, stored as their own compressed data, never larger than the upload.
The hostile archives (ZIP bombs) are refused whole as batches, on the page and through the API.
"""

from __future__ import annotations

import html
import io
import time
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image, ImageFile, ImageOps

from diagnosis import services
from diagnosis.models import Batch, Classification, Lesion, LesionImage
from ml import preprocessing
from ml.preprocessing import decode_image
from tests.conftest import make_image
from tests.portal.helpers import GREEN, image_bytes
from tests.portal.hostile_corpus import (
    ACCEPTED_FILES,
    HOSTILE_ARCHIVES,
    HOSTILE_CASE_COUNT,
    HOSTILE_FILES,
    REFUSED_FILES,
    TOO_LARGE,
    HostileArchive,
    HostileFile,
)

pytestmark = pytest.mark.django_db

API_IMAGES = "/api/v1/images/"
BOMBS = [case for case in REFUSED_FILES if case.message == TOO_LARGE]


def _ids(case: HostileFile | HostileArchive) -> str:
    return case.name


def _file(case: HostileFile) -> SimpleUploadedFile:
    return SimpleUploadedFile(case.filename, case.data, content_type=case.content_type)


def _apply_size_cap(settings, case: HostileFile) -> None:
    if case.max_upload_bytes is not None:
        assert len(case.data) > case.max_upload_bytes
        settings.SKINPORTAL_MAX_UPLOAD_BYTES = case.max_upload_bytes


def _stored_files(settings) -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


def _assert_nothing_stored(settings) -> None:
    assert LesionImage.objects.count() == 0
    assert Classification.objects.count() == 0
    assert _stored_files(settings) == []


def _post_page(client, lesion, upload: SimpleUploadedFile):
    return client.post(reverse("lesion-upload", args=[lesion.pk]), {"images": [upload], "captured_at": "2024-05-01"})


def _post_api(api, lesion, upload: SimpleUploadedFile):
    return api.post(API_IMAGES, {"lesion": lesion.pk, "image": upload}, format="multipart")


def test_it_covers_every_case_the_issue_names():
    names = {case.name for case in HOSTILE_FILES}
    assert HOSTILE_CASE_COUNT == len(HOSTILE_FILES) == len(names)  # unique ids
    for expected in (
        "zero-byte",
        "random-bytes",
        "truncated-jpeg",
        "truncated-png-in-idat",
        "corrupt-jpeg-scan",
        "svg-with-script",
        "html-named-jpg",
        "pdf",
        "gif",
        "polyglot-jpeg-html",
        "jpeg-magic-then-html",
        "over-the-size-cap",
        "png-named-jpg",
        "bomb-png-1bit-5100x5100",
        "bomb-jpeg-3000-scans",
        "jpeg-exif-rotated-large",
    ):
        assert expected in names
    archives = {case.name for case in HOSTILE_ARCHIVES}
    assert len(archives) == len(HOSTILE_ARCHIVES)
    assert {
        "zip-of-60-zero-pngs-deflated",
        "zip-of-zero-pngs-over-the-pixel-budget",
        "zip-of-500-overlapping-entries",
        "zip-member-inflating-1000-times",
        "zip-declaring-more-than-the-file-budget",
    } <= archives
    assert len(BOMBS) >= 2 and ACCEPTED_FILES
    assert all(case.message for case in REFUSED_FILES) and not any(case.message for case in ACCEPTED_FILES)


@pytest.mark.parametrize("case", REFUSED_FILES, ids=_ids)
def test_it_refuses_a_hostile_file_on_the_upload_page(case, client_for, colleague, lesion, settings):
    _apply_size_cap(settings, case)
    response = _post_page(client_for(colleague), lesion, _file(case))
    assert response.status_code == 400
    assert case.message in html.unescape(response.content.decode())
    _assert_nothing_stored(settings)


@pytest.mark.parametrize("case", REFUSED_FILES, ids=_ids)
def test_it_refuses_a_hostile_file_through_the_api(case, api_for, colleague, lesion, settings):
    _apply_size_cap(settings, case)
    response = _post_api(api_for(colleague), lesion, _file(case))
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["status"] == 400 and error["code"] == "invalid"
    assert case.message in error["message"]
    assert any(case.message in message for message in error["fields"]["image"])
    _assert_nothing_stored(settings)


def _another(lesion: Lesion, user) -> Lesion:
    """A second lesion of the patient: the first one refuses a file it already has."""
    return services.patients.lesion_create(user=user, patient=lesion.patient, body_site="back", label="Second")


@pytest.mark.parametrize("case", ACCEPTED_FILES, ids=_ids)
def test_it_stores_real_image_content_whatever_the_name_says(case, client_for, api_for, colleague, lesion):
    assert _post_page(client_for(colleague), lesion, _file(case)).status_code == 302
    assert _post_api(api_for(colleague), _another(lesion, colleague), _file(case)).status_code == 201
    images = list(LesionImage.objects.all())
    assert [image.source_format for image in images] == [case.accepted_as] * 2
    with Image.open(io.BytesIO(case.data)) as sent:
        sent_size, upright_size = sent.size, ImageOps.exif_transpose(sent).size
    for image in images:  # stored in its real format, whatever the name or the declared type
        with image.file.open("rb") as fh, Image.open(io.BytesIO(fh.read())) as stored:
            assert stored.format == case.accepted_as and stored.size == sent_size
            assert ImageOps.exif_transpose(stored).size == upright_size == (image.width, image.height)
        assert image.stored_extension == {"JPEG": "jpg", "PNG": "png"}[case.accepted_as]
        assert image.size_bytes == image.file.size <= len(case.data)  # never amplified (issue 13)


@pytest.mark.parametrize("case", BOMBS, ids=_ids)
def test_it_refuses_a_decompression_bomb_before_decoding_any_pixel(case, api_for, colleague, lesion, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("a decompression bomb reached a pixel decoder")

    monkeypatch.setattr(preprocessing.cv2, "imdecode", no_decoding)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    started = time.perf_counter()
    response = _post_api(api_for(colleague), lesion, _file(case))
    elapsed = time.perf_counter() - started
    assert response.status_code == 400 and TOO_LARGE in response.json()["error"]["message"]
    assert elapsed < 2.0  # header only: a full decode of these would take seconds and gigabytes
    assert LesionImage.objects.count() == 0


def _jpeg_with_gps() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0110] = "Model X"  # Model
    exif[0x0132] = "2024:05:01 10:00:00"  # DateTime
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (51.0, 30.0, 12.5)  # latitude
    gps[3], gps[4] = "W", (0.0, 7.0, 39.0)  # longitude
    buffer = io.BytesIO()
    Image.fromarray(make_image(128, 100)).save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


def test_it_stores_no_exif_or_gps_from_an_upload(client_for, api_for, colleague, lesion):
    data = _jpeg_with_gps()
    with Image.open(io.BytesIO(data)) as source:  # the upload really carries them
        assert source.getexif().get_ifd(0x8825)[2] == (51.0, 30.0, 12.5)
    upload = SimpleUploadedFile("gps.jpg", data, content_type="image/jpeg")
    assert _post_page(client_for(colleague), lesion, upload).status_code == 302
    upload = SimpleUploadedFile("gps.jpg", data, content_type="image/jpeg")
    assert _post_api(api_for(colleague), _another(lesion, colleague), upload).status_code == 201
    images = list(LesionImage.objects.all())
    assert len(images) == 2
    for image in images:
        with image.file.open("rb") as fh:
            stored_bytes = fh.read()
        with Image.open(io.BytesIO(stored_bytes)) as stored:
            assert stored.format == "JPEG"  # its own data, not re-encoded
            assert len(stored.getexif()) == 0 and not stored.getexif().get_ifd(0x8825)
            assert "exif" not in stored.info and not {"icc_profile", "XML:com.adobe.xmp"} & set(stored.info)
        assert b"PhoneMaker" not in stored_bytes and b"Exif" not in stored_bytes
        assert np.array_equal(decode_image(stored_bytes), decode_image(data))  # the same pixels
        served = client_for(colleague).get(reverse("image-file", args=[image.pk]))
        assert b"".join(served.streaming_content) == stored_bytes
        assert served["Content-Type"] == "image/jpeg" and served["X-Content-Type-Options"] == "nosniff"
        assert "script-src 'self'" in served["Content-Security-Policy"]


def test_it_reports_each_hostile_member_of_a_zip_batch_and_stores_the_others(api_for, colleague, lesion, run_on_commit):
    import zipfile

    # The size cap on ZIP members is covered by test_batches.py.
    hostile = {f"{c.name}{Path(c.filename).suffix}": c for c in HOSTILE_FILES if c.max_upload_bytes is None}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("good.png", image_bytes(GREEN))
        for name, case in hostile.items():
            zf.writestr(name, case.data)
    archive = SimpleUploadedFile("session.zip", buffer.getvalue(), content_type="application/zip")
    with run_on_commit():
        response = api_for(colleague).post(
            "/api/v1/batches/", {"lesion": lesion.pk, "archive": archive}, format="multipart"
        )
    assert response.status_code == 201, response.content
    body = response.json()
    rejected = {item["name"]: item["error"] for item in body["rejected"]}
    expected_refused = {name for name, case in hostile.items() if not case.accepted}
    assert set(rejected) == expected_refused
    for name in expected_refused:
        assert hostile[name].message in rejected[name], (name, rejected[name])
    expected_stored = {"good.png"} | {name for name, case in hostile.items() if case.accepted}
    assert {image["name"] for image in body["images"]} == expected_stored
    assert LesionImage.objects.filter(batch_id=body["id"]).count() == len(expected_stored)
    assert Batch.objects.get().received == len(hostile) + 1


# --- Hostile archives: refused whole, as batches --------------------------------------------


def _archive(case: HostileArchive) -> SimpleUploadedFile:
    return SimpleUploadedFile(f"{case.name}.zip", case.data, content_type="application/zip")


def _assert_no_batch_left(settings) -> None:
    assert not Batch.objects.exists()
    _assert_nothing_stored(settings)


@pytest.fixture
def no_inflating(monkeypatch):
    """Fails the test if a ZIP member is opened (inflated); yields a switch to arm it."""
    import zipfile

    armed = []
    real_open = zipfile.ZipFile.open

    def guarded(self, name, mode="r", *args, **kwargs):
        if armed and mode == "r":
            raise AssertionError(f"a ZIP member was inflated: {getattr(name, 'filename', name)}")
        return real_open(self, name, mode, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", guarded)
    return armed


@pytest.mark.parametrize("case", HOSTILE_ARCHIVES, ids=_ids)
def test_it_refuses_a_hostile_archive_whole_through_the_api(case, api_for, colleague, lesion, settings, no_inflating):
    for name, value in case.settings:
        setattr(settings, name, value)
    if case.before_inflating:
        no_inflating.append(True)
    response = api_for(colleague).post(
        "/api/v1/batches/", {"lesion": lesion.pk, "archive": _archive(case)}, format="multipart"
    )
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert case.message in error["message"] and any(case.message in m for m in error["fields"]["archive"])
    _assert_no_batch_left(settings)


@pytest.mark.parametrize("case", HOSTILE_ARCHIVES, ids=_ids)
def test_it_refuses_a_hostile_archive_whole_on_the_batch_page(case, client_for, colleague, lesion, settings):
    for name, value in case.settings:
        setattr(settings, name, value)
    response = client_for(colleague).post(reverse("batch-create"), {"lesion": lesion.pk, "archive": _archive(case)})
    assert response.status_code == 400
    assert case.message in html.unescape(response.content.decode())
    _assert_no_batch_left(settings)
