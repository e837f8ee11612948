"""REST API: every endpoint's happy path, validation errors, outsider 404 and read-only 403,
all in the one error format {"error": {"status", "code", "message", "fields"?}}."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from diagnosis import services
from diagnosis.api import waiting
from diagnosis.models import ClinicianReview, Lesion, LesionImage, Patient
from tests.portal.helpers import GREEN, PASSWORD, RED, STAND_IN_VERSION, image_bytes

pytestmark = pytest.mark.django_db

API = "/api/v1"


def _assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["status"] == status and error["message"]
    if code:
        assert error["code"] == code
    return error


def _png(name: str = "lesion.png", colour=RED) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, image_bytes(colour), content_type="image/png")


# --- Auth ----------------------------------------------------------------------------------


def test_it_issues_a_token_that_authenticates_requests(owner, patient):
    api = APIClient()
    response = api.post(f"{API}/auth/token/", {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 200
    token = response.json()["token"]
    # Each login gives a new key (an old one is never handed out again: only its digest is kept).
    again = api.post(f"{API}/auth/token/", {"username": "alice", "password": PASSWORD}, format="json")
    assert again.status_code == 200 and again.json()["token"] != token
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get(f"{API}/patients/").json()["count"] == 1


def test_it_refuses_a_token_for_bad_credentials(owner):
    error = _assert_error(
        APIClient().post(f"{API}/auth/token/", {"username": "alice", "password": "nope"}, format="json"), 400, "invalid"
    )
    assert "Unable to log in" in error["message"]
    error = _assert_error(APIClient().post(f"{API}/auth/token/", {"username": "alice"}, format="json"), 400, "invalid")
    assert "password" in error["fields"]


def test_it_requires_authentication(patient):
    _assert_error(APIClient().get(f"{API}/patients/"), 401, "not_authenticated")
    _assert_error(APIClient(HTTP_AUTHORIZATION="Token not-a-real-token").get(f"{API}/patients/"), 401)


def test_it_accepts_a_browser_session(client, owner, patient):
    client.force_login(owner)
    assert client.get(f"{API}/patients/").json()["count"] == 1


def test_it_describes_the_caller(api_for, owner, org):
    body = api_for(owner).get(f"{API}/me/").json()
    assert body["username"] == "alice"
    assert body["memberships"] == [
        {"organisation": org.pk, "organisation_name": org.name, "role": "admin", "can_write": True}
    ]


def test_it_answers_unknown_api_paths_in_the_error_format(api_for, owner):
    _assert_error(api_for(owner).get(f"{API}/nothing-here/"), 404, "not_found")


# --- Patients ------------------------------------------------------------------------------


def test_it_lists_patients_of_the_callers_organisations_with_pagination(
    api_for, owner, org, outsider, other_org, patient
):
    services.patients.patient_create(user=outsider, organisation=other_org, external_id="S-1", name="Hidden")
    for i in range(3):
        services.patients.patient_create(user=owner, organisation=org, external_id=f"B-{i}", name=f"Bulk {i}")
    body = api_for(owner).get(f"{API}/patients/", {"page_size": 2}).json()
    assert body["count"] == 4 and len(body["results"]) == 2 and body["next"] and body["previous"] is None
    assert "Hidden" not in {
        p["name"] for p in api_for(owner).get(f"{API}/patients/", {"page_size": 100}).json()["results"]
    }
    assert [p["name"] for p in api_for(owner).get(f"{API}/patients/", {"q": "ada"}).json()["results"]] == [
        "Ada Lovelace"
    ]
    _assert_error(api_for(owner).get(f"{API}/patients/", {"page": 99}), 404)
    _assert_error(api_for(owner).get(f"{API}/patients/", {"organisation": "x"}), 400, "invalid")


def test_it_creates_a_patient(api_for, colleague, org):
    response = api_for(colleague).post(
        f"{API}/patients/",
        {"external_id": "MRN-9", "name": "Grace Hopper", "date_of_birth": "1950-01-02", "sex": "female"},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["organisation"] == org.pk and body["date_of_birth"] == "1950-01-02" and body["sex"] == "female"
    assert Patient.objects.get(pk=body["id"]).created_by == colleague


def test_it_validates_a_new_patient(api_for, owner, org, patient):
    api = api_for(owner)
    error = _assert_error(
        api.post(f"{API}/patients/", {"external_id": "MRN-001", "name": "Dup"}, format="json"), 400, "invalid"
    )
    assert "already exists" in error["fields"]["external_id"][0]
    error = _assert_error(
        api.post(f"{API}/patients/", {"name": "", "sex": "robot", "date_of_birth": "soon"}, format="json"), 400
    )
    assert {"external_id", "name", "sex", "date_of_birth"} <= set(error["fields"])
    error = _assert_error(api.post(f"{API}/patients/", "not json", content_type="application/json"), 400)
    assert Patient.objects.count() == 1


def test_it_needs_an_organisation_for_members_of_several(api_for, owner, org, other_org):
    services.accounts.membership_set(user=owner, organisation=other_org, role="clinician")
    error = _assert_error(
        api_for(owner).post(f"{API}/patients/", {"external_id": "X", "name": "Y"}, format="json"), 400
    )
    assert "organisation" in error["fields"]
    response = api_for(owner).post(
        f"{API}/patients/", {"organisation": other_org.pk, "external_id": "X", "name": "Y"}, format="json"
    )
    assert response.status_code == 201 and response.json()["organisation"] == other_org.pk


def test_it_refuses_patients_in_foreign_or_read_only_organisations(api_for, reader, outsider, org):
    _assert_error(
        api_for(reader).post(f"{API}/patients/", {"external_id": "X", "name": "Y"}, format="json"),
        403,
        "permission_denied",
    )
    _assert_error(
        api_for(reader).post(
            f"{API}/patients/", {"organisation": org.pk, "external_id": "X", "name": "Y"}, format="json"
        ),
        403,
    )
    error = _assert_error(
        api_for(outsider).post(
            f"{API}/patients/", {"organisation": org.pk, "external_id": "X", "name": "Y"}, format="json"
        ),
        400,
    )
    assert error["fields"]["organisation"] == ["No such organisation."]
    assert not Patient.objects.exists()


def test_it_reads_and_updates_a_patient(api_for, colleague, reader, outsider, patient):
    url = f"{API}/patients/{patient.pk}/"
    assert api_for(reader).get(url).json()["external_id"] == "MRN-001"
    _assert_error(api_for(outsider).get(url), 404, "not_found")
    _assert_error(api_for(outsider).patch(url, {"name": "Hacked"}, format="json"), 404)
    _assert_error(api_for(reader).patch(url, {"name": "Changed"}, format="json"), 403)
    response = api_for(colleague).patch(url, {"name": "Ada King"}, format="json")
    assert response.status_code == 200 and response.json()["name"] == "Ada King"
    _assert_error(api_for(colleague).patch(url, {"date_of_birth": "2999-01-01"}, format="json"), 400)
    patient.refresh_from_db()
    assert patient.name == "Ada King" and patient.date_of_birth == dt.date(1960, 12, 10)


# --- Lesions -------------------------------------------------------------------------------


def test_it_creates_lists_and_filters_lesions(api_for, colleague, owner, org, patient, lesion):
    other_patient = services.patients.patient_create(user=owner, organisation=org, external_id="MRN-2", name="Other")
    response = api_for(colleague).post(
        f"{API}/lesions/",
        {"patient": other_patient.pk, "body_site": "lower extremity", "label": "Left calf"},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["latest_malignancy_score"] is None
    assert api_for(colleague).get(f"{API}/lesions/").json()["count"] == 2
    filtered = api_for(colleague).get(f"{API}/lesions/", {"patient": patient.pk}).json()
    assert [row["label"] for row in filtered["results"]] == ["Upper back, left"]


def test_it_validates_a_new_lesion(api_for, colleague, reader, outsider, patient):
    error = _assert_error(
        api_for(colleague).post(
            f"{API}/lesions/", {"patient": patient.pk, "body_site": "elbow", "label": ""}, format="json"
        ),
        400,
    )
    assert {"body_site", "label"} <= set(error["fields"])
    error = _assert_error(
        api_for(outsider).post(
            f"{API}/lesions/", {"patient": patient.pk, "body_site": "back", "label": "x"}, format="json"
        ),
        400,
    )
    assert error["fields"]["patient"] == ["No such patient."]
    _assert_error(
        api_for(reader).post(
            f"{API}/lesions/", {"patient": patient.pk, "body_site": "back", "label": "x"}, format="json"
        ),
        403,
    )
    assert Lesion.objects.count() == 0


def test_it_reads_and_updates_a_lesion(api_for, colleague, reader, outsider, lesion):
    url = f"{API}/lesions/{lesion.pk}/"
    assert api_for(reader).get(url).json()["body_site"] == "back"
    _assert_error(api_for(outsider).get(url), 404)
    _assert_error(api_for(reader).patch(url, {"label": "x"}, format="json"), 403)
    assert api_for(colleague).patch(url, {"notes": "6 mm"}, format="json").json()["notes"] == "6 mm"
    _assert_error(api_for(colleague).patch(url, {"body_site": "elbow"}, format="json"), 400)


# --- Images and classifications ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # real commits: the eager task runs before the response is built
def test_it_uploads_an_image_and_answers_with_its_classification(api_for, colleague, lesion):
    response = api_for(colleague).post(
        f"{API}/images/", {"lesion": lesion.pk, "image": _png(), "captured_at": "2024-04-01"}, format="multipart"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["captured_at"] == "2024-04-01" and body["uploaded_by"] == "bob" and body["width"] == 128
    classification = body["classification"]
    assert classification["status"] == "succeeded" and classification["model_version"] == STAND_IN_VERSION
    assert classification["top_class"] == "mel" and classification["top_class_name"] == "Melanoma (mel)"
    assert classification["malignant"] is True and classification["threshold"] == 0.5
    assert len(classification["probabilities"]) == 7 and "not a diagnosis" in classification["notice"]
    file_response = api_for(colleague).get(body["file_url"])
    assert file_response.status_code == 200 and file_response["Content-Type"] == "image/png"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"image": "lesion.png"}, "lesion"),
        ({"lesion": "LESION"}, "image"),
        ({"lesion": "LESION", "image": SimpleUploadedFile("x.txt", b"plain text")}, "image"),
        ({"lesion": "LESION", "image": "IMAGE", "captured_at": "yesterday"}, "captured_at"),
        ({"lesion": 999999, "image": "IMAGE"}, "lesion"),
    ],
)
def test_it_validates_an_image_upload(api_for, colleague, lesion, payload, field):
    payload = {k: (lesion.pk if v == "LESION" else _png() if v == "IMAGE" else v) for k, v in payload.items()}
    error = _assert_error(api_for(colleague).post(f"{API}/images/", payload, format="multipart"), 400, "invalid")
    assert field in error["fields"]
    assert not LesionImage.objects.exists()


def test_it_refuses_uploads_from_readers_and_outsiders(api_for, reader, outsider, lesion):
    _assert_error(
        api_for(reader).post(f"{API}/images/", {"lesion": lesion.pk, "image": _png()}, format="multipart"), 403
    )
    error = _assert_error(
        api_for(outsider).post(f"{API}/images/", {"lesion": lesion.pk, "image": _png()}, format="multipart"), 400
    )
    assert error["fields"]["lesion"] == ["No such lesion."]
    assert not LesionImage.objects.exists()


def test_it_lists_and_reads_images(api_for, colleague, outsider, upload, lesion):
    first = upload(image_bytes(RED), captured_at=dt.date(2024, 1, 1))
    upload(image_bytes(GREEN), captured_at=dt.date(2024, 2, 1))
    body = api_for(colleague).get(f"{API}/images/", {"lesion": lesion.pk}).json()
    assert body["count"] == 2 and body["results"][0]["captured_at"] == "2024-02-01"
    assert api_for(outsider).get(f"{API}/images/").json()["count"] == 0
    assert api_for(colleague).get(f"{API}/images/{first.pk}/").json()["classification"]["top_class"] == "mel"
    for path in [f"{API}/images/{first.pk}/", f"{API}/images/{first.pk}/file/"]:
        _assert_error(api_for(outsider).get(path), 404)


def test_it_waits_for_a_running_classification_when_asked(api_for, colleague, upload, monkeypatch):
    image = upload(image_bytes())
    result = image.classifications.get()
    stored = {"status": result.status, "top_class": result.top_class}
    image.classifications.update(status="running", top_class="")  # a worker has it now
    assert api_for(colleague).get(f"{API}/images/{image.pk}/").json()["classification"] is None
    pauses = []

    def worker_finishes_meanwhile(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:
            image.classifications.update(**stored)

    monkeypatch.setattr(waiting.time, "sleep", worker_finishes_meanwhile)
    body = api_for(colleague).get(f"{API}/images/{image.pk}/", {"wait": 10}).json()
    assert body["classification"]["status"] == "succeeded" and body["classification"]["top_class"] == "mel"
    assert len(pauses) == 3 and pauses[0] == pytest.approx(0.01) and max(pauses) <= 0.05


def test_it_answers_with_the_current_state_when_the_wait_runs_out(api_for, colleague, upload):
    image = upload(image_bytes())
    image.classifications.update(status="pending")
    started = time.monotonic()
    body = api_for(colleague).get(f"{API}/images/{image.pk}/", {"wait": 0.1}).json()
    assert time.monotonic() - started >= 0.1
    assert body["id"] == image.pk and body["classification"] is None


@pytest.mark.parametrize("wait", ["31", "-1", "soon", "nan"])
def test_it_refuses_a_wait_it_will_not_honour(api_for, colleague, upload, wait):
    image = upload(image_bytes())
    response = api_for(colleague).get(f"{API}/images/{image.pk}/", {"wait": wait})
    _assert_error(response, 400)
    assert "wait" in response.json()["error"]["fields"]


def test_it_classifies_an_image_again(api_for, colleague, reader, outsider, upload, run_on_commit):
    image = upload(image_bytes())
    image.classifications.all().delete()
    _assert_error(api_for(reader).post(f"{API}/images/{image.pk}/classify/"), 403)
    _assert_error(api_for(outsider).post(f"{API}/images/{image.pk}/classify/"), 404)
    with run_on_commit():
        response = api_for(colleague).post(f"{API}/images/{image.pk}/classify/")
    assert response.status_code == 202
    assert image.classifications.get().top_class == "mel"


def test_it_lists_and_filters_classifications(api_for, colleague, outsider, upload, owner, lesion):
    red = upload(image_bytes(RED), captured_at=dt.date(2024, 1, 10))
    upload(image_bytes(GREEN), captured_at=dt.date(2024, 3, 10))
    api = api_for(colleague)

    def top_classes(**params) -> list[str]:
        return [c["top_class"] for c in api.get(f"{API}/classifications/", params).json()["results"]]

    assert sorted(top_classes()) == ["mel", "nv"]
    assert top_classes(flagged="true") == ["mel"]
    assert top_classes(flagged="false") == ["nv"]
    assert top_classes(date_from="2024-02-01") == ["nv"]
    assert top_classes(date_to="2024-02-01") == ["mel"]
    assert sorted(top_classes(lesion=lesion.pk, patient=lesion.patient_id)) == ["mel", "nv"]
    assert top_classes(image=red.pk) == ["mel"]
    assert top_classes(status="failed") == []
    assert api_for(outsider).get(f"{API}/classifications/").json()["count"] == 0
    error = _assert_error(api.get(f"{API}/classifications/", {"flagged": "maybe", "date_from": "2024-13-01"}), 400)
    assert {"flagged", "date_from"} <= set(error["fields"])
    _assert_error(api.get(f"{API}/classifications/", {"date_from": "2024-03-01", "date_to": "2024-01-01"}), 400)
    classification = red.classifications.get()
    assert api.get(f"{API}/classifications/{classification.pk}/").json()["image"] == red.pk
    _assert_error(api_for(outsider).get(f"{API}/classifications/{classification.pk}/"), 404)


# --- Reviews -------------------------------------------------------------------------------


def test_it_creates_lists_and_reads_reviews(api_for, colleague, outsider, upload):
    image = upload(image_bytes())
    response = api_for(colleague).post(
        f"{API}/reviews/",
        {"image": image.pk, "diagnosis": "mel", "histopathology_confirmed": True, "comment": "Excised"},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (
        body["diagnosis_name"] == "Melanoma (mel)"
        and body["author"] == "bob"
        and body["histopathology_confirmed"] is True
    )
    assert api_for(colleague).get(f"{API}/reviews/", {"image": image.pk}).json()["count"] == 1
    assert api_for(outsider).get(f"{API}/reviews/").json()["count"] == 0
    assert api_for(colleague).get(f"{API}/reviews/{body['id']}/").json()["comment"] == "Excised"
    _assert_error(api_for(outsider).get(f"{API}/reviews/{body['id']}/"), 404)


def test_it_validates_reviews(api_for, colleague, reader, outsider, upload):
    image = upload(image_bytes())
    error = _assert_error(
        api_for(colleague).post(f"{API}/reviews/", {"image": image.pk, "diagnosis": "cancer"}, format="json"), 400
    )
    assert "diagnosis" in error["fields"]
    _assert_error(api_for(reader).post(f"{API}/reviews/", {"image": image.pk, "diagnosis": "nv"}, format="json"), 403)
    error = _assert_error(
        api_for(outsider).post(f"{API}/reviews/", {"image": image.pk, "diagnosis": "nv"}, format="json"), 400
    )
    assert error["fields"]["image"] == ["No such image."]
    assert not ClinicianReview.objects.exists()


# --- Schema and docs -----------------------------------------------------------------------


def test_it_serves_the_openapi_schema_and_offline_docs(client, owner):
    client.force_login(owner)  # schema and docs are for signed-in users (tests/portal/test_api_docs.py)
    schema = client.get(f"{API}/schema/", {"format": "json"})
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in [
        "/api/v1/auth/token/",
        "/api/v1/patients/",
        "/api/v1/lesions/",
        "/api/v1/images/",
        "/api/v1/classifications/",
        "/api/v1/reviews/",
    ]:
        assert path in paths
    docs = client.get(f"{API}/docs/").content.decode()
    assert "swagger-ui" in docs and "cdn" not in docs.lower() and "https://" not in docs
    assert client.get(f"{API}/redoc/").status_code == 200


def test_it_answers_malformed_requests_with_4xx_in_the_error_format(api_for, owner, patient):
    api = api_for(owner)
    _assert_error(api.post(f"{API}/images/", {"lesion": 1}, format="json"), 415, "unsupported_media_type")
    _assert_error(api.patch(f"{API}/patients/{patient.pk}/", [], format="json"), 400, "invalid")
    _assert_error(api.delete(f"{API}/patients/{patient.pk}/"), 405, "method_not_allowed")
    _assert_error(api.get(f"{API}/patients/not-a-number/"), 404, "not_found")
    patient.refresh_from_db()
    assert patient.name == "Ada Lovelace"
