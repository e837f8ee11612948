"""Free text is bounded, and holds no NUL, on every path that reaches the database (issue 13,
defect 12): each limit of diagnosis/limits.py (and the model's max_length for the short fields) is
accepted at the limit and refused one character past it, on the page (a form error, 400) and in
the API (a field error, 400) alike; a NUL is refused the same way (PostgreSQL cannot store it:
the suite runs on PostgreSQL in CI); an uploaded file's name loses it. Nothing refused is stored.

Also: an image below ml.screening.MIN_IMAGE_SIDE is refused on every upload path (single
uploads are covered in test_screening_results.py; the batch paths here).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.urls import reverse

from diagnosis.inference import MIN_IMAGE_SIDE
from diagnosis.limits import LONG_TEXT_MAX_CHARS, PASSWORD_MAX_CHARS, SEARCH_MAX_CHARS
from diagnosis.models import Batch, LesionImage
from tests.portal.helpers import GREEN, RED, image_bytes
from tests.portal.test_malformed_input import _stored

pytestmark = pytest.mark.django_db

API = "/api/v1"


@dataclass(frozen=True)
class TextField:
    where: str  # "patient", "lesion" or "review": the form and the API operation that take it
    name: str
    limit: int


FIELDS = [
    TextField("patient", "external_id", 64),
    TextField("patient", "name", 200),
    TextField("patient", "notes", LONG_TEXT_MAX_CHARS),
    TextField("lesion", "label", 200),
    TextField("lesion", "notes", LONG_TEXT_MAX_CHARS),
    TextField("review", "comment", LONG_TEXT_MAX_CHARS),
]
BASE = {
    "patient": {"external_id": "MRN-777", "name": "Grace Hopper", "sex": "female", "notes": ""},
    "lesion": {"label": "Left forearm", "body_site": "upper extremity", "notes": ""},
    "review": {"diagnosis": "nv", "comment": ""},
}


def _value(field: TextField, length: int) -> str:
    return ("M" if field.name == "external_id" else "x") * length


def _api_requests(field: TextField, value: str, ids: dict[str, int]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, body) of every API operation that takes the field."""
    body = {**BASE[field.where], field.name: value}
    match field.where:
        case "patient":
            return [("post", f"{API}/patients/", body), ("patch", f"{API}/patients/{ids['patient_id']}/", {field.name: value})]
        case "lesion":
            return [
                ("post", f"{API}/lesions/", {**body, "patient": ids["patient_id"]}),
                ("patch", f"{API}/lesions/{ids['lesion_id']}/", {field.name: value}),
            ]
    return [("post", f"{API}/reviews/", {**body, "image": ids["image_id"]})]


def _page_requests(field: TextField, value: str, ids: dict[str, int]) -> list[tuple[str, dict[str, Any]]]:
    """(path, form data) of every page form that takes the field."""
    body = {**BASE[field.where], field.name: value}
    match field.where:
        case "patient":
            body["organisation"] = ids["organisation_id"]
            return [(reverse("patient-create"), body), (reverse("patient-edit", args=[ids["patient_id"]]), body)]
        case "lesion":
            return [(reverse("lesion-create", args=[ids["patient_id"]]), body),
                    (reverse("lesion-edit", args=[ids["lesion_id"]]), body)]
    return [(reverse("image-review", args=[ids["image_id"]]), body)]


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f"{f.where}.{f.name}")
def test_it_refuses_text_past_its_limit_in_the_api_and_stores_nothing(api_for, owner, victim, field) -> None:
    api = api_for(owner)
    for too_long in (_value(field, field.limit + 1), _value(field, 2 * 1024 * 1024)):  # the attacker's 2 MB
        for method, path, body in _api_requests(field, too_long, victim):
            before = _stored()
            response = getattr(api, method)(path, body, format="json")
            assert response.status_code == 400, (path, response.content[:300])
            assert f"no more than {field.limit} characters" in str(response.json()["error"]["fields"][field.name])
            assert _stored() == before


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f"{f.where}.{f.name}")
def test_it_takes_text_up_to_its_limit_in_the_api(api_for, owner, victim, field) -> None:
    api = api_for(owner)
    for method, path, body in _api_requests(field, _value(field, field.limit), victim):
        with transaction.atomic():  # rolled back: a created patient's external id would clash with the PATCH
            response = getattr(api, method)(path, body, format="json")
            assert response.status_code in (200, 201), (path, response.content[:300])
            assert response.json()[field.name] == _value(field, field.limit)
            transaction.set_rollback(True)


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f"{f.where}.{f.name}")
def test_it_refuses_text_past_its_limit_on_the_page_and_stores_nothing(client_for, owner, victim, field) -> None:
    client = client_for(owner)
    for path, body in _page_requests(field, _value(field, field.limit + 1), victim):
        before = _stored()
        response = client.post(path, body)
        assert response.status_code == 400, (path, response.status_code)
        assert f"at most {field.limit} characters (it has {field.limit + 1})" in response.content.decode(), path
        assert _stored() == before


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f"{f.where}.{f.name}")
def test_it_refuses_a_nul_in_any_text_and_stores_nothing(client_for, api_for, owner, victim, field) -> None:
    value = "before\x00after"
    api, client = api_for(owner), client_for(owner)
    for method, path, body in _api_requests(field, value, victim):
        before = _stored()
        response = getattr(api, method)(path, body, format="json")
        assert response.status_code == 400, (path, response.content[:300])
        assert "Null characters are not allowed" in str(response.json()["error"]["fields"][field.name])
        assert _stored() == before
    for path, body in _page_requests(field, value, victim):
        before = _stored()
        response = client.post(path, body)
        assert response.status_code == 400 and "Null characters are not allowed" in response.content.decode(), path
        assert _stored() == before


def test_it_bounds_and_cleans_the_search_text(client_for, api_for, owner, patient) -> None:
    api = api_for(owner)
    for bad in ("q" * (SEARCH_MAX_CHARS + 1), "Ada\x00"):
        response = api.get(f"{API}/patients/", {"q": bad})
        assert response.status_code == 400 and "q" in response.json()["error"]["fields"]
        page = client_for(owner).get(reverse("patient-list"), {"q": bad})
        assert page.status_code == 400 and "Search not run" in page.content.decode()
    assert api.get(f"{API}/patients/", {"q": "q" * SEARCH_MAX_CHARS}).status_code == 200
    assert client_for(owner).get(reverse("patient-list"), {"q": "q" * SEARCH_MAX_CHARS}).status_code == 200


def test_it_bounds_free_text_in_the_admin_site_too(client, patient) -> None:
    from django.contrib.auth import get_user_model

    staff = get_user_model().objects.create_superuser("site-admin", "admin@example.org", "a long admin password 1")
    client.force_login(staff)
    url = reverse("admin:diagnosis_patient_change", args=[patient.pk])
    form = {"organisation": patient.organisation_id, "external_id": patient.external_id, "name": patient.name,
            "sex": patient.sex, "date_of_birth": "", "notes": "x" * (LONG_TEXT_MAX_CHARS + 1)}
    response = client.post(url, form)
    assert response.status_code == 200 and f"at most {LONG_TEXT_MAX_CHARS} characters" in response.content.decode()
    patient.refresh_from_db()
    assert len(patient.notes) <= LONG_TEXT_MAX_CHARS


def test_it_bounds_the_token_endpoints_password(api_for) -> None:
    from rest_framework.test import APIClient

    response = APIClient().post(f"{API}/auth/token/", {"username": "nobody", "password": "p" * (PASSWORD_MAX_CHARS + 1)},
                                format="json")
    assert response.status_code == 400 and "password" in response.json()["error"]["fields"]


def test_it_bounds_the_password_typed_to_confirm_a_step(client_for, owner, patient) -> None:
    response = client_for(owner).post(reverse("patient-delete", args=[patient.pk]), {"password": "p" * (PASSWORD_MAX_CHARS + 1)})
    assert response.status_code == 400
    assert f"at most {PASSWORD_MAX_CHARS} characters" in response.content.decode()
    patient.refresh_from_db()


def test_it_takes_the_nul_out_of_uploaded_file_names(api_for, owner, lesion, run_on_commit) -> None:
    """File names are never stored on disk; the one kept for messages loses its NUL (Django drops
    unprintable characters from multipart file names), so PostgreSQL can store it."""
    api = api_for(owner)
    png = SimpleUploadedFile("a\x00b.png", image_bytes(RED), content_type="image/png")
    with run_on_commit():
        response = api.post(f"{API}/images/", {"lesion": lesion.pk, "image": png}, format="multipart")
    assert response.status_code == 201, response.content
    assert LesionImage.objects.get(pk=response.json()["id"]).source_name == "ab.png"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("c\x00d.png", image_bytes(GREEN))  # zipfile itself cuts a name at NUL
    archive_file = SimpleUploadedFile("ses\x00sion.zip", buffer.getvalue(), content_type="application/zip")
    with run_on_commit():
        response = api.post(f"{API}/batches/", {"lesion": lesion.pk, "archive": archive_file}, format="multipart")
    assert response.status_code == 201, response.content
    batch = Batch.objects.get(pk=response.json()["id"])
    assert batch.name == "session.zip" and "\x00" not in batch.images.get().source_name


# --- Images too small to classify, on the batch paths ---------------------------------------------


def _small() -> bytes:
    return image_bytes(RED, size=(MIN_IMAGE_SIDE - 1, 300))


def test_it_refuses_an_image_too_small_to_classify_in_an_api_batch(api_for, owner, lesion, run_on_commit) -> None:
    files = [SimpleUploadedFile("small.png", _small(), content_type="image/png"),
             SimpleUploadedFile("good.png", image_bytes(RED), content_type="image/png")]
    with run_on_commit():
        response = api_for(owner).post(f"{API}/batches/", {"lesion": lesion.pk, "images": files}, format="multipart")
    assert response.status_code == 201, response.content
    (rejected,) = response.json()["rejected"]
    assert rejected["name"] == "small.png" and "too small to classify" in rejected["error"]
    assert [image["name"] for image in response.json()["images"]] == ["good.png"]


def test_it_refuses_an_image_too_small_to_classify_in_a_zip_and_on_the_batch_page(
    client_for, owner, lesion, run_on_commit
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("small.png", _small())
    before = _stored()
    response = client_for(owner).post(
        reverse("batch-create"),
        {"lesion": lesion.pk, "archive": SimpleUploadedFile("s.zip", buffer.getvalue()), "captured_at": "2024-05-01"},
    )
    assert response.status_code == 400 and "too small to classify" in response.content.decode()
    small = SimpleUploadedFile("small.png", _small(), content_type="image/png")
    response = client_for(owner).post(reverse("batch-create"), {"lesion": lesion.pk, "images": [small]})
    assert response.status_code == 400 and "too small to classify" in response.content.decode()
    assert _stored() == before
