"""Laterality (left, right, midline, unknown) on a lesion: service, form, API and display."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from diagnosis import services
from diagnosis.models import Laterality


def test_it_stores_the_side_given_and_unknown_by_default(owner, patient, lesion):
    assert lesion.laterality == Laterality.UNKNOWN
    left = services.patients.lesion_create(
        user=owner, patient=patient, body_site="upper extremity", label="Forearm", laterality="left"
    )
    assert left.laterality == "left" and left.side_and_site == "Left · Upper extremity"
    updated = services.patients.lesion_update(user=owner, lesion=left, data={"laterality": "midline"})
    assert updated.laterality == "midline"


def test_it_refuses_a_side_that_is_not_one_of_the_four(owner, lesion):
    with pytest.raises(ValidationError):
        services.patients.lesion_update(user=owner, lesion=lesion, data={"laterality": "up"})


def test_it_takes_the_side_on_the_lesion_forms_and_shows_it(owner, patient, client_for):
    client = client_for(owner)
    response = client.post(
        reverse("lesion-create", kwargs={"patient_id": patient.pk}),
        {"label": "Right cheek", "body_site": "face", "laterality": "right"},
    )
    assert response.status_code == 302
    lesion = patient.lesions.get(label="Right cheek")
    assert lesion.laterality == "right"
    page = client.get(reverse("lesion-detail", kwargs={"lesion_id": lesion.pk})).content.decode()
    assert "Right · Face" in page
    assert "Right · Face" in client.get(reverse("patient-detail", kwargs={"patient_id": patient.pk})).content.decode()
    edit = client.post(
        reverse("lesion-edit", kwargs={"lesion_id": lesion.pk}),
        {"label": "Right cheek", "body_site": "face", "laterality": "midline"},
    )
    assert edit.status_code == 302
    lesion.refresh_from_db()
    assert lesion.laterality == "midline"


def test_it_reads_and_writes_the_side_through_the_api(owner, patient, api_for):
    api = api_for(owner)
    created = api.post(
        "/api/v1/lesions/", {"patient": patient.pk, "body_site": "back", "label": "Scapula", "laterality": "left"},
        format="json",
    )
    assert created.status_code == 201 and created.json()["laterality"] == "left"
    lesion_id = created.json()["id"]
    patched = api.patch(f"/api/v1/lesions/{lesion_id}/", {"laterality": "right"}, format="json")
    assert patched.status_code == 200 and patched.json()["laterality"] == "right"
    bad = api.patch(f"/api/v1/lesions/{lesion_id}/", {"laterality": "sideways"}, format="json")
    assert bad.status_code == 400
    default = api.post("/api/v1/lesions/", {"patient": patient.pk, "body_site": "back", "label": "Sacrum"},
                       format="json")
    assert default.json()["laterality"] == "unknown"
