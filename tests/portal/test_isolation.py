"""Tenant isolation, proven by a grid: every object route of the portal (pages and API, found by
walking the URL resolver, so a new route cannot be missed) is tried with every method by a user
of another organisation, and the read-only role tries to write everywhere.

SECURITY.md quotes GRID_ROUTES x GRID_METHODS; tests/portal/test_security_doc.py checks it.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from diagnosis import services
from diagnosis.models import (
    AuditEvent,
    Batch,
    Classification,
    ClinicianReview,
    Lesion,
    LesionImage,
    Membership,
    Organisation,
    Patient,
    Role,
)
from diagnosis.scoping import SCOPED_URL_KWARGS
from tests.portal.helpers import PASSWORD, RED, image_bytes
from tests.portal.urlwalk import url_routes

GRID_METHODS = ("get", "post", "put", "patch", "delete")
SECRET_NAME = "Zebedee Outsiderson"
SECRET_EXTERNAL_ID = "SECRET-EXT-99"
SECRET_LESION = "Secret lesion on the left knee"
SECRET_COMMENT = "secret review comment"
SECRETS = (SECRET_NAME, SECRET_EXTERNAL_ID, SECRET_LESION, SECRET_COMMENT)


@dataclass(frozen=True)
class Route:
    name: str
    kwargs: tuple[str, ...]
    api: bool


def _routes() -> list[Route]:
    return [
        Route(r.name, r.kwargs, r.name.startswith("api-"))
        for r in url_routes()
        if r.namespace != "admin" and r.name  # admin: staff only, tested below
    ]


ALL_ROUTES = _routes()
# Object routes: those that name an object of an organisation in the URL.
OBJECT_ROUTES = [route for route in ALL_ROUTES if set(route.kwargs) & SCOPED_URL_KWARGS]
GRID_ROUTES = len(OBJECT_ROUTES)
GRID_REQUESTS = GRID_ROUTES * len(GRID_METHODS)
# Routes of the portal and its API that write patient data or memberships when POSTed to (the
# sign-in, sign-out and password routes of django.contrib.auth are about one's own account).
PORTAL_ROUTES = [route for route in ALL_ROUTES if not re.match(r"^(login|logout|password_)", route.name)]


def _state() -> dict[str, list]:
    """Every row the grid could change (audit events are added on purpose: they are the trail)."""
    models = [Organisation, Membership, Patient, Lesion, LesionImage, Classification, ClinicianReview, Batch]
    state = {model.__name__: sorted(map(repr, model.objects.order_by("pk").values_list())) for model in models}
    # Signing in (force_login) stamps last_login; everything else about the accounts must stay.
    fields = [f.name for f in User._meta.concrete_fields if f.name != "last_login"]
    state["User"] = sorted(map(repr, User.objects.order_by("pk").values_list(*fields)))
    return state


@pytest.fixture
def secrets_elsewhere(other_org, outsider, run_on_commit) -> dict[str, int]:
    """Another organisation's data, with text that must never appear in `org`'s answers."""
    patient = services.patients.patient_create(
        user=outsider, organisation=other_org, external_id=SECRET_EXTERNAL_ID, name=SECRET_NAME
    )
    lesion = services.patients.lesion_create(
        user=outsider, patient=patient, body_site="lower extremity", label=SECRET_LESION
    )
    with run_on_commit():
        (image,) = services.uploads.lesion_image_upload(
            user=outsider, lesion=lesion, files=[services.uploads.ImageUpload(name="x.png", data=image_bytes(RED))]
        )
    services.reviews.review_create(user=outsider, image=image, diagnosis="nv", comment=SECRET_COMMENT)
    return {"organisation": other_org.pk, "patient": patient.pk, "lesion": lesion.pk, "image": image.pk}


def _client(route: Route, user: User, api_for) -> Client:
    if route.api:
        return api_for(user)
    client = Client()
    client.force_login(user)
    return client


def test_it_found_every_object_route_and_knows_its_scope():
    assert GRID_ROUTES >= 20, [route.name for route in OBJECT_ROUTES]
    for route in OBJECT_ROUTES:
        unknown = [key for key in route.kwargs if key not in SCOPED_URL_KWARGS]
        assert not unknown, f"{route.name} has URL keywords {unknown} that scoping does not know"


def test_it_answers_404_to_an_outsider_on_every_object_route_and_method(victim, outsider, api_for):
    before = _state()
    results = {}
    for route in OBJECT_ROUTES:
        url = reverse(route.name, kwargs={key: victim[key] for key in route.kwargs})
        client = _client(route, outsider, api_for)
        for method in GRID_METHODS:
            results[(route.name, method)] = getattr(client, method)(url).status_code
    assert len(results) == GRID_REQUESTS
    not_404 = {key: code for key, code in results.items() if code != 404}
    assert not_404 == {}
    assert _state() == before


def test_it_answers_404_to_an_outsider_whose_organisation_id_is_real_but_not_theirs(victim, outsider, client):
    client.force_login(outsider)
    for name in ("organisation-audit", "organisation-agreement"):
        response = client.get(reverse(name, kwargs={"organisation_id": victim["organisation_id"]}), {"format": "csv"})
        assert response.status_code == 404, name


def test_it_lets_the_read_only_role_write_nowhere(victim, reader, api_for):
    before = _state()
    successes = {}
    for route in PORTAL_ROUTES:
        if route.kwargs and not set(route.kwargs) <= set(victim):
            continue
        url = reverse(route.name, kwargs={key: victim[key] for key in route.kwargs})
        client = _client(route, reader, api_for)
        for method in ("post", "put", "patch", "delete"):
            code = getattr(client, method)(url).status_code
            if code < 400:
                successes[(route.name, method)] = code
    # The token endpoint answers 400 without credentials; nothing else may succeed either.
    assert successes == {}
    assert _state() == before


def test_it_lets_the_read_only_role_read(victim, reader, client):
    client.force_login(reader)
    assert client.get(reverse("patient-detail", kwargs={"patient_id": victim["patient_id"]})).status_code == 200


def _get_lists(owner, api_for, secrets: dict[str, int]) -> dict[str, bytes]:
    client = Client()
    client.force_login(owner)
    api = api_for(owner)
    pages = {
        "dashboard": client.get(reverse("dashboard")),
        "patient-list": client.get(reverse("patient-list")),
        "patient-search": client.get(reverse("patient-list"), {"q": "Zebedee"}),
        "patient-search-id": client.get(reverse("patient-list"), {"q": SECRET_EXTERNAL_ID}),
        "batch-list": client.get(reverse("batch-list")),
    }
    api_calls = {
        "api-patients": ("api-patient-list", {}),
        "api-patients-q": ("api-patient-list", {"q": "Zebedee"}),
        "api-patients-org": ("api-patient-list", {"organisation": secrets["organisation"]}),
        "api-lesions": ("api-lesion-list", {}),
        "api-lesions-patient": ("api-lesion-list", {"patient": secrets["patient"]}),
        "api-images": ("api-image-list", {}),
        "api-images-lesion": ("api-image-list", {"lesion": secrets["lesion"]}),
        "api-images-patient": ("api-image-list", {"patient": secrets["patient"]}),
        "api-classifications": ("api-classification-list", {}),
        "api-classifications-patient": ("api-classification-list", {"patient": secrets["patient"]}),
        "api-reviews": ("api-review-list", {}),
        "api-reviews-image": ("api-review-list", {"image": secrets["image"]}),
        "api-batches": ("api-batch-list", {}),
        "api-schema": ("api-schema", {"format": "json"}),
        "api-me": ("api-me", {}),
    }
    for key, (name, params) in api_calls.items():
        pages[key] = api.get(reverse(name), params)
    return {key: response for key, response in pages.items()}


def test_it_shows_no_other_organisations_rows_in_lists_search_filters_and_schema(
    victim, owner, api_for, secrets_elsewhere
):
    responses = _get_lists(owner, api_for, secrets_elsewhere)
    for key, response in responses.items():
        assert response.status_code in (200, 400), (key, response.status_code)
        body = response.content.decode()
        echoed = SECRET_EXTERNAL_ID if key == "patient-search-id" else None  # the search box shows its own query
        leaked = [secret for secret in SECRETS if secret in body and secret != echoed]
        assert not leaked, (key, leaked)
    for key, response in responses.items():
        if key.startswith("api-") and key not in ("api-schema", "api-me") and response.status_code == 200:
            ids = {row["id"] for row in response.json()["results"]}
            foreign = {
                "api-patients": {secrets_elsewhere["patient"]},
                "api-lesions": {secrets_elsewhere["lesion"]},
                "api-images": {secrets_elsewhere["image"]},
            }
            for prefix, forbidden in foreign.items():
                if key.startswith(prefix):
                    assert not ids & forbidden, key
            if key.endswith(("-org", "-patient", "-lesion", "-image")):
                assert ids == set(), key


def test_it_exports_only_the_organisations_own_data(victim, owner, client, secrets_elsewhere):
    client.force_login(owner)
    export = client.post(reverse("patient-export", kwargs={"patient_id": victim["patient_id"]}), {"password": PASSWORD})
    assert export.status_code == 200
    with zipfile.ZipFile(io.BytesIO(export.content)) as archive:
        text = json.dumps(json.loads(archive.read("patient.json")))
    assert not [secret for secret in SECRETS if secret in text]
    audit_csv = client.get(
        reverse("organisation-audit", kwargs={"organisation_id": victim["organisation_id"]}), {"format": "csv"}
    )
    assert audit_csv.status_code == 200
    rows = b"".join(audit_csv.streaming_content).decode()
    assert "charlie" not in rows  # the outsider's own activity stays in their organisation's log
    assert AuditEvent.objects.filter(organisation_id=secrets_elsewhere["organisation"]).exists()


def test_it_refuses_to_create_objects_under_another_organisations_parents(victim, owner, api_for, secrets_elsewhere):
    api = api_for(owner)
    before = _state()
    png = image_bytes(RED)
    attempts = {
        "patient in other org": api.post(
            "/api/v1/patients/",
            {"organisation": secrets_elsewhere["organisation"], "external_id": "N-1", "name": "New"},
            format="json",
        ),
        "lesion under other patient": api.post(
            "/api/v1/lesions/", {"patient": secrets_elsewhere["patient"], "label": "x"}, format="json"
        ),
        "image under other lesion": api.post(
            "/api/v1/images/",
            {"lesion": secrets_elsewhere["lesion"], "image": _file(png)},
            format="multipart",
        ),
        "review of other image": api.post(
            "/api/v1/reviews/", {"image": secrets_elsewhere["image"], "diagnosis": "nv"}, format="json"
        ),
        "batch under other lesion": api.post(
            "/api/v1/batches/", {"lesion": secrets_elsewhere["lesion"], "images": [_file(png)]}, format="multipart"
        ),
        "batch in other org": api.post(
            "/api/v1/batches/",
            {"organisation": secrets_elsewhere["organisation"], "images": [_file(png)]},
            format="multipart",
        ),
    }
    client = Client()
    client.force_login(owner)
    attempts["page: patient in other org"] = client.post(
        reverse("patient-create"),
        {"organisation": secrets_elsewhere["organisation"], "external_id": "N-2", "name": "New", "sex": "unknown"},
    )
    attempts["page: batch under other lesion"] = client.post(
        reverse("batch-create"), {"lesion": secrets_elsewhere["lesion"], "images": _file(png)}
    )
    codes = {key: response.status_code for key, response in attempts.items()}
    assert {key: code for key, code in codes.items() if code not in (400, 404)} == {}
    assert _state() == before


def _file(data: bytes, name: str = "lesion.png"):
    handle = io.BytesIO(data)
    handle.name = name
    return handle


def test_it_serves_image_files_only_through_the_checking_view(victim, owner, outsider, client, settings):
    image = LesionImage.objects.get(pk=victim["image_id"])
    assert re.fullmatch(r"lesion-images/\d{4}/\d{2}/[0-9a-f]{32}\.png", image.file.name)  # generated, not the upload's
    client.force_login(owner)
    assert client.get(f"/media/{image.file.name}").status_code == 404
    assert client.get(f"/{image.file.name}").status_code == 404
    assert client.get(reverse("image-file", kwargs={"image_id": image.pk})).status_code == 200
    client.force_login(outsider)
    assert client.get(reverse("image-file", kwargs={"image_id": image.pk})).status_code == 404


def test_it_keeps_the_admin_site_to_staff(victim, owner, client):
    client.force_login(owner)  # an organisation admin is not staff
    before = _state()
    for name in ("patient", "lesion", "lesionimage", "classification", "clinicianreview", "batch"):
        url = reverse(f"admin:diagnosis_{name}_changelist")
        for method in GRID_METHODS:
            response = getattr(client, method)(url)
            assert response.status_code == 302 and "/admin/login/" in response["Location"], (name, method)
    assert _state() == before


def test_it_gives_an_outsider_admin_of_their_own_organisation_no_more(victim, other_org, api_for):
    boss = User.objects.create_user("olga", password=PASSWORD)
    services.accounts.membership_set(user=boss, organisation=other_org, role=Role.ADMIN)
    api = api_for(boss)
    for key in ("patient_id", "lesion_id", "image_id"):
        name = {"patient_id": "api-patient-detail", "lesion_id": "api-lesion-detail", "image_id": "api-image-detail"}[
            key
        ]
        assert api.get(reverse(name, kwargs={key: victim[key]})).status_code == 404
