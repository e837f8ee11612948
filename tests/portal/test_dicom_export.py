"""DICOM export (issue 15, part 2): GET /api/v1/images/{id}/dicom/ as a VL Photographic Image,
read back with pydicom and checked with dicom3tools' dciodvfy when it is installed."""

from __future__ import annotations

import datetime as dt
import io
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from django.urls import reverse

from diagnosis.dicom.codes import BODY_SITE_CODES, body_site_code
from diagnosis.dicom.export import VL_PHOTOGRAPHIC_IMAGE_STORAGE
from diagnosis.models import AuditEvent, AuditOutcome, BodySite
from tests.portal.helpers import GREEN, RED, image_bytes

DCIODVFY = shutil.which("dciodvfy")


def _url(image_id: int) -> str:
    return reverse("api-image-dicom", kwargs={"image_id": image_id})


def _read(content: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(content))


def _decoded(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture
def exported(owner, lesion, upload, api_for):
    image = upload(image_bytes(RED, size=(160, 120)))
    response = api_for(owner).get(_url(image.pk))
    assert response.status_code == 200, response.content[:300]
    return image, response


def test_it_exports_a_vl_photographic_image_with_the_patient_study_and_pixels(exported, patient):
    image, response = exported
    assert response["Content-Type"] == "application/dicom"
    assert response["Content-Disposition"].startswith("attachment; filename=") and ".dcm" in response[
        "Content-Disposition"
    ]
    ds = _read(response.content)
    assert ds.SOPClassUID == VL_PHOTOGRAPHIC_IMAGE_STORAGE == ds.file_meta.MediaStorageSOPClassUID
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.Modality == "XC"
    assert (ds.PatientID, str(ds.PatientName), ds.PatientSex, ds.PatientBirthDate) == (
        "MRN-001", "Ada Lovelace", "F", "19601210"
    )
    assert ds.StudyDate == image.captured_at.strftime("%Y%m%d")
    assert (ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored) == ("RGB", 3, 8, 8)
    assert (ds.PlanarConfiguration, ds.Rows, ds.Columns, ds.LossyImageCompression) == (0, 120, 160, "00")
    assert ds.AcquisitionContextSequence == []
    with image.file.open("rb") as handle:
        stored = _decoded(handle.read())
    assert np.array_equal(ds.pixel_array, stored)  # the stored image's own pixels, not re-encoded
    region = ds.AnatomicRegionSequence[0]
    assert (region.CodeValue, region.CodingSchemeDesignator) == ("77568009", "SCT")  # back
    assert ds.ImageLaterality == "U"
    note = ds.ImageComments
    assert "decision support, not a diagnosis" in note.lower()
    shown = image.classifications.get()
    assert shown.model_version in note and f"{shown.malignancy_score:.3f}" in note and "flagged" in note
    assert "mel " in note  # the probabilities, by class code


def test_it_gives_the_same_uids_on_every_export_and_new_ones_for_another_visit(owner, lesion, upload, api_for):
    first = upload(image_bytes(RED))
    again = upload(image_bytes(RED, seed=1))  # same lesion, same day: same study and series
    later = upload(image_bytes(GREEN), captured_at=dt.date(2024, 5, 1))
    api = api_for(owner)
    a1, a2 = _read(api.get(_url(first.pk)).content), _read(api.get(_url(first.pk)).content)
    b, c = _read(api.get(_url(again.pk)).content), _read(api.get(_url(later.pk)).content)
    assert (a1.StudyInstanceUID, a1.SeriesInstanceUID, a1.SOPInstanceUID) == (
        a2.StudyInstanceUID, a2.SeriesInstanceUID, a2.SOPInstanceUID
    )
    assert a1.StudyInstanceUID == b.StudyInstanceUID and a1.SOPInstanceUID != b.SOPInstanceUID
    assert c.StudyInstanceUID != a1.StudyInstanceUID and c.StudyDate == "20240501"
    for uid in (a1.StudyInstanceUID, a1.SeriesInstanceUID, a1.SOPInstanceUID):
        assert uid.startswith("2.25.") and len(uid) <= 64 and pydicom.uid.UID(uid).is_valid


def test_it_exports_a_jpeg_as_its_decoded_pixels_marked_lossy(owner, lesion, upload, api_for):
    image = upload(image_bytes(GREEN, size=(200, 150), fmt="jpg"))
    ds = _read(api_for(owner).get(_url(image.pk)).content)
    with image.file.open("rb") as handle:
        assert np.array_equal(ds.pixel_array, _decoded(handle.read()))
    assert (ds.LossyImageCompression, ds.LossyImageCompressionMethod) == ("01", "ISO_10918_1")


def test_it_codes_the_side_and_the_body_site_with_the_fhir_exports_table(owner, lesion, upload, api_for):
    from diagnosis.fhir.codes import BODY_SITES

    lesion.laterality = "left"
    lesion.body_site = BodySite.FACE
    lesion.save(update_fields=["laterality", "body_site"])
    image = upload(image_bytes(RED))
    ds = _read(api_for(owner).get(_url(image.pk)).content)
    assert ds.ImageLaterality == "L"
    (region,) = ds.AnatomicRegionSequence
    assert (region.CodeValue, region.CodingSchemeDesignator) == (BODY_SITES["face"].code, "SCT")
    # One table for both exports: every coded site, and none guessed for acral or unknown.
    assert {site: code.value for site, code in BODY_SITE_CODES.items()} == {
        site: code.code for site, code in BODY_SITES.items()
    }
    assert body_site_code(BodySite.ACRAL) is None and body_site_code(BodySite.UNKNOWN) is None


def test_it_leaves_the_anatomic_region_out_for_an_unknown_site(owner, lesion, upload, api_for):
    lesion.body_site = BodySite.UNKNOWN
    lesion.save(update_fields=["body_site"])
    image = upload(image_bytes(RED))
    assert "AnatomicRegionSequence" not in _read(api_for(owner).get(_url(image.pk)).content)  # type 1C: absent


def test_it_answers_404_to_an_outsider_and_audits_the_export(victim, owner, outsider, reader, api_for):
    url = _url(victim["image_id"])
    for user, status, outcome in ((outsider, 404, AuditOutcome.DENIED), (owner, 200, AuditOutcome.OK),
                                  (reader, 200, AuditOutcome.OK)):
        response = api_for(user).get(url, HTTP_ACCEPT="application/dicom")
        assert response.status_code == status, user
        event = AuditEvent.objects.get(request_id=response["X-Request-ID"])
        assert (event.route, event.method, event.action, event.outcome) == ("api-image-dicom", "GET", "export", outcome)
        assert (event.object_type, event.object_id, event.organisation_id) == (
            "image", victim["image_id"], victim["organisation_id"]
        )
    assert api_for(outsider).get(url).json()["error"]
    assert api_for(None).get(url).status_code in (401, 403)


def test_it_answers_404_when_the_stored_file_is_gone(owner, upload, api_for):
    image = upload(image_bytes(RED))
    image.file.storage.delete(image.file.name)
    response = api_for(owner).get(_url(image.pk))
    assert response.status_code == 404 and response["Content-Type"].startswith("application/json")


def test_it_is_in_the_openapi_schema(owner, client_for):
    schema = client_for(owner).get(reverse("api-schema"), HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/v1/images/{image_id}/dicom/"]["get"]
    assert "application/dicom" in operation["responses"]["200"]["content"]


def _variant(kind: str, owner, patient, lesion, upload):
    """An exported image of one kind: the plain fixture case, a JPEG with a non-ASCII patient name,
    sex and birth date unknown, a midline lesion on an uncoded site, and an image never classified."""
    if kind == "png":
        return upload(image_bytes(RED, size=(160, 120)))
    patient.name, patient.sex, patient.date_of_birth = "Zoë Ångström-Núñez \\ 李", "unknown", None
    patient.save()
    lesion.laterality, lesion.body_site = "midline", "acral"
    lesion.save()
    image = upload(image_bytes(GREEN, size=(150, 130), fmt="jpg"))
    if kind == "unclassified":
        image.classifications.all().delete()
    return image


@pytest.mark.parametrize("kind", ["png", "jpeg-unicode", "unclassified"])
def test_it_reads_back_under_pydicoms_strict_validation(kind, owner, patient, lesion, upload, api_for, monkeypatch):
    from pydicom import config

    image = _variant(kind, owner, patient, lesion, upload)
    monkeypatch.setattr(config.settings, "reading_validation_mode", config.RAISE)
    monkeypatch.setattr(config.settings, "writing_validation_mode", config.RAISE)
    response = api_for(owner).get(_url(image.pk))
    assert response.status_code == 200
    ds = _read(response.content)
    for element in ds.iterall():  # every value parsed and checked against its VR
        _ = element.value
    if kind != "png":
        assert str(ds.PatientName) == "Zoë Ångström-Núñez   李"  # UTF-8; a backslash (value separator) dropped
        assert (ds.PatientSex, ds.PatientBirthDate, ds.ImageLaterality) == ("", "", "B")
        assert "AnatomicRegionSequence" not in ds  # acral: no code guessed
    if kind == "unclassified":
        assert ds.ImageComments == "Not classified yet. Decision support, not a diagnosis."


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (dicom3tools) is not installed: `make dicom-tools` installs it")
@pytest.mark.parametrize("kind", ["png", "jpeg-unicode", "unclassified"])
def test_it_passes_dciodvfy_without_errors(kind, owner, patient, lesion, upload, api_for, tmp_path: Path):
    image = _variant(kind, owner, patient, lesion, upload)
    path = tmp_path / "export.dcm"
    path.write_bytes(api_for(owner).get(_url(image.pk)).content)
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60, check=False)
    lines = (run.stdout + run.stderr).splitlines()
    print("\n".join(lines))  # the warnings, with -s (docs/interop.md lists the accepted ones)
    errors = [line for line in lines if line.startswith("Error")]
    assert not errors, "\n".join(lines)


def test_it_links_the_download_from_the_result_page_for_a_signed_in_member(owner, colleague, upload, client_for):
    image = upload(image_bytes(RED))
    client = client_for(colleague)
    page = client.get(reverse("image-detail", args=[image.pk])).content.decode()
    assert f'href="{_url(image.pk)}"' in page and "Download DICOM" in page
    response = client.get(_url(image.pk))  # the page's session is enough, as for the image file
    assert response.status_code == 200 and _read(response.content).SOPClassUID == VL_PHOTOGRAPHIC_IMAGE_STORAGE
