"""The clinical context beside the image (ml.context): the patient's age on the day the image was
taken, their sex and the lesion's body site move the served model's answer, are stored with the
result, and are shown and served with it; without them, or with a model that has no context
table, the image is read alone."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.urls import reverse

from diagnosis import services
from tests.portal.helpers import REPO_ROOT, image_bytes

API = "/api/v1"
SKIN = (150, 90, 70)


def _served_context() -> dict:
    current = (REPO_ROOT / "ml" / "models" / "CURRENT").read_text().strip()
    return json.loads((REPO_ROOT / "ml" / "models" / current / "manifest.json").read_text())["context"]


def _page(client, image) -> str:
    response = client.get(reverse("image-detail", args=[image.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_it_weighs_the_patients_age_and_sex_and_the_body_site(shipped_model, upload, client_for, colleague):
    # The patient fixture: female, born 1960-12-10; the lesion is on the back.
    image = upload(image_bytes(SKIN, size=(200, 150)), captured_at=dt.date(2026, 12, 1))
    classification = image.classifications.get()
    assert classification.context == {"age": "60-69", "sex": "female", "site": "back"}  # 65 that day
    assert classification.threshold == pytest.approx(_served_context()["malignancy_threshold"]["fp32"])
    assert "Weighed with the image: age 60-69, female, back" in _page(client_for(colleague), image)
    body = client_for(colleague).get(f"{API}/images/{image.pk}/").json()["classification"]
    assert body["context"] == classification.context
    assert "with their age, sex and body site" in body["model_performance"]["evaluated_on"]


def test_it_reads_the_image_alone_when_nothing_is_recorded(shipped_model, owner, org, upload, client_for, colleague):
    patient = services.patients.patient_create(user=owner, organisation=org, external_id="MRN-002", name="B")
    lesion = services.patients.lesion_create(user=owner, patient=patient, body_site="unknown", label="somewhere")
    image = upload(image_bytes(SKIN, size=(200, 150)), target=lesion)
    classification = image.classifications.get()
    assert classification.context == {}
    manifest_threshold = json.loads((REPO_ROOT / "ml" / "models" / shipped_model / "manifest.json").read_text())[
        "variants"]["fp32"]["malignancy_threshold"]  # the bundle folder is named by its version
    assert classification.threshold == pytest.approx(manifest_threshold)
    assert "Read from the image alone" in _page(client_for(colleague), image)


def test_it_moves_the_answer_with_the_context_not_the_image_alone(shipped_model, owner, org, upload):
    young = services.patients.patient_create(user=owner, organisation=org, external_id="MRN-003", name="C",
                                             date_of_birth=dt.date(2000, 1, 1), sex="male")
    older = services.patients.patient_create(user=owner, organisation=org, external_id="MRN-004", name="D",
                                             date_of_birth=dt.date(1940, 1, 1), sex="male")
    data = image_bytes(SKIN, size=(200, 150))
    on_back = upload(data, target=services.patients.lesion_create(user=owner, patient=young, body_site="back", label="a"))
    on_face = upload(data, target=services.patients.lesion_create(user=owner, patient=older, body_site="face", label="b"))
    back, face = on_back.classifications.get(), on_face.classifications.get()
    assert back.context["site"] == "back" and face.context["site"] == "face"
    # HAM10000: naevi on the backs of the young, keratinocyte lesions on the faces of the old.
    assert face.probabilities["nv"] < back.probabilities["nv"]
    assert face.probabilities["bkl"] + face.probabilities["akiec"] + face.probabilities["bcc"] > \
        back.probabilities["bkl"] + back.probabilities["akiec"] + back.probabilities["bcc"]


def test_it_reads_the_image_alone_with_a_model_that_has_no_context_table(upload):
    classification = upload().classifications.get()  # the stand-in model: no table
    assert classification.status == "succeeded" and classification.context == {}


def test_it_says_when_the_records_changed_since_the_result(shipped_model, owner, patient, upload, client_for,
                                                           colleague, reader, run_on_commit):
    image = upload(image_bytes(SKIN, size=(200, 150)), captured_at=dt.date(2026, 12, 1))
    assert 'id="context-changed"' not in _page(client_for(colleague), image)
    services.patients.patient_update(user=owner, patient=patient, data={"sex": "male"})
    page = _page(client_for(colleague), image)
    assert "The records have changed since this result: they now give age 60-69, male, back" in page
    assert "Classify again to weigh them" in page
    assert "A member who can edit may classify it again" in _page(client_for(reader), image)
    with run_on_commit():
        services.classification.classification_request(user=owner, image=image)
    assert image.classifications.get().context["sex"] == "male"
    assert 'id="context-changed"' not in _page(client_for(colleague), image)


def test_it_says_nothing_about_changed_records_for_a_model_without_a_context_table(upload, owner, patient,
                                                                                     client_for, colleague):
    image = upload()  # the stand-in model
    services.patients.patient_update(user=owner, patient=patient, data={"sex": "male"})
    assert 'id="context-changed"' not in _page(client_for(colleague), image)
