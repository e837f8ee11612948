"""A suggested class that is not the most probable one (the model's melanoma operating point,
ml/training/operating_point.py) is said so, in words, wherever the result is shown: the result
page, the API and the PDF report; the probabilities shown are the model's own."""

from __future__ import annotations

import os

from django.urls import reverse

from diagnosis import services
from diagnosis.inference import display_name
from diagnosis.interpretation import read_result
from tests.conftest import HAM_IMAGES, needs_ham10000
from tests.portal.helpers import GREEN, image_bytes
from tests.portal.test_reports import all_text

API = "/api/v1"
FAVOURED = {"akiec": 0.02, "bcc": 0.03, "bkl": 0.08, "df": 0.01, "mel": 0.36, "nv": 0.48, "vasc": 0.02}


def _favour_melanoma(image):
    """The stored result as the served model gives it when melanoma comes close to a naevus."""
    classification = image.classifications.get()
    classification.probabilities = FAVOURED
    classification.top_class = "mel"
    classification.malignancy_score = 0.41
    classification.threshold = 0.22
    classification.malignant = True
    classification.warnings = []
    classification.save()
    return classification


def test_it_says_why_melanoma_is_suggested_over_a_more_probable_naevus(upload, client_for, colleague, lesion):
    classification = _favour_melanoma(upload())
    assert classification.favoured_over_most_likely and classification.top_class_label == "Suggested"
    reading = read_result(classification)
    explanation = reading.details[0]
    assert explanation.startswith(f"{display_name('mel')} is suggested although {display_name('nv')} is more probable")
    assert "48.0% against 36.0%" in explanation and "fewer melanomas are missed" in explanation

    client = client_for(colleague)
    page = client.get(reverse("image-detail", args=[classification.image_id])).content.decode()
    assert f'Suggested: <strong id="top-class">{display_name("mel")}</strong>' in page
    assert 'id="favoured-explanation"' in page and "Most likely:" not in page

    body = client.get(f"{API}/images/{classification.image_id}/").json()["classification"]
    assert body["top_class"] == "mel" and body["favoured_over_most_likely"] is True
    assert body["probabilities"]["nv"] > body["probabilities"]["mel"]
    assert body["reading"]["details"][0] == explanation

    report = all_text(client.get(reverse("lesion-report", kwargs={"lesion_id": lesion.pk})).content)
    assert f"Suggested: {display_name('mel')}" in report and "fewer melanomas are missed" in report


def test_it_calls_the_most_probable_class_most_likely(upload, client_for, colleague):
    classification = upload().classifications.get()  # the stand-in model: no operating point
    assert not classification.favoured_over_most_likely
    page = client_for(colleague).get(reverse("image-detail", args=[classification.image_id])).content.decode()
    assert "Most likely:" in page and 'id="favoured-explanation"' not in page
    body = client_for(colleague).get(f"{API}/images/{classification.image_id}/").json()["classification"]
    assert body["favoured_over_most_likely"] is False


def test_its_fhir_and_dicom_exports_say_suggested_why_and_what_was_weighed(upload):
    from diagnosis.dicom.export import classification_note
    from diagnosis.fhir.resources import observation_resource

    classification = _favour_melanoma(upload())
    classification.context = {"age": "60-69", "sex": "female", "site": "back"}
    classification.save()
    observation = observation_resource(classification)
    assert observation["valueCodeableConcept"]["text"] == f"Suggested class: {display_name('mel')}"
    notes = [note["text"] for note in observation["note"]]
    assert "not a diagnosis" in notes[0]
    assert notes[1].startswith("Weighed with the image: age 60-69, female, back")
    assert "fewer melanomas are missed" in notes[2]
    note = classification_note(classification)
    assert f"Suggested class: {display_name('mel')}." in note and "fewer melanomas are missed" in note
    assert "Weighed with the image: age 60-69, female, back" in note

    plain = upload(image_bytes(GREEN)).classifications.get()
    assert observation_resource(plain)["valueCodeableConcept"]["text"].startswith("Most likely class: ")
    assert len(observation_resource(plain)["note"]) == 2 and "Read from the image alone" in classification_note(plain)


# A HAM10000 image the served model (v3m.12, v3m.4's network; image alone) calls a naevus at 0.466 and a melanoma at
# 0.447: at least 0.74x the naevus's (its operating point), so melanoma is suggested. (v3m.3: 0.506
# and 0.418; v3s.1 used ISIC_0024387: 0.532 and 0.372, against its 0.55x.)
FAVOURED_IMAGE = "ISIC_0025225"


@needs_ham10000
def test_the_served_model_suggests_melanoma_over_a_close_naevus_and_says_why(shipped_model, owner, org, upload,
                                                                             client_for, colleague):
    patient = services.patients.patient_create(user=owner, organisation=org, external_id="MRN-9", name="N")
    lesion = services.patients.lesion_create(user=owner, patient=patient, body_site="unknown", label="x")
    with open(os.path.join(HAM_IMAGES, f"{FAVOURED_IMAGE}.jpg"), "rb") as fh:
        image = upload(fh.read(), target=lesion)  # nothing recorded: the image alone
    classification = image.classifications.get()
    assert classification.model_version == shipped_model and classification.context == {}
    assert classification.probabilities["nv"] > classification.probabilities["mel"]
    assert classification.top_class == "mel" and classification.favoured_over_most_likely
    page = client_for(colleague).get(reverse("image-detail", args=[image.pk])).content.decode()
    assert f'Suggested: <strong id="top-class">{display_name("mel")}</strong>' in page
    assert "fewer melanomas are missed" in page
