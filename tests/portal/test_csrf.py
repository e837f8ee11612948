"""CSRF on every form, with the checks on (Client(enforce_csrf_checks=True)).

* Every page URL the resolver knows (the API and Django's admin aside) refuses a POST without
  the token with 403, before its view runs; the URLs that take a POST at all must each have a
  form below, so a new form cannot slip in untested.
* Each form: fetched as a user would, posted without the token (403, nothing changed), then
  with the token from the rendered form (done).
* The API: session-authenticated writes need the token (DRF's SessionAuthentication), token
  authenticated ones do not.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.auth.tokens import default_token_generator
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from knox.models import AuthToken
from rest_framework.test import APIClient

from diagnosis import services
from diagnosis.models import (
    Batch,
    Classification,
    ClinicianReview,
    Lesion,
    LesionImage,
    Membership,
    Organisation,
    Patient,
)
from tests.portal.helpers import PASSWORD, image_bytes
from tests.portal.urlwalk import url_routes

pytestmark = pytest.mark.django_db

CSRF_LOGGER = "django.security.csrf"
TOKEN_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
NEW_PASSWORD = "a-brand-new-passphrase-7"
DOMAIN_MODELS = [Organisation, Membership, Patient, Lesion, Batch, LesionImage, Classification, ClinicianReview]


@dataclass
class Ctx:
    owner: User
    outsider: User
    org: Organisation
    patient: Patient
    lesion: Lesion
    image: LesionImage
    batch: Batch
    membership: Membership  # the colleague's, for removal
    url_values: dict[str, Any] = field(default_factory=dict)
    api_token_key: str = ""  # the first 15 characters of one of the owner's API keys


@pytest.fixture
def ctx(owner, colleague, outsider, org, patient, lesion, upload) -> Ctx:
    image = upload()
    batch = services.batches.batch_create(
        user=owner, lesion=lesion, files=[services.uploads.ImageUpload(name="b.png", data=image_bytes())]
    )
    membership = Membership.objects.get(user=colleague, organisation=org)
    context = Ctx(owner, outsider, org, patient, lesion, image, batch, membership)
    context.api_token_key = services.accounts.api_token_create(user=owner).key[:15]
    context.url_values = {
        "patient_id": patient.pk,
        "lesion_id": lesion.pk,
        "image_id": image.pk,
        "batch_id": batch.pk,
        "organisation_id": org.pk,
        "membership_id": membership.pk,
        "uidb64": urlsafe_base64_encode(force_bytes(owner.pk)),
        "token": default_token_generator.make_token(owner),
    }
    return context


_files = itertools.count(1)


def _png() -> SimpleUploadedFile:
    """A new file each time: the lesion refuses one it already has."""
    return SimpleUploadedFile("photo.png", image_bytes(seed=next(_files)), content_type="image/png")


def _state() -> dict[str, Any]:
    """Everything a form could change: the domain rows, logins and passwords, tokens, e-mail."""
    state: dict[str, Any] = {m.__name__: list(m.objects.order_by("pk").values()) for m in DOMAIN_MODELS}
    state["users"] = list(User.objects.order_by("pk").values())
    state["tokens"] = list(AuthToken.objects.order_by("pk").values_list("digest", flat=True))
    state["mail"] = len(mail.outbox)
    return state


def _csrf_refusals(caplog: pytest.LogCaptureFixture, path: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == CSRF_LOGGER and r.getMessage().endswith(path)]


def _token_from(response: HttpResponse) -> str:
    match = TOKEN_FIELD.search(response.content.decode())
    assert match, "no CSRF token in the rendered page"
    return match.group(1)


def _client(user: User | None) -> Client:
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    return client


def _logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


# --- The forms -----------------------------------------------------------------------------


@dataclass
class Form:
    page: Callable[[Ctx], str]  # the page that renders the form
    action: Callable[[Ctx], str]  # where it posts
    data: Callable[[Ctx], dict[str, Any]]
    done: Callable[[Ctx, Client, HttpResponse], None]  # asserts that the submission took effect
    anonymous: bool = False  # filled in by a visitor who is not logged in


def _reset_link(c: Ctx) -> str:
    return reverse("password_reset_confirm", kwargs={"uidb64": c.url_values["uidb64"], "token": c.url_values["token"]})


def _done_login(c: Ctx, client: Client, r: HttpResponse) -> None:
    assert r.status_code == 302 and _logged_in(client)


def _done_logout(c: Ctx, client: Client, r: HttpResponse) -> None:
    assert r.status_code == 302 and not _logged_in(client)


def _done_new_password(c: Ctx, client: Client, r: HttpResponse) -> None:
    c.owner.refresh_from_db()
    assert r.status_code == 302 and c.owner.check_password(NEW_PASSWORD)


def _done_reset_mail(c: Ctx, client: Client, r: HttpResponse) -> None:
    assert r.status_code == 302 and len(mail.outbox) == 1


def _done_patient_created(c: Ctx, client: Client, r: HttpResponse) -> None:
    assert r.status_code == 302 and Patient.objects.filter(external_id="MRN-002").exists()


def _done_patient_edited(c: Ctx, client: Client, r: HttpResponse) -> None:
    c.patient.refresh_from_db()
    assert r.status_code == 302 and c.patient.name == "Ada King"


def _done_patient_deleted(c: Ctx, client: Client, r: HttpResponse) -> None:
    assert r.status_code == 302 and not Patient.objects.filter(pk=c.patient.pk).exists()


def _done_patient_exported(c: Ctx, client: Client, r: HttpResponse) -> None:
    assert r.status_code == 200 and r["Content-Type"] == "application/zip"


def _done_lesion_created(c: Ctx, client: Client, r: HttpResponse) -> None:
    assert r.status_code == 302 and Lesion.objects.filter(label="Left knee").exists()


def _done_lesion_edited(c: Ctx, client: Client, r: HttpResponse) -> None:
    c.lesion.refresh_from_db()
    assert r.status_code == 302 and c.lesion.label == "Upper back, right"


def _done_follow_up(c: Ctx, client: Client, r: HttpResponse) -> None:
    c.lesion.refresh_from_db()
    assert r.status_code == 302 and c.lesion.follow_up_on == timezone.localdate()


def _done_lesion_closed(c: Ctx, client: Client, r: HttpResponse) -> None:
    c.lesion.refresh_from_db()
    assert r.status_code == 302 and c.lesion.outcome == "discharged"


def _reopen_page(c: Ctx) -> str:
    """The reopen form shows only for a closed lesion: close it first."""
    services.patients.lesion_close(user=c.owner, lesion=c.lesion, outcome="discharged")
    return reverse("lesion-reopen", args=[c.lesion.pk])


def _done_lesion_reopened(c: Ctx, client: Client, r: HttpResponse) -> None:
    c.lesion.refresh_from_db()
    assert r.status_code == 302 and c.lesion.closed_on is None and "Discharged" in c.lesion.notes


def _done_uploaded(c: Ctx, client: Client, r: HttpResponse) -> None:
    assert r.status_code == 302 and LesionImage.objects.filter(lesion=c.lesion, batch__isnull=True).count() == 2


def _done_reviewed(c: Ctx, client: Client, r: HttpResponse) -> None:
    assert r.status_code == 302 and ClinicianReview.objects.filter(image=c.image, diagnosis="bcc").exists()


def _done_classify_requested(c: Ctx, client: Client, r: HttpResponse) -> None:
    assert r.status_code == 302 and r["Location"] == reverse("image-detail", args=[c.image.pk])


def _done_batch(c: Ctx, client: Client, r: HttpResponse) -> None:
    assert r.status_code == 302 and Batch.objects.count() == 2


def _done_member_added(c: Ctx, client: Client, r: HttpResponse) -> None:
    assert r.status_code == 302 and Membership.objects.filter(user=c.outsider, organisation=c.org).exists()


def _done_member_removed(c: Ctx, client: Client, r: HttpResponse) -> None:
    assert r.status_code == 302 and not Membership.objects.filter(pk=c.membership.pk).exists()


def _done_api_token_created(c: Ctx, client: Client, r: HttpResponse) -> None:
    assert r.status_code == 200 and AuthToken.objects.filter(user=c.owner).count() == 2
    assert "Your new API key" in r.content.decode()


def _done_api_token_revoked(c: Ctx, client: Client, r: HttpResponse) -> None:
    assert r.status_code == 302 and not AuthToken.objects.filter(token_key=c.api_token_key).exists()


def _done_api_token_rotated(c: Ctx, client: Client, r: HttpResponse) -> None:
    assert r.status_code == 200 and "Your new API key" in r.content.decode()
    assert not AuthToken.objects.filter(token_key=c.api_token_key).exists()
    assert AuthToken.objects.filter(user=c.owner).count() == 1


FORMS: dict[str, Form] = {
    "login": Form(
        page=lambda c: reverse("login"),
        action=lambda c: reverse("login"),
        data=lambda c: {"username": "alice", "password": PASSWORD},
        done=_done_login,
        anonymous=True,
    ),
    "logout": Form(
        page=lambda c: reverse("dashboard"),
        action=lambda c: reverse("logout"),
        data=lambda c: {},
        done=_done_logout,
    ),
    "password_change": Form(
        page=lambda c: reverse("password_change"),
        action=lambda c: reverse("password_change"),
        data=lambda c: {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
        done=_done_new_password,
    ),
    "password_reset": Form(
        page=lambda c: reverse("password_reset"),
        action=lambda c: reverse("password_reset"),
        data=lambda c: {"email": "alice@example.org"},
        done=_done_reset_mail,
        anonymous=True,
    ),
    "password_reset_confirm": Form(
        page=_reset_link,  # redirects to .../set-password/ with the token kept in the session
        action=lambda c: reverse(
            "password_reset_confirm", kwargs={"uidb64": c.url_values["uidb64"], "token": "set-password"}
        ),
        data=lambda c: {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
        done=_done_new_password,
        anonymous=True,
    ),
    "patient-create": Form(
        page=lambda c: reverse("patient-create"),
        action=lambda c: reverse("patient-create"),
        data=lambda c: {
            "organisation": c.org.pk,
            "external_id": "MRN-002",
            "name": "Grace Hopper",
            "date_of_birth": "1906-12-09",
            "sex": "female",
        },
        done=_done_patient_created,
    ),
    "patient-edit": Form(
        page=lambda c: reverse("patient-edit", args=[c.patient.pk]),
        action=lambda c: reverse("patient-edit", args=[c.patient.pk]),
        data=lambda c: {"external_id": "MRN-001", "name": "Ada King", "date_of_birth": "1960-12-10", "sex": "female"},
        done=_done_patient_edited,
    ),
    "patient-delete": Form(
        page=lambda c: reverse("patient-delete", args=[c.patient.pk]),
        action=lambda c: reverse("patient-delete", args=[c.patient.pk]),
        data=lambda c: {"password": PASSWORD},
        done=_done_patient_deleted,
    ),
    "patient-export": Form(
        page=lambda c: reverse("patient-export", args=[c.patient.pk]),
        action=lambda c: reverse("patient-export", args=[c.patient.pk]),
        data=lambda c: {"password": PASSWORD},
        done=_done_patient_exported,
    ),
    "lesion-create": Form(
        page=lambda c: reverse("lesion-create", args=[c.patient.pk]),
        action=lambda c: reverse("lesion-create", args=[c.patient.pk]),
        data=lambda c: {"label": "Left knee", "body_site": "lower extremity"},
        done=_done_lesion_created,
    ),
    "lesion-edit": Form(
        page=lambda c: reverse("lesion-edit", args=[c.lesion.pk]),
        action=lambda c: reverse("lesion-edit", args=[c.lesion.pk]),
        data=lambda c: {"label": "Upper back, right", "body_site": "back", "notes": "6 mm"},
        done=_done_lesion_edited,
    ),
    "lesion-follow-up": Form(
        page=lambda c: reverse("lesion-follow-up", args=[c.lesion.pk]),
        action=lambda c: reverse("lesion-follow-up", args=[c.lesion.pk]),
        data=lambda c: {"follow_up_on": timezone.localdate().isoformat()},
        done=_done_follow_up,
    ),
    "lesion-close": Form(
        page=lambda c: reverse("lesion-close", args=[c.lesion.pk]),
        action=lambda c: reverse("lesion-close", args=[c.lesion.pk]),
        data=lambda c: {"outcome": "discharged", "closed_on": timezone.localdate().isoformat()},
        done=_done_lesion_closed,
    ),
    "lesion-reopen": Form(
        page=_reopen_page,
        action=lambda c: reverse("lesion-reopen", args=[c.lesion.pk]),
        data=lambda c: {},
        done=_done_lesion_reopened,
    ),
    "lesion-upload": Form(
        page=lambda c: reverse("lesion-upload", args=[c.lesion.pk]),
        action=lambda c: reverse("lesion-upload", args=[c.lesion.pk]),
        data=lambda c: {"images": [_png()], "captured_at": "2024-05-01"},
        done=_done_uploaded,
    ),
    "image-review": Form(
        page=lambda c: reverse("image-detail", args=[c.image.pk]),
        action=lambda c: reverse("image-review", args=[c.image.pk]),
        data=lambda c: {"diagnosis": "bcc", "comment": "Biopsy"},
        done=_done_reviewed,
    ),
    "image-classify": Form(
        page=lambda c: reverse("image-detail", args=[c.image.pk]),
        action=lambda c: reverse("image-classify", args=[c.image.pk]),
        data=lambda c: {},
        done=_done_classify_requested,
    ),
    "batch-create": Form(
        page=lambda c: reverse("batch-create") + f"?lesion={c.lesion.pk}",
        action=lambda c: reverse("batch-create"),
        data=lambda c: {"lesion": c.lesion.pk, "images": [_png()], "captured_at": "2024-05-01"},
        done=_done_batch,
    ),
    "organisation-detail": Form(
        page=lambda c: reverse("organisation-detail", args=[c.org.pk]),
        action=lambda c: reverse("organisation-detail", args=[c.org.pk]),
        data=lambda c: {"username": "charlie", "role": "readonly"},
        done=_done_member_added,
    ),
    "organisation-member-remove": Form(
        page=lambda c: reverse("organisation-detail", args=[c.org.pk]),
        action=lambda c: reverse("organisation-member-remove", args=[c.org.pk, c.membership.pk]),
        data=lambda c: {},
        done=_done_member_removed,
    ),
    "account-api-tokens": Form(
        page=lambda c: reverse("account-api-tokens"),
        action=lambda c: reverse("account-api-tokens"),
        data=lambda c: {"password": PASSWORD},
        done=_done_api_token_created,
    ),
    "account-api-token-revoke": Form(
        page=lambda c: reverse("account-api-tokens"),
        action=lambda c: reverse("account-api-token-revoke"),
        data=lambda c: {"key": c.api_token_key},
        done=_done_api_token_revoked,
    ),
    "account-api-token-rotate": Form(
        page=lambda c: reverse("account-api-token-rotate") + f"?key={c.api_token_key}",
        action=lambda c: reverse("account-api-token-rotate"),
        data=lambda c: {"key": c.api_token_key, "password": PASSWORD},
        done=_done_api_token_rotated,
    ),
}


@pytest.mark.parametrize("name", sorted(FORMS))
def test_it_requires_the_csrf_token_on_every_form(name, ctx, caplog, run_on_commit):
    form = FORMS[name]
    client = _client(None if form.anonymous else ctx.owner)
    page = client.get(form.page(ctx), follow=True)
    assert page.status_code == 200
    action = form.action(ctx)
    html = page.content.decode()
    posts_to_itself = page.wsgi_request.path == action and '<form method="post"' in html
    assert f'action="{action}"' in html or posts_to_itself, f"the page renders no form posting to {action}"
    logged_in = _logged_in(client)
    before = _state()

    refused = client.post(action, form.data(ctx))
    assert refused.status_code == 403
    assert _csrf_refusals(caplog, action), "refused, but not by the CSRF check"
    assert _state() == before and _logged_in(client) == logged_in

    with run_on_commit():
        response = client.post(action, {**form.data(ctx), "csrfmiddlewaretoken": _token_from(page)})
    form.done(ctx, client, response)


# --- Every POST-able page URL ----------------------------------------------------------------


def _page_urls(ctx: Ctx) -> dict[str, str]:
    """name -> URL of every page pattern, the API's and the admin's aside (both tested elsewhere)."""
    urls = {}
    for found in url_routes():
        route, name = found.route, found.name
        if route.startswith(("api/", "admin/", "^api/", "^admin/")):
            continue
        unknown = set(re.findall(r"<(?:\w+:)?(\w+)>", route)) - ctx.url_values.keys()
        assert not unknown, f"add a value for {unknown} (URL {route}) to the ctx fixture"
        urls[name or route] = "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(ctx.url_values[m.group(1)]), route)
    return urls


def test_it_finds_every_form_through_the_url_resolver(ctx, caplog, run_on_commit):
    urls = _page_urls(ctx)
    assert {"dashboard", "login", "patient-create", "organisation-member-remove"} <= urls.keys()
    takes_post = set()
    for name, url in urls.items():
        client = _client(ctx.owner)
        assert client.post(url).status_code == 403, url
        assert _csrf_refusals(caplog, url), url
        token = _token_from(client.get(reverse("dashboard")))
        caplog.clear()
        with run_on_commit():
            response = client.post(url, {"csrfmiddlewaretoken": token})
        assert not _csrf_refusals(caplog, url), url
        if response.status_code != 405:
            takes_post.add(name)
    assert takes_post == set(FORMS), "a page takes POST without a CSRF test above, or a form is gone"


# --- API -----------------------------------------------------------------------------------


def test_it_requires_the_csrf_token_for_session_api_writes(owner, org):
    client = _client(owner)
    body = {"external_id": "MRN-API", "name": "Session Patient"}
    response = client.post("/api/v1/patients/", body, content_type="application/json")
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "permission_denied" and "CSRF" in error["message"]
    assert not Patient.objects.exists()
    token = _token_from(client.get(reverse("dashboard")))
    response = client.post("/api/v1/patients/", body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 201 and Patient.objects.filter(external_id="MRN-API").exists()


def test_it_needs_no_csrf_token_for_token_api_writes(owner, org):
    api = APIClient(enforce_csrf_checks=True)
    response = api.post("/api/v1/auth/token/", {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 200
    api.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    response = api.post("/api/v1/patients/", {"external_id": "MRN-TOK", "name": "Token Patient"}, format="json")
    assert response.status_code == 201
