"""Services: the rules for every write, tested without HTTP."""

from __future__ import annotations

import datetime as dt
import hashlib
import io

import cv2
import numpy as np
import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone
from PIL import Image

from diagnosis import inference, services
from diagnosis.models import Classification, ClassificationStatus, ClinicianReview, LesionImage, Patient
from ml.errors import ModelIntegrityError
from tests.portal.helpers import GREEN, RED, STAND_IN_THRESHOLD, STAND_IN_VERSION, image_bytes

pytestmark = pytest.mark.django_db


def _jpeg_with_exif() -> bytes:
    image = Image.fromarray(np.full((100, 128, 3), (200, 40, 40), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x010F] = "SecretCameraMaker"  # Make
    exif[0x0131] = "PatientNameInSoftwareTag"  # Software
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=95)
    data = buffer.getvalue()
    assert b"SecretCameraMaker" in data
    return data


# --- Patients ------------------------------------------------------------------------------


def test_it_creates_a_patient(owner, org):
    patient = services.patients.patient_create(user=owner, organisation=org, external_id="  MRN-9 ", name=" Grace ")
    assert (patient.external_id, patient.name, patient.organisation, patient.created_by) == (
        "MRN-9",
        "Grace",
        org,
        owner,
    )


def test_it_rejects_a_duplicate_external_id_in_the_same_organisation(owner, colleague, org, patient):
    with pytest.raises(ValidationError) as excinfo:
        services.patients.patient_create(user=colleague, organisation=org, external_id="MRN-001", name="Someone else")
    assert "external_id" in excinfo.value.message_dict
    assert Patient.objects.count() == 1


def test_it_allows_the_same_external_id_in_another_organisation(patient, outsider, other_org):
    other = services.patients.patient_create(
        user=outsider, organisation=other_org, external_id="MRN-001", name="Other person"
    )
    assert other.pk != patient.pk


def test_it_rejects_a_future_date_of_birth(owner, org):
    with pytest.raises(ValidationError) as excinfo:
        services.patients.patient_create(
            user=owner,
            organisation=org,
            external_id="X",
            name="Y",
            date_of_birth=timezone.localdate() + dt.timedelta(days=1),
        )
    assert "date_of_birth" in excinfo.value.message_dict


def test_it_rejects_an_unknown_sex(owner, org):
    with pytest.raises(ValidationError):
        services.patients.patient_create(user=owner, organisation=org, external_id="X", name="Y", sex="robot")


def test_it_refuses_writes_by_a_read_only_member(reader, org, patient, lesion):
    with pytest.raises(PermissionDenied):
        services.patients.patient_create(user=reader, organisation=org, external_id="X", name="Y")
    with pytest.raises(PermissionDenied):
        services.patients.patient_update(user=reader, patient=patient, data={"name": "Changed"})
    with pytest.raises(PermissionDenied):
        services.patients.lesion_create(user=reader, patient=patient, body_site="back", label="x")
    with pytest.raises(PermissionDenied):
        services.uploads.lesion_image_upload(
            user=reader, lesion=lesion, files=[services.uploads.ImageUpload("a.png", image_bytes())]
        )
    patient.refresh_from_db()
    assert patient.name == "Ada Lovelace"


def test_it_refuses_writes_by_an_outsider(outsider, org, patient):
    with pytest.raises(PermissionDenied):
        services.patients.patient_create(user=outsider, organisation=org, external_id="X", name="Y")
    with pytest.raises(PermissionDenied):
        services.patients.patient_update(user=outsider, patient=patient, data={"name": "Changed"})


def test_it_updates_a_patient(colleague, patient):
    updated = services.patients.patient_update(
        user=colleague, patient=patient, data={"name": "Ada King", "notes": "Fair skin"}
    )
    assert (updated.name, updated.notes) == ("Ada King", "Fair skin")


def test_it_leaves_the_patient_unchanged_when_an_update_is_invalid(owner, org, patient):
    services.patients.patient_create(user=owner, organisation=org, external_id="MRN-002", name="Other")
    with pytest.raises(ValidationError):
        services.patients.patient_update(
            user=owner, patient=patient, data={"external_id": "MRN-002", "name": "Changed"}
        )
    patient.refresh_from_db()
    assert (patient.external_id, patient.name) == ("MRN-001", "Ada Lovelace")


def test_it_refuses_to_update_unknown_fields(owner, patient, other_org):
    with pytest.raises(ValidationError):
        services.patients.patient_update(user=owner, patient=patient, data={"organisation": other_org})


# --- Lesions -------------------------------------------------------------------------------


def test_it_creates_and_updates_a_lesion(colleague, patient):
    lesion = services.patients.lesion_create(user=colleague, patient=patient, body_site="face", label=" Left cheek ")
    assert lesion.label == "Left cheek"
    lesion = services.patients.lesion_update(user=colleague, lesion=lesion, data={"body_site": "neck"})
    assert lesion.body_site == "neck"


def test_it_rejects_a_body_site_outside_the_vocabulary(owner, patient):
    with pytest.raises(ValidationError) as excinfo:
        services.patients.lesion_create(user=owner, patient=patient, body_site="elbow", label="x")
    assert "body_site" in excinfo.value.message_dict


# --- Upload and classification -------------------------------------------------------------


def test_it_uploads_an_image_and_classifies_it(upload, owner):
    image = upload(image_bytes(RED))
    classification = image.classifications.get()
    assert classification.status == ClassificationStatus.SUCCEEDED
    assert classification.model_version == STAND_IN_VERSION
    assert classification.top_class == "mel"
    assert classification.malignant is True
    assert classification.threshold == pytest.approx(STAND_IN_THRESHOLD)
    assert set(classification.probabilities) == set(inference.CLASSES)
    assert sum(classification.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert classification.inference_ms is not None and classification.finished_at is not None
    assert image.uploaded_by == owner


def test_it_classifies_a_green_image_as_a_nevus_below_threshold(upload):
    classification = upload(image_bytes(GREEN)).classifications.get()
    assert (classification.top_class, classification.malignant) == ("nv", False)


def test_it_stores_pixels_only_under_a_generated_name(upload):
    jpeg = _jpeg_with_exif()
    image = upload(jpeg)
    stored = image.file.read()
    image.file.close()
    assert b"SecretCameraMaker" not in stored and b"Exif" not in stored
    assert stored.startswith(b"\xff\xd8") and len(stored) < len(jpeg)  # its own JPEG data, less the EXIF
    assert image.sha256 == hashlib.sha256(stored).hexdigest()
    assert (image.width, image.height, image.source_format, image.size_bytes) == (128, 100, "JPEG", len(stored))
    assert "photo" not in image.file.name and image.file.name.endswith(".jpg")
    decoded = cv2.imdecode(np.frombuffer(stored, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (100, 128, 3)


def test_it_uploads_several_images_at_once(owner, lesion, run_on_commit):
    with run_on_commit():
        images = services.uploads.lesion_image_upload(
            user=owner,
            lesion=lesion,
            files=[
                services.uploads.ImageUpload("a.png", image_bytes(RED)),
                services.uploads.ImageUpload("b.jpg", image_bytes(GREEN, fmt="jpg")),
            ],
            captured_at=dt.date(2024, 3, 1),
        )
    assert [i.captured_at for i in images] == [dt.date(2024, 3, 1)] * 2
    assert Classification.objects.filter(status=ClassificationStatus.SUCCEEDED).count() == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, I am text", "not a recognised image"),
        (image_bytes(fmt="bmp"), "JPEG or PNG"),
        (image_bytes(fmt="png")[:60], "truncated"),
    ],
)
def test_it_rejects_bad_files_and_stores_nothing(owner, lesion, data, message, run_on_commit):
    with run_on_commit(), pytest.raises(ValidationError) as excinfo:
        services.uploads.lesion_image_upload(
            user=owner, lesion=lesion, files=[services.uploads.ImageUpload("bad.png", data)]
        )
    errors = excinfo.value.message_dict["image"]
    assert errors[0].startswith("bad.png:") and message in errors[0]
    assert LesionImage.objects.count() == 0 and Classification.objects.count() == 0


def test_it_rejects_the_whole_batch_when_one_file_is_bad(owner, lesion, _media_root):
    files = [
        services.uploads.ImageUpload("good.png", image_bytes()),
        services.uploads.ImageUpload("bad.txt", b"not an image"),
    ]
    with pytest.raises(ValidationError):
        services.uploads.lesion_image_upload(user=owner, lesion=lesion, files=files)
    assert LesionImage.objects.count() == 0
    assert not [path for path in _media_root.rglob("*") if path.is_file()]


def test_it_rejects_files_over_the_size_cap(owner, lesion, settings):
    settings.SKINPORTAL_MAX_UPLOAD_BYTES = 1024
    with pytest.raises(ValidationError) as excinfo:
        services.uploads.lesion_image_upload(
            user=owner, lesion=lesion, files=[services.uploads.ImageUpload("big.png", image_bytes(size=(400, 400)))]
        )
    assert "larger than" in excinfo.value.message_dict["image"][0]


def test_it_rejects_too_many_files(owner, lesion, settings):
    settings.SKINPORTAL_MAX_FILES_PER_UPLOAD = 2
    files = [services.uploads.ImageUpload(f"{i}.png", image_bytes()) for i in range(3)]
    with pytest.raises(ValidationError):
        services.uploads.lesion_image_upload(user=owner, lesion=lesion, files=files)


def test_it_rejects_a_capture_date_in_the_future(owner, lesion):
    with pytest.raises(ValidationError) as excinfo:
        services.uploads.lesion_image_upload(
            user=owner,
            lesion=lesion,
            files=[services.uploads.ImageUpload("a.png", image_bytes())],
            captured_at=timezone.localdate() + dt.timedelta(days=2),
        )
    assert "captured_at" in excinfo.value.message_dict


def test_it_records_a_failed_classification_when_the_model_cannot_load(upload, monkeypatch):
    def broken() -> str:
        raise ModelIntegrityError("model file /x/model.onnx has sha256 abc, manifest says def")

    monkeypatch.setattr(inference, "loaded_model_version", broken)
    image = upload(image_bytes())
    classification = image.classifications.get()
    assert classification.status == ClassificationStatus.FAILED
    assert classification.model_version == Classification.UNKNOWN_MODEL_VERSION
    assert "could not be loaded" in classification.error_message and "sha256" in classification.error_message


def test_it_records_a_failed_classification_on_an_unexpected_error(upload, monkeypatch):
    def explode(images: list[bytes], contexts=None):
        raise RuntimeError("boom")

    monkeypatch.setattr(inference, "classify_many", explode)
    classification = upload(image_bytes()).classifications.get()
    assert classification.status == ClassificationStatus.FAILED
    assert classification.model_version == STAND_IN_VERSION
    assert "RuntimeError" in classification.error_message


def test_it_replaces_a_failure_with_a_later_success(upload, monkeypatch):
    monkeypatch.setattr(inference, "loaded_model_version", lambda: (_ for _ in ()).throw(ModelIntegrityError("gone")))
    image = upload(image_bytes())
    monkeypatch.undo()
    (classification,) = services.classification.classification_run(image_ids=[image.pk], force=True)
    assert classification.status == ClassificationStatus.SUCCEEDED
    assert list(image.classifications.values_list("model_version", flat=True)) == [STAND_IN_VERSION]


def test_it_keeps_one_classification_per_image_and_model_version(upload):
    image = upload(image_bytes())
    services.classification.classification_run(image_ids=[image.pk], force=True)
    services.classification.classification_run(image_ids=[image.pk], force=True)
    assert image.classifications.count() == 1


def test_it_records_a_failure_when_the_broker_is_unreachable(upload, monkeypatch):
    from diagnosis import tasks

    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("redis down")

    monkeypatch.setattr(tasks.classify_images, "delay", refuse)
    classification = upload(image_bytes()).classifications.get()
    assert classification.status == ClassificationStatus.FAILED
    assert "queue is unavailable" in classification.error_message


def test_it_ignores_an_image_deleted_before_classification(upload):
    image = upload(image_bytes())
    image_id = image.pk
    image.delete()
    assert services.classification.classification_run(image_ids=[image_id], force=True) == []


def test_it_records_a_failure_when_the_stored_file_is_gone(upload):
    image = upload(image_bytes())
    image.file.storage.delete(image.file.name)
    (classification,) = services.classification.classification_run(image_ids=[image.pk], force=True)
    assert classification.status == ClassificationStatus.FAILED
    assert "could not be read" in classification.error_message


# --- Reviews and accounts ------------------------------------------------------------------


def test_it_records_a_clinician_review(upload, colleague):
    image = upload(image_bytes())
    review = services.reviews.review_create(
        user=colleague, image=image, diagnosis="mel", histopathology_confirmed=True, comment=" Excised "
    )
    assert (review.author, review.comment, review.get_diagnosis_display()) == (colleague, "Excised", "Melanoma (mel)")


def test_it_accepts_other_as_a_review_diagnosis(upload, colleague):
    assert (
        services.reviews.review_create(user=colleague, image=upload(image_bytes()), diagnosis="other").diagnosis
        == "other"
    )


def test_it_rejects_an_unknown_review_diagnosis_and_a_read_only_reviewer(upload, colleague, reader):
    image = upload(image_bytes())
    with pytest.raises(ValidationError):
        services.reviews.review_create(user=colleague, image=image, diagnosis="cancer")
    with pytest.raises(PermissionDenied):
        services.reviews.review_create(user=reader, image=image, diagnosis="nv")
    assert ClinicianReview.objects.count() == 0


def test_it_creates_a_clinician_and_their_organisation(db):
    account = services.accounts.clinician_create(
        organisation_name="New Clinic", username="dana", password="a-long-enough-pass-42"
    )
    assert account.user_created and account.organisation_created
    assert account.user.check_password("a-long-enough-pass-42")
    again = services.accounts.clinician_create(
        organisation_name="New Clinic", username="dana", password="another-long-pass-43", role="readonly"
    )
    assert not again.user_created and not again.organisation_created
    assert again.membership.role == "readonly"


def test_it_refuses_a_weak_password_for_a_new_clinician(db):
    with pytest.raises(ValidationError):
        services.accounts.clinician_create(organisation_name="Clinic", username="eve", password="123")
