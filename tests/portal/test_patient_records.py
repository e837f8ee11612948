"""Deleting and exporting a patient: the right roles only, and only after re-entering a password."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

from django.urls import reverse

from diagnosis.models import Classification, Lesion, LesionImage, Patient
from tests.portal.helpers import PASSWORD


def test_it_deletes_a_patient_with_everything_after_the_admin_reenters_the_password(
    owner, patient, lesion, upload, client_for, run_on_commit
):
    image = upload()
    storage, name = image.file.storage, image.file.name
    client = client_for(owner)
    url = reverse("patient-delete", args=[patient.pk])
    page = client.get(url)
    assert page.status_code == 200 and "cannot be undone" in page.content.decode()

    wrong = client.post(url, {"password": "not-my-password-at-all"})
    assert wrong.status_code == 400 and "not your password" in wrong.content.decode()
    assert Patient.objects.filter(pk=patient.pk).exists() and storage.exists(name)

    with run_on_commit():
        response = client.post(url, {"password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == reverse("patient-list")
    assert not Patient.objects.exists() and not Lesion.objects.exists()
    assert not LesionImage.objects.exists() and not Classification.objects.exists()
    assert not storage.exists(name)


def test_it_lets_only_organisation_admins_delete_patients(colleague, reader, outsider, patient, client_for):
    url = reverse("patient-delete", args=[patient.pk])
    assert client_for(colleague).post(url, {"password": PASSWORD}).status_code == 403
    assert client_for(reader).post(url, {"password": PASSWORD}).status_code == 403
    assert client_for(outsider).post(url, {"password": PASSWORD}).status_code == 404
    assert Patient.objects.filter(pk=patient.pk).exists()


def test_it_exports_the_whole_record_after_the_password(colleague, patient, lesion, upload, client_for):
    image = upload()
    client = client_for(colleague)
    url = reverse("patient-export", args=[patient.pk])
    assert client.get(url).status_code == 200
    assert client.post(url, {"password": "wrong-password-here"}).status_code == 400

    response = client.post(url, {"password": PASSWORD})
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == f'attachment; filename="patient-{patient.pk}.zip"'
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        record = json.loads(archive.read("patient.json"))
        png = archive.read(f"images/{image.pk}.png")
    assert record["patient"]["external_id"] == patient.external_id
    (exported_lesion,) = record["lesions"]
    (exported_image,) = exported_lesion["images"]
    assert exported_image["sha256"] == image.sha256 == hashlib.sha256(png).hexdigest()
    assert exported_image["classifications"][0]["status"] == "succeeded"
    assert "not a certified medical device" in record["notice"]


def test_it_refuses_exports_to_the_read_only_role_and_outsiders(reader, outsider, patient, client_for):
    url = reverse("patient-export", args=[patient.pk])
    assert client_for(reader).post(url, {"password": PASSWORD}).status_code == 403
    assert client_for(outsider).post(url, {"password": PASSWORD}).status_code == 404
