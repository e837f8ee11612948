"""Issue 13: the decompression budget (diagnosis/budget.py) that page uploads, API uploads and
batches share, ZIP bombs refused before inflating, all-or-nothing batches, the worker's early
reduction to model size, and stored files never larger than the upload (EXIF orientation).

Each test reproduces one attack at a small scale (the budgets are lowered so a test decodes a
few megapixels); scripts/bench_hostile_uploads.py sends the full-size payloads and measures.
"""

from __future__ import annotations

import html
import io
import struct
import weakref
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image, ImageOps

from diagnosis import budget as budget_module
from diagnosis import inference, services
from diagnosis.archives import ZIP_MAX_RATIO, ZipMembers
from diagnosis.budget import BudgetExceeded, UploadBudget
from diagnosis.models import Batch, Lesion, LesionImage
from diagnosis.reports import pictures
from ml import preprocessing
from ml.preprocessing import decode_image, without_metadata
from tests.portal.helpers import GREEN, RED, image_bytes
from tests.portal.hostile_corpus import (
    INFLATE_BUDGET,
    PIXEL_BUDGET,
    TOO_LARGE,
    jpeg_exif_rotated,
    jpeg_scan_bomb,
    png_chunk,
    png_of_zeros,
    zip_of,
    zip_overlapping,
)

ImageUpload = services.uploads.ImageUpload


def _png(name: str, side: int = 300) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, image_bytes(RED, size=(side, side)), content_type="image/png")


def _stored_files(settings) -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


def _assert_nothing_stored(settings) -> None:
    assert not Batch.objects.exists() and not LesionImage.objects.exists()
    assert _stored_files(settings) == []


@pytest.fixture
def decodes(monkeypatch) -> list[int]:
    """Counts OpenCV decodes (upload checks and the worker alike)."""
    calls: list[int] = []
    real = preprocessing.cv2.imdecode

    def counting(buffer, flags):
        calls.append(flags)
        return real(buffer, flags)

    monkeypatch.setattr(preprocessing.cv2, "imdecode", counting)
    return calls


@pytest.fixture
def no_inflating(monkeypatch) -> None:
    """Fails the test if a ZIP member is opened for reading (writing one is how tests build ZIPs)."""
    real_open = zipfile.ZipFile.open

    def refuse(self, name, mode="r", *args, **kwargs):
        if mode == "r":
            raise AssertionError(f"a ZIP member was inflated: {getattr(name, 'filename', name)}")
        return real_open(self, name, mode, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", refuse)


# --- One budget per request: page uploads, API uploads, batches -----------------------------


def test_it_has_the_figures_security_md_states(settings):
    budget = UploadBudget.for_request()
    assert budget.max_image_pixels == 25_000_000  # a 6000x4000 dermatoscope camera fits; 5100x5100 does not
    assert budget.max_pixels == 200_000_000
    assert budget.max_file_bytes == 40 * 1024 * 1024
    assert budget.max_inflated_bytes == 160 * 1024 * 1024
    assert budget.max_seconds == 4


def test_it_refuses_a_page_upload_over_the_pixel_budget_before_decoding_the_file_that_crosses_it(
    client_for, colleague, lesion, settings, decodes
):
    settings.SKINPORTAL_UPLOAD_PIXEL_BUDGET = 2 * 300 * 300  # two of the three files
    response = client_for(colleague).post(
        reverse("lesion-upload", args=[lesion.pk]),
        {"images": [_png("a.png"), _png("b.png"), _png("c.png")], "captured_at": "2024-05-01"},
    )
    assert response.status_code == 400
    page = html.unescape(response.content.decode())
    assert f"c.png would bring this upload to 0.3 megapixels {PIXEL_BUDGET} of 0.2 megapixels" in page
    assert "nothing was stored" in page
    assert len(decodes) == 2  # c.png was refused from its header
    _assert_nothing_stored(settings)


def test_it_refuses_files_over_the_file_budget_before_decoding_any(api_for, colleague, lesion, settings, decodes):
    # A JPEG's decoding costs by the byte: 9 MB of progressive noise take as long as 100 MP of a smooth one.
    settings.SKINPORTAL_UPLOAD_FILE_BUDGET = 2 * len(image_bytes(RED, size=(300, 300)))
    files = [_png(f"{i}.png") for i in range(3)]
    response = api_for(colleague).post("/api/v1/batches/", {"lesion": lesion.pk, "images": files}, format="multipart")
    assert response.status_code == 400, response.content
    assert "2.png would bring this upload to" in response.json()["error"]["fields"]["images"][0]
    assert "of image files, over the limit" in response.json()["error"]["message"]
    assert decodes == []
    _assert_nothing_stored(settings)


def test_it_refuses_a_jpeg_of_too_many_scans_before_decoding_it(decodes):
    with pytest.raises(inference.ImageTooLargeError, match="has 101 scans"):
        inference.sanitise_upload(jpeg_scan_bomb(400, 300, 101 - 10))  # Pillow's progressive JPEG has 10
    assert decodes == []
    assert inference.sanitise_upload(jpeg_scan_bomb(400, 300, 100 - 10)).extension == "jpg"


def test_it_charges_a_png_the_bytes_its_image_data_inflates_to(api_for, colleague, lesion, settings, decodes):
    png = png_of_zeros(1000, 1000, depth=16, colour_type=6)  # 8 bytes a pixel: 8 MB for zlib from 40 KB
    assert inference.png_inflated_size(png) == 1000 * (1 + 8000)
    settings.SKINPORTAL_UPLOAD_INFLATE_BUDGET = 4 * 1024 * 1024
    upload = SimpleUploadedFile("deep.png", png, content_type="image/png")
    response = api_for(colleague).post("/api/v1/images/", {"lesion": lesion.pk, "image": upload}, format="multipart")
    assert response.status_code == 400, response.content
    assert INFLATE_BUDGET in response.json()["error"]["fields"]["image"][0]
    assert decodes == []
    _assert_nothing_stored(settings)


def test_it_counts_what_an_interlaced_png_inflates_to():
    # Adam7: seven passes, each its own rows with a filter byte; a 10x7 RGB image here.
    width, height = 10, 7
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    raw = b"".join(
        bytes(len(range(y0, height, dy)) * (1 + 3 * len(range(x0, width, dx))))
        for x0, y0, dx, dy in passes
        if len(range(x0, width, dx)) and len(range(y0, height, dy))
    )
    png = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1))
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )
    assert decode_image(png).shape == (height, width, 3)  # libpng reads exactly that much
    assert inference.png_inflated_size(png) == len(raw)


def test_it_refuses_a_batch_of_files_over_the_budget_as_a_whole(owner, lesion, settings):
    settings.SKINPORTAL_UPLOAD_PIXEL_BUDGET = 3 * 200 * 200
    files = [ImageUpload(f"{i}.png", image_bytes(GREEN, size=(200, 200))) for i in range(5)]
    with pytest.raises(ValidationError) as refused:
        services.batches.batch_create(user=owner, lesion=lesion, files=files)
    assert PIXEL_BUDGET in str(refused.value.message_dict["images"])
    _assert_nothing_stored(settings)


def test_it_leaves_no_batch_lesion_or_file_when_a_zip_goes_over_the_budget_midway(owner, org, patient, settings):
    settings.SKINPORTAL_UPLOAD_PIXEL_BUDGET = 2 * 200 * 200
    csv_text = "file,patient,lesion,body_site\n" + "".join(f"{i}.png,MRN-001,Left calf,back\n" for i in range(4))
    archive = zip_of(
        [("map.csv", csv_text.encode())] + [(f"{i}.png", image_bytes(RED, size=(200, 200))) for i in range(4)],
        deflated=True,
    )
    with pytest.raises(ValidationError) as refused:
        services.batches.batch_create(user=owner, organisation=org, archive=io.BytesIO(archive))
    assert "2.png would bring this upload to" in str(refused.value.message_dict["archive"])
    assert not Lesion.objects.filter(label="Left calf").exists()  # the CSV's new lesion went too
    _assert_nothing_stored(settings)


def test_it_leaves_no_batch_running_when_a_batch_fails_after_storing_files(owner, lesion, settings, monkeypatch):
    # The SIGKILLed worker left 32 images of a batch "running" for ever: now nothing of a
    # batch is committed before all of it is.
    real, seen = inference.sanitise_upload, []

    def dies_on_the_twentieth(data, **kwargs):
        seen.append(1)
        if len(seen) == 20:
            raise RuntimeError("worker killed")
        return real(data, **kwargs)

    monkeypatch.setattr(inference, "sanitise_upload", dies_on_the_twentieth)
    files = [ImageUpload(f"{i}.png", image_bytes()) for i in range(24)]
    with pytest.raises(RuntimeError):
        services.batches.batch_create(user=owner, lesion=lesion, files=files)
    _assert_nothing_stored(settings)


def test_it_refuses_a_batch_that_runs_past_its_seconds_and_stores_nothing(owner, lesion, settings, monkeypatch):
    # The budgets add up (slow JPEG bytes, then slow PNG rows, then many small files): the clock
    # backs them. Here each look at it is 0.3 s later; the second image would start at 1.2 s.
    ticks = iter(range(100))
    monkeypatch.setattr(budget_module.time, "monotonic", lambda: 0.3 * next(ticks))
    settings.SKINPORTAL_UPLOAD_SECONDS = 1
    archive = zip_of([(f"{i}.png", image_bytes(RED, size=(200, 200))) for i in range(4)], deflated=True)
    with pytest.raises(ValidationError) as refused:
        services.batches.batch_create(user=owner, lesion=lesion, archive=io.BytesIO(archive))
    assert "1.png: this upload has taken 1.2 s to check, over the 1 s" in str(refused.value.message_dict["archive"])
    _assert_nothing_stored(settings)


def test_it_stores_a_batch_within_the_budget(api_for, colleague, lesion, run_on_commit, settings):
    settings.SKINPORTAL_UPLOAD_PIXEL_BUDGET = 4 * 200 * 200  # exactly the four images
    archive = zip_of([(f"{i}.png", image_bytes(RED, size=(200, 200))) for i in range(4)], deflated=True)
    with run_on_commit():
        response = api_for(colleague).post(
            "/api/v1/batches/",
            {"lesion": lesion.pk, "archive": SimpleUploadedFile("s.zip", archive)},
            format="multipart",
        )
    assert response.status_code == 201, response.content
    assert LesionImage.objects.filter(batch_id=response.json()["id"]).count() == 4


# --- ZIP bombs: refused from the central directory ----------------------------------------


def _members(data: bytes, **limits) -> ZipMembers:
    return ZipMembers(
        io.BytesIO(data),
        max_bytes=limits.get("max_bytes", 10 * 1024 * 1024),
        max_files=limits.get("max_files", 500),
        budget=limits.get("budget") or UploadBudget.for_request(),
    )


def test_it_refuses_overlapping_zip_entries_before_inflating_any(no_inflating):
    with pytest.raises(ValidationError, match="entries overlap"):
        _members(zip_overlapping(50, 1024 * 1024))


def test_it_refuses_entries_that_share_bytes_without_sharing_an_offset(no_inflating):
    # A second entry that starts inside the first one's data.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.png", np.random.default_rng(1).bytes(4096))
        inner = zipfile.ZipInfo("a.png")
        inner.header_offset, inner.compress_size, inner.file_size, inner.CRC = 100, 10, 10, 0
        zf.filelist.append(inner)
    with pytest.raises(ValidationError, match="entries overlap"):
        _members(buffer.getvalue())


def test_it_refuses_a_member_that_inflates_like_a_bomb_before_inflating_it(no_inflating):
    with pytest.raises(ValidationError, match=f"more than the {ZIP_MAX_RATIO} times"):
        _members(zip_of([("good.png", image_bytes()), ("zeros.png", bytes(1024 * 1024))], deflated=True))


def test_it_refuses_members_declaring_more_than_the_budget_before_inflating_them(no_inflating):
    members = [(f"{i}.jpg", np.random.default_rng(i).bytes(300_000)) for i in range(4)]
    budget = UploadBudget(
        max_image_pixels=25_000_000, max_pixels=200_000_000, max_file_bytes=1_000_000, max_inflated_bytes=10**9
    )
    with pytest.raises(ValidationError, match="unpack to 1.1 MiB, more than the 1.0 MiB of image files"):
        _members(zip_of(members, deflated=False), budget=budget)


def test_it_refuses_a_zip_of_too_many_entries_before_parsing_its_directory(monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for i in range(150):
            zf.writestr(f"{i}/", b"")

    def no_parsing(*args, **kwargs):
        raise AssertionError("the central directory was parsed")

    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", no_parsing)
    with pytest.raises(ValidationError, match="The ZIP has 150 entries; a batch of at most 10 images may have 130"):
        _members(buffer.getvalue(), max_files=10)


def test_it_charges_each_member_to_the_budget_as_it_is_read():
    images = [(f"{i}.png", image_bytes(size=(150, 150))) for i in range(3)]
    sizes = [len(data) for _, data in images]
    budget = UploadBudget(
        max_image_pixels=25_000_000, max_pixels=10**9, max_file_bytes=sum(sizes), max_inflated_bytes=10**9
    )
    with _members(zip_of(images, deflated=True), budget=budget) as members:
        read = iter(members)
        next(read)
        assert budget.file_bytes == sizes[0]
        budget.file_bytes += 1  # something else of the request took its share meanwhile
        next(read)
        with pytest.raises(BudgetExceeded, match="2.png would bring this upload to"):
            next(read)


@pytest.mark.parametrize("layout", ["streamed", "self-extracting"])
def test_it_reads_ordinary_zips_whatever_their_layout(layout):
    # Data descriptors after each member (a ZIP written to a pipe), or a stub before the archive.
    images = [(f"{i}.png", image_bytes(size=(120, 100 + i))) for i in range(3)]

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.out = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, data) -> int:
            self.out += data
            return len(data)

    pipe = Pipe()
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in images:
            zf.writestr(name, data)
    data = bytes(pipe.out) if layout == "streamed" else b"#!/bin/sh\nexit 0\n" * 64 + zip_of(images, deflated=True)
    with _members(data) as members:
        assert [(m.name, m.data) for m in members] == images


# --- The worker: one full-size image at a time ----------------------------------------------


def test_it_classifies_a_micro_batch_holding_one_full_size_image_at_a_time(monkeypatch):
    classifier = inference.get_classifier()
    height, width = classifier.config.height_width
    sizes = [(900, 700), (640, 480), (500, 800)]
    images = [image_bytes(RED, size=size) for size in sizes]
    alive: list[weakref.ref] = []
    real_decode = preprocessing.decode_image

    def tracked_decode(data, **kwargs):
        rgb = real_decode(data, **kwargs)
        alive.append(weakref.ref(rgb))
        return rgb

    def reader(index: int):
        def read() -> bytes:
            # Read only when its turn comes, and every earlier full-size image is gone by then.
            assert len(alive) == index and all(ref() is None for ref in alive)
            return images[index]

        return read

    fed: list[tuple[int, ...]] = []
    real_predict = type(classifier).predict_batch
    monkeypatch.setattr(preprocessing, "decode_image", tracked_decode)
    monkeypatch.setattr(
        type(classifier),
        "predict_batch",
        lambda self, batch, **kw: fed.extend(view.image.shape for view in batch) or real_predict(self, batch, **kw),
    )
    results = inference.classify_many([reader(i) for i in range(len(images))])
    assert all(isinstance(result, inference.PortalPrediction) for result in results)
    assert fed == [(height, width, 3)] * len(images)  # model-sized pixels only


def test_it_gives_the_results_of_a_full_size_decode():
    classifier = inference.get_classifier()
    images = [image_bytes(GREEN, size=(900, 700)), image_bytes(RED, size=(480, 640), fmt="jpg")]
    early = inference.classify_many(images)
    full = classifier.predict_batch([decode_image(data) for data in images])
    for reduced, whole in zip(early, full):
        assert reduced.probabilities == whole.probabilities and reduced.screening == whole.screening


def test_it_reports_a_stored_file_it_cannot_read_and_classifies_the_others():
    def unreadable() -> bytes:
        raise OSError("gone")

    results = inference.classify_many([unreadable, image_bytes()])
    assert isinstance(results[0], OSError) and isinstance(results[1], inference.PortalPrediction)


# --- Storage amplification: a turned photo stays its own JPEG -----------------------------


def test_it_stores_an_exif_rotated_jpeg_as_its_own_jpeg_no_larger_than_the_upload():
    upload = jpeg_exif_rotated(1600, 1200)  # lying on its side, orientation 6
    item = inference.sanitise_upload(upload)
    assert (item.extension, item.source_format) == ("jpg", "JPEG")
    assert len(item.data) <= len(upload)  # a PNG re-encoding was 2.6 times the upload
    assert (item.width, item.height) == (1200, 1600)  # upright
    with Image.open(io.BytesIO(item.data)) as stored:
        assert dict(stored.getexif()) == {0x0112: 6}  # the orientation, and nothing else of the EXIF
        assert stored.size == (1600, 1200) and ImageOps.exif_transpose(stored).size == (1200, 1600)
    assert b"PhoneMaker" not in item.data
    # The upload's own compressed pixels, unchanged; every decoder turns them by the tag.
    at = item.data.index(b"\xff\xe1\x00\x22Exif")  # APP1 of 34 bytes: the tag we wrote
    assert item.data[:at] + item.data[at + 36 :] == without_metadata(upload, "JPEG")
    assert np.array_equal(decode_image(item.data), decode_image(upload))


def test_it_prints_an_exif_rotated_jpeg_upright_in_the_pdf_report():
    item = inference.sanitise_upload(jpeg_exif_rotated(400, 300))
    small = pictures._downscaled(item.data)
    assert small.width < small.height  # turned like on the result page, so the heatmap lines up


def test_it_refuses_an_exif_rotated_png_whose_upright_copy_is_over_the_cap(settings):
    pixels = np.random.default_rng(3).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", exif=exif.tobytes())
    assert inference.sanitise_upload(buffer.getvalue()).extension == "png"  # turned and re-encoded
    settings.SKINPORTAL_MAX_UPLOAD_BYTES = len(buffer.getvalue()) // 2
    with pytest.raises(inference.InvalidImageError, match="save it upright"):
        inference.sanitise_upload(buffer.getvalue())


# --- The per-image cap ---------------------------------------------------------------------


def test_it_takes_an_image_at_the_pixel_cap_and_refuses_one_over_it(settings):
    settings.SKINPORTAL_MAX_IMAGE_PIXELS = 1000 * 1000
    assert inference.sanitise_upload(png_of_zeros(1000, 1000)).width == 1000
    with pytest.raises(inference.ImageTooLargeError, match=TOO_LARGE):
        inference.sanitise_upload(png_of_zeros(1001, 1000))
