"""End to end with the model bundle that ships in ml/models/ (named by ml/models/CURRENT).

Skips, saying why, until the bundle has been trained and packaged.
"""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from diagnosis.models import ClassificationStatus, LesionImage
from tests.portal.helpers import image_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_it_classifies_an_upload_through_the_page_with_the_shipped_model(shipped_model, client_for, colleague, lesion):
    client = client_for(colleague)
    upload = SimpleUploadedFile(
        "lesion.jpg", image_bytes((150, 90, 70), size=(600, 450), fmt="jpg"), content_type="image/jpeg"
    )
    response = client.post(
        reverse("lesion-upload", args=[lesion.pk]), {"images": [upload], "captured_at": "2024-05-01"}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    classification = LesionImage.objects.get().classifications.get()
    assert classification.status == ClassificationStatus.SUCCEEDED, classification.error_message
    assert classification.model_version == shipped_model
    assert sum(classification.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert 0.0 < classification.threshold < 1.0
    html = client.get(response["Location"]).content.decode()
    assert shipped_model in html and "Decision support, not a diagnosis." in html


def test_it_classifies_an_upload_through_the_api_with_the_shipped_model(shipped_model, api_for, colleague, lesion):
    upload = SimpleUploadedFile("lesion.png", image_bytes((170, 110, 90), size=(450, 450)), content_type="image/png")
    response = api_for(colleague).post("/api/v1/images/", {"lesion": lesion.pk, "image": upload}, format="multipart")
    assert response.status_code == 201, response.content
    classification = response.json()["classification"]
    assert classification["status"] == "succeeded", classification["error_message"]
    assert classification["model_version"] == shipped_model
    assert len(classification["probabilities"]) == 7
