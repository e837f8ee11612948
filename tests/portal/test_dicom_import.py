"""DICOM import (issue 15, part 3): a DICOM upload (page, API, `manage.py import_dicom`) is judged
from its bytes, refused from its header when it cannot be taken (before any pixel is decoded), and
stored as an RGB PNG of its pixels with nothing of its header; a bad file changes nothing stored."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from diagnosis import inference, services
from diagnosis.models import AuditEvent, Lesion, LesionImage
from tests.portal.helpers import RED, image_bytes

API = "/api/v1"


def _rgb(width: int = 160, height: int = 120, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.array(RED, dtype=np.int16)
    return np.clip(base + rng.integers(-30, 31, (height, width, 3)), 0, 255).astype(np.uint8)


def make_dicom(
    pixels: np.ndarray | None = None,
    *,
    photometric: str | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    pixel_data: bytes | None = None,
    with_pixel_data: bool = True,
    **attributes,
) -> bytes:
    """A DICOM Part 10 file of `pixels` (H x W x 3 RGB or H x W grey), with `attributes` set last."""
    pixels = _rgb() if pixels is None else pixels
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID = "Header^Name", "HEADER-ID"  # never used by the portal
    ds.Modality = "XC"
    ds.Rows, ds.Columns = pixels.shape[:2]
    grey = pixels.ndim == 2
    ds.SamplesPerPixel = 1 if grey else 3
    ds.PhotometricInterpretation = photometric or ("MONOCHROME2" if grey else "RGB")
    if not grey:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if with_pixel_data:
        ds.PixelData = pixel_data if pixel_data is not None else pixels.tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        ds.save_as(buffer, enforce_file_format=True)
    else:
        if transfer_syntax not in (ExplicitVRLittleEndian,):
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _stored_pixels(image: LesionImage) -> np.ndarray:
    with image.file.open("rb") as handle:
        data = handle.read()
    assert data.startswith(b"\x89PNG")  # stored as PNG, whatever came in
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _refused(owner, lesion, data: bytes, *, name: str = "scan.dcm") -> str:
    """Upload through the service; the ValidationError's message, with nothing stored or changed."""
    before = (LesionImage.objects.count(), list(Lesion.objects.values_list("id", "body_site", "label")))
    with pytest.raises(ValidationError) as refused:
        services.uploads.lesion_image_upload(
            user=owner, lesion=lesion, files=[services.uploads.ImageUpload(name=name, data=data)]
        )
    assert (LesionImage.objects.count(), list(Lesion.objects.values_list("id", "body_site", "label"))) == before
    return " ".join(refused.value.messages)


# --- Round trips ----------------------------------------------------------------------------------


def test_it_imports_an_rgb_dicom_as_the_same_pixels_in_a_png(owner, lesion, upload):
    pixels = _rgb()
    image = upload(make_dicom(pixels))
    assert (image.source_format, image.width, image.height, image.stored_extension) == ("DICOM", 160, 120, "png")
    assert np.array_equal(_stored_pixels(image), pixels)
    assert image.classifications.get().succeeded  # the rest of the pipeline is unchanged
    with image.file.open("rb") as handle:
        assert b"HEADER-ID" not in handle.read() and b"Header" not in image.file.read()  # no header kept


def test_it_imports_a_monochrome_dicom_as_grey_rgb(owner, lesion, upload):
    grey = _rgb()[:, :, 0]
    image = upload(make_dicom(grey))
    assert np.array_equal(_stored_pixels(image), np.repeat(grey[:, :, None], 3, axis=2))


def test_it_imports_an_exported_image_with_identical_pixels(owner, lesion, upload, api_for, patient, run_on_commit):
    original = upload(image_bytes(RED, size=(150, 110), fmt="jpg"))
    exported = api_for(owner).get(reverse("api-image-dicom", kwargs={"image_id": original.pk})).content
    other = services.patients.lesion_create(user=owner, patient=patient, body_site="face", label="Cheek")
    again = upload(exported, target=other)
    with original.file.open("rb") as handle:
        first = cv2.cvtColor(cv2.imdecode(np.frombuffer(handle.read(), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(_stored_pixels(again), first)
    assert again.lesion == other and again.lesion.patient == patient  # the portal's choice, not the header's


def test_it_imports_planar_and_ybr_full_pixels(owner, lesion, upload):
    pixels = _rgb(seed=2)
    planar = make_dicom(pixels, pixel_data=pixels.transpose(2, 0, 1).tobytes(), PlanarConfiguration=1)
    assert np.array_equal(_stored_pixels(upload(planar)), pixels)
    from pydicom.pixels import convert_color_space

    ybr = convert_color_space(pixels.copy(), "RGB", "YBR_FULL")
    back = convert_color_space(ybr.copy(), "YBR_FULL", "RGB")
    stored = _stored_pixels(upload(make_dicom(ybr, photometric="YBR_FULL")))
    assert np.array_equal(stored, back)


def test_it_imports_a_jpeg_baseline_dicom(owner, lesion, upload):
    jpeg = image_bytes(RED, size=(160, 120), fmt="jpg")
    data = make_dicom(
        _rgb(), photometric="YBR_FULL_422", transfer_syntax=JPEGBaseline8Bit, pixel_data=encapsulate([jpeg])
    )
    image = upload(data)
    assert (image.source_format, image.stored_extension) == ("DICOM", "jpg")  # the frame itself, not re-encoded
    with image.file.open("rb") as handle:
        stored = handle.read()
    assert stored == jpeg  # helpers' JPEGs carry no metadata, so without_metadata keeps every byte
    assert image.classifications.get().succeeded


def test_it_takes_a_dicom_through_the_upload_page_and_the_api(colleague, lesion, client_for, api_for, run_on_commit):
    with run_on_commit():
        page = client_for(colleague).post(
            reverse("lesion-upload", args=[lesion.pk]),
            {"images": [SimpleUploadedFile("a.dcm", make_dicom(_rgb(seed=3)), content_type="application/dicom")],
             "captured_at": "2024-05-01"},
        )
    assert page.status_code == 302, page.content.decode()[:500]
    api = api_for(colleague).post(
        f"{API}/images/",
        {"lesion": lesion.pk, "image": SimpleUploadedFile("b", make_dicom(_rgb(seed=4)), "application/dicom")},
        format="multipart",
    )
    assert api.status_code == 201, api.content
    assert set(LesionImage.objects.values_list("source_format", flat=True)) == {"DICOM"}


def test_it_explains_a_refused_dicom_on_the_page_and_in_the_api(colleague, lesion, client_for, api_for):
    bad = make_dicom(_rgb(), BitsAllocated=16, BitsStored=16, HighBit=15)
    page = client_for(colleague).post(
        reverse("lesion-upload", args=[lesion.pk]),
        {"images": [SimpleUploadedFile("a.dcm", bad, content_type="application/dicom")], "captured_at": "2024-05-01"},
    )
    assert page.status_code == 400 and "only 8-bit images" in page.content.decode()
    api = api_for(colleague).post(
        f"{API}/images/", {"lesion": lesion.pk, "image": SimpleUploadedFile("b.dcm", bad, "application/dicom")},
        format="multipart",
    )
    assert api.status_code == 400 and "only 8-bit images" in api.content.decode()
    assert not LesionImage.objects.exists()


# --- Refused, with nothing stored -----------------------------------------------------------------


def test_it_refuses_a_file_named_dcm_that_is_not_dicom(owner, lesion):
    assert "not a recognised image" in _refused(owner, lesion, b"\0" * 128 + b"NOPE" + b"x" * 500)


def test_it_refuses_a_truncated_dicom(owner, lesion, upload):
    upload(image_bytes(RED))  # something already stored, which must not change
    data = make_dicom(_rgb())
    assert "truncated" in _refused(owner, lesion, data[: len(data) - 5000])
    assert "truncated" in _refused(owner, lesion, data[:200])


def test_it_refuses_a_dicom_without_pixel_data(owner, lesion):
    assert "no Pixel Data" in _refused(owner, lesion, make_dicom(_rgb(), with_pixel_data=False))


def test_it_refuses_huge_rows_and_columns_before_decoding(owner, lesion, monkeypatch):
    import ml.dicom_input

    def never(*args, **kwargs):
        raise AssertionError("the pixel data was read")

    monkeypatch.setattr(ml.dicom_input, "decode_dicom", never)
    data = make_dicom(_rgb(), Rows=60000, Columns=60000)
    assert "too large to decode safely" in _refused(owner, lesion, data)


def test_it_refuses_a_multi_frame_dicom(owner, lesion):
    assert "2 frames" in _refused(owner, lesion, make_dicom(_rgb(), NumberOfFrames=2))


def test_it_refuses_a_16_bit_dicom(owner, lesion):
    grey = np.zeros((120, 160), dtype=np.uint16)
    data = make_dicom(grey, pixel_data=grey.tobytes(), BitsAllocated=16, BitsStored=12, HighBit=11)
    assert "only 8-bit images" in _refused(owner, lesion, data)


def test_it_refuses_an_unsupported_compressed_transfer_syntax(owner, lesion):
    data = make_dicom(_rgb(), transfer_syntax=RLELossless, pixel_data=encapsulate([b"\0" * 64]))
    message = _refused(owner, lesion, data)
    assert "RLE Lossless" in message and "not supported" in message


def test_it_refuses_a_deflated_data_set_without_inflating_it(owner, lesion, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the data set was inflated")

    monkeypatch.setattr(zlib, "decompress", never)
    monkeypatch.setattr(zlib, "decompressobj", never)
    message = _refused(owner, lesion, make_dicom(_rgb(), transfer_syntax=DeflatedExplicitVRLittleEndian))
    assert "Deflated" in message and "not supported" in message


def test_it_refuses_samples_per_pixel_that_do_not_match(owner, lesion):
    assert "1 samples per pixel, but RGB has 3" in _refused(owner, lesion, make_dicom(_rgb(), SamplesPerPixel=1))
    grey = _rgb()[:, :, 0]
    assert "3 samples per pixel, but MONOCHROME2 has 1" in _refused(owner, lesion, make_dicom(grey, SamplesPerPixel=3))


def test_it_refuses_other_photometric_interpretations_and_extra_pixel_data(owner, lesion):
    assert "PALETTE COLOR" in _refused(owner, lesion, make_dicom(_rgb()[:, :, 0], photometric="PALETTE COLOR"))
    pixels = _rgb()
    assert "are declared" in _refused(owner, lesion, make_dicom(pixels, pixel_data=pixels.tobytes() + b"\0" * 1000))


def test_it_refuses_a_dicom_too_small_to_classify(owner, lesion):
    assert "too small" in _refused(owner, lesion, make_dicom(_rgb(40, 30)))


def test_it_refuses_a_dicom_over_the_upload_size_cap(owner, lesion, settings):
    data = make_dicom(_rgb())
    settings.SKINPORTAL_MAX_UPLOAD_BYTES = len(data) - 1
    assert "larger than the" in _refused(owner, lesion, data)


# --- The command ---------------------------------------------------------------------------------


def _run(*args: str) -> tuple[str, str, int]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("import_dicom", *args, stdout=out, stderr=err)
    except CommandError as exc:
        return out.getvalue(), err.getvalue() + str(exc), 1
    return out.getvalue(), err.getvalue(), 0


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "dicom"
    (root / "sub").mkdir(parents=True)
    (root / "good-1.dcm").write_bytes(make_dicom(_rgb(seed=1)))
    (root / "sub" / "good-2").write_bytes(make_dicom(_rgb(seed=2)[:, :, 0]))  # no suffix: judged by its bytes
    (root / "multi.dcm").write_bytes(make_dicom(_rgb(), NumberOfFrames=3))
    (root / "photo.png").write_bytes(image_bytes(RED))
    return root


def test_the_command_imports_a_folder_reporting_each_bad_file(owner, org, patient, lesion, folder, django_capture_on_commit_callbacks):
    out, err, status = _run(str(folder), "--org", org.name, "--patient", "MRN-001", "--lesion", lesion.label)
    assert status == 1  # some files were refused
    assert "multi.dcm: the DICOM file holds 3 frames" in err and "photo.png: not a DICOM file" in err
    assert "Imported 2 image(s), skipped 0 already stored, refused 2 file(s)" in out
    images = LesionImage.objects.filter(lesion=lesion)
    assert images.count() == 2 and {i.source_format for i in images} == {"DICOM"}
    assert all(i.classifications.get().succeeded for i in images)
    assert AuditEvent.objects.filter(route="import_dicom", action="create").count() == 2
    out, err, status = _run(str(folder / "good-1.dcm"), "--org", org.name, "--patient", "MRN-001", "--lesion", lesion.label)
    assert status == 0 and "skipped 1 already stored" in out


def test_the_command_dry_run_stores_nothing_and_creates_no_lesion(owner, org, patient, folder):
    before = Lesion.objects.count()
    out, _err, status = _run(str(folder), "--org", org.name, "--patient", "MRN-001", "--lesion", "New one", "--dry-run")
    assert status == 1 and "Would import 2 image(s)" in out and "(new)" in out
    assert not LesionImage.objects.exists() and Lesion.objects.count() == before


def test_the_command_creates_the_lesion_but_never_a_patient(owner, org, patient, folder):
    _out, err, status = _run(str(folder / "good-1.dcm"), "--org", org.name, "--patient", "MRN-001",
                             "--lesion", "Left calf", "--body-site", "lower extremity", "--no-classify")
    assert status == 0, err
    lesion = Lesion.objects.get(label="Left calf")
    assert lesion.patient == patient and lesion.body_site == "lower extremity"
    _out, err, status = _run(str(folder), "--org", org.name, "--patient", "HEADER-ID", "--lesion", "x")
    assert status == 1 and "No patient with the id 'HEADER-ID'" in err


# --- Scale ---------------------------------------------------------------------------------------


def test_it_keeps_a_dicom_files_pixel_spacing_as_the_scale_unless_the_clinician_gave_one(owner, lesion, upload, run_on_commit):
    image = upload(make_dicom(_rgb(seed=5), PixelSpacing=[0.05, 0.05]))  # 20 pixels per mm
    assert image.pixels_per_mm == pytest.approx(20.0)
    image = upload(make_dicom(_rgb(seed=6), ImagerPixelSpacing=[0.1, 0.1]))
    assert image.pixels_per_mm == pytest.approx(10.0)
    assert upload(make_dicom(_rgb(seed=7), PixelSpacing=[0.05, 0.2])).pixels_per_mm is None  # not square
    assert upload(make_dicom(_rgb(seed=8))).pixels_per_mm is None
    with run_on_commit():
        (given,) = services.uploads.lesion_image_upload(
            user=owner, lesion=lesion, pixels_per_mm=33.0,
            files=[services.uploads.ImageUpload(name="x.dcm", data=make_dicom(_rgb(seed=9), PixelSpacing=[0.05, 0.05]))],
        )
    assert given.pixels_per_mm == 33.0


# --- Parser bombs --------------------------------------------------------------------------------


def _with_elements_before_the_pixels(elements: bytes) -> bytes:
    """A valid RGB DICOM with `elements` (explicit VR little endian) spliced in before Pixel Data."""
    pixels = _rgb()
    data = make_dicom(pixels)
    pixel_tag = len(data) - pixels.nbytes - 12  # Pixel Data comes last: tag, VR, reserved, length
    assert data[pixel_tag : pixel_tag + 4] == b"\xe0\x7f\x10\x00"
    return data[:pixel_tag] + elements + data[pixel_tag:]


def test_it_refuses_a_flood_of_tiny_elements_without_parsing_them_all(owner, lesion):
    import struct
    import time

    flood = b"".join(struct.pack("<HH2sH", 0x0009, 0x1000 + i % 0xF000, b"LO", 4) + b"abcd" for i in range(400_000))
    data = _with_elements_before_the_pixels(flood)  # 4.8 MB: 11 s of parsing at 10 MiB without the bound
    started = time.monotonic()
    assert "too many data elements" in _refused(owner, lesion, data)
    assert time.monotonic() - started < 3


def test_it_refuses_deeply_nested_sequences_as_corrupt(owner, lesion):
    import struct

    sequence = struct.pack("<HH2sHI", 0x0009, 0x1010, b"SQ", 0, 0xFFFFFFFF) + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    message = _refused(owner, lesion, _with_elements_before_the_pixels(sequence * 20_000 + end * 20_000))
    assert "corrupt" in message or "too many data elements" in message


def test_the_command_dates_an_image_by_the_file_unless_told(owner, org, patient, lesion, tmp_path: Path):
    import datetime as dt

    (tmp_path / "old.dcm").write_bytes(make_dicom(_rgb(seed=11), StudyDate="20190102", ContentDate="20190103"))
    (tmp_path / "future.dcm").write_bytes(make_dicom(_rgb(seed=12), ContentDate="29990101"))
    (tmp_path / "told.dcm").write_bytes(make_dicom(_rgb(seed=13), ContentDate="20190103"))
    common = ("--org", org.name, "--patient", "MRN-001", "--lesion", lesion.label, "--no-classify")
    assert _run(str(tmp_path / "old.dcm"), str(tmp_path / "future.dcm"), *common)[2] == 0
    assert _run(str(tmp_path / "told.dcm"), *common, "--captured-at", "2020-06-01")[2] == 0
    dates = {image.source_name: image.captured_at for image in LesionImage.objects.all()}
    assert dates == {"old.dcm": dt.date(2019, 1, 3), "future.dcm": dt.date.today(), "told.dcm": dt.date(2020, 6, 1)}


def test_it_refuses_a_jpeg_frame_that_is_not_what_the_header_says(owner, lesion):
    small = image_bytes(RED, size=(120, 100), fmt="jpg")
    data = make_dicom(_rgb(), photometric="YBR_FULL_422", transfer_syntax=JPEGBaseline8Bit, pixel_data=encapsulate([small]))
    assert "declares 160x120 pixels but its JPEG frame is 120x100" in _refused(owner, lesion, data)
    png = image_bytes(RED, size=(160, 120))
    data = make_dicom(_rgb(), photometric="YBR_FULL_422", transfer_syntax=JPEGBaseline8Bit, pixel_data=encapsulate([png]))
    assert "declares JPEG baseline but its frame is PNG" in _refused(owner, lesion, data)
    jpeg = image_bytes(RED, size=(160, 120), fmt="jpg")
    cut = encapsulate([jpeg[: len(jpeg) // 2]])
    data = make_dicom(_rgb(), photometric="YBR_FULL_422", transfer_syntax=JPEGBaseline8Bit, pixel_data=cut)
    assert "truncated" in _refused(owner, lesion, data)


# --- Any bytes: a result or a refusal, never a crash -------------------------------------------------



_SEED_FILES = {
    "rgb": make_dicom(_rgb(120, 100, seed=21), PixelSpacing=[0.05, 0.05], ContentDate="20200101"),
    "grey": make_dicom(_rgb(120, 100, seed=22)[:, :, 0]),
    "jpeg": make_dicom(
        _rgb(120, 100), photometric="YBR_FULL_422", transfer_syntax=JPEGBaseline8Bit,
        pixel_data=encapsulate([image_bytes(RED, size=(120, 100), fmt="jpg")]),
    ),
}


@st.composite
def _mutated(draw) -> bytes:
    data = bytearray(_SEED_FILES[draw(st.sampled_from(sorted(_SEED_FILES)))])
    for _ in range(draw(st.integers(1, 8))):  # bytes changed, mostly in the header where the parser looks
        where = draw(st.one_of(st.integers(128, min(len(data) - 1, 1200)), st.integers(0, len(data) - 1)))
        data[where] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(132, len(data)))]
    return bytes(data)


@hypothesis_settings(max_examples=120, deadline=None, derandomize=True, database=None)
@given(data=_mutated())
def test_any_mutated_dicom_is_stored_or_refused_with_a_reason(data: bytes) -> None:
    try:
        item = inference.sanitise_upload(data, name="fuzz.dcm")
    except inference.InvalidImageError as exc:
        assert str(exc) and str(exc).isprintable()  # quoted values from the file are checked first
        return
    assert item.source_format == "DICOM" and item.extension in ("png", "jpg") and item.width * item.height > 0


def test_a_batch_takes_dicom_files_from_a_zip_with_a_reason_for_each_bad_one(owner, lesion, run_on_commit):
    import zipfile

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("visit/a.dcm", make_dicom(_rgb(seed=31)))
        bundle.writestr("visit/b.dcm", make_dicom(_rgb(seed=32), NumberOfFrames=2))
    archive.seek(0)
    with run_on_commit():
        batch = services.batches.batch_create(user=owner, lesion=lesion, archive=archive, archive_name="visit.zip")
    (stored,) = batch.images.all()
    assert stored.source_format == "DICOM" and stored.classifications.get().succeeded
    assert any("b.dcm" in row["name"] and "2 frames" in row["error"] for row in batch.rejected), batch.rejected
