"""The audit trail: exactly one event per request to every patient-data route, denied attempts
included, events from tasks and sign-in failures, append-only rows, and the admins' log view."""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from diagnosis.audit import AUDITED_ADMIN_MODELS, AUDITED_ROUTES
from diagnosis.models import AuditEvent, AuditOutcome
from tests.portal.helpers import PASSWORD, RED, image_bytes
from tests.portal.urlwalk import url_routes

# Named routes that show no patient data (health, sign-in, the caller's own account, members,
# operations counters, API schema and docs, the audit log itself).
NOT_PATIENT_DATA = {
    "healthz",
    "readyz",
    "login",
    "logout",
    "password_change",
    "password_change_done",
    "password_reset",
    "password_reset_done",
    "password_reset_confirm",
    "password_reset_complete",
    "organisation-detail",
    "organisation-member-remove",
    "organisation-audit",
    "ops",
    "api-token",
    "api-me",
    "api-schema",
    "api-docs",
    "api-redoc",
}
# What a clinician does on each route in the walk: the method, and form data for POSTs.
POSTED = {
    "patient-create": {"organisation": "{organisation_id}", "external_id": "MRN-777", "name": "New", "sex": "unknown"},
    "patient-edit": {"external_id": "MRN-001", "name": "Ada L.", "sex": "female"},
    "lesion-create": {"label": "Left wrist", "body_site": "hand"},
    "image-review": {"diagnosis": "nv"},
    "image-classify": {},
    "api-image-classify": {},
}


def _new_events(since: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(pk__gt=since).exclude(surface="task").order_by("pk"))


def _last_id() -> int:
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def test_it_lists_every_route_as_audited_or_as_holding_no_patient_data():
    names = {r.name for r in url_routes() if r.namespace != "admin" and r.name}
    unclassified = names - set(AUDITED_ROUTES) - NOT_PATIENT_DATA
    assert unclassified == set(), "add these routes to diagnosis/audit.py AUDITED_ROUTES or to NOT_PATIENT_DATA"
    assert set(AUDITED_ROUTES) <= names  # no stale entries


def test_it_records_exactly_one_event_per_request_on_every_patient_data_route(victim, owner, api_for):
    client = Client()
    client.force_login(owner)
    api = api_for(owner)
    checked = 0
    for name, route in AUDITED_ROUTES.items():
        url = reverse(name, kwargs={key: victim[key] for key in _kwargs_of(name)})
        surface_client = api if name.startswith("api-") else client
        if name in POSTED:
            data = {k: v.format(**victim) for k, v in POSTED[name].items()}
            method, response = "POST", surface_client.post(url, data)
        else:
            method, response = "GET", surface_client.get(url)
        before = _last_id_before(response)
        events = _new_events(before)
        assert len(events) == 1, (name, [(e.route, e.action) for e in events])
        event = events[0]
        assert event.route == name and event.method == method, name
        assert event.actor_id == owner.pk and event.actor_username == "alice"
        assert event.organisation_id == victim["organisation_id"], name
        assert event.status_code == response.status_code and event.outcome == AuditOutcome.OK, (name, event.status_code)
        assert event.request_id == response["X-Request-ID"]
        assert event.surface == ("api" if name.startswith("api-") else "page")
        if route.kind == "detail" and name not in POSTED:
            assert event.object_type == route.object_type
            assert event.object_id == victim[f"{route.object_type}_id"], name
        checked += 1
    assert checked == len(AUDITED_ROUTES)


def _kwargs_of(name: str) -> tuple[str, ...]:
    (route,) = [r for r in url_routes() if r.name == name and r.namespace != "admin"]
    return route.kwargs


def _last_id_before(response) -> int:
    """The id just before the event of this response (found by its request id)."""
    event = AuditEvent.objects.filter(request_id=response["X-Request-ID"]).order_by("pk").first()
    assert event is not None, "no event carries the response's X-Request-ID"
    return event.pk - 1


def test_it_records_what_a_request_created(owner, org, client_for):
    client = client_for(owner)
    response = client.post(
        reverse("patient-create"), {"organisation": org.pk, "external_id": "N-1", "name": "New", "sex": "unknown"}
    )
    assert response.status_code == 302
    event = AuditEvent.objects.get(request_id=response["X-Request-ID"])
    assert (event.action, event.object_type, event.organisation_id) == ("create", "patient", org.pk)
    assert event.object_id == int(response["Location"].rstrip("/").split("/")[-1])


def test_it_records_a_denied_attempt_under_the_targeted_organisation(victim, outsider, api_for):
    response = api_for(outsider).delete(reverse("api-patient-detail", kwargs={"patient_id": victim["patient_id"]}))
    assert response.status_code == 404
    event = AuditEvent.objects.get(request_id=response["X-Request-ID"])
    assert event.outcome == AuditOutcome.DENIED and event.actor_username == "charlie"
    assert event.organisation_id == victim["organisation_id"]  # the victim's admins see it in their log
    assert (event.object_type, event.object_id, event.method) == ("patient", victim["patient_id"], "DELETE")


def test_it_records_a_refused_write(reader, patient, client_for):
    response = client_for(reader).post(reverse("patient-edit", args=[patient.pk]), {"name": "X"})
    assert response.status_code == 403
    event = AuditEvent.objects.get(request_id=response["X-Request-ID"])
    assert (event.outcome, event.action, event.actor_username) == (AuditOutcome.DENIED, "update", "rita")


def test_it_records_one_event_per_image_a_task_classifies(upload, org):
    image = upload(image_bytes(RED))
    events = AuditEvent.objects.filter(surface="task")
    assert [(e.action, e.object_type, e.object_id, e.organisation_id, e.actor_id) for e in events] == [
        ("classify", "image", image.pk, org.pk, None)
    ]


def test_it_records_failed_logins_without_the_password(owner, client):
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong-password-123"})
    assert response.status_code == 200
    event = AuditEvent.objects.get(action="login_failed")
    assert event.actor_username == "alice" and event.outcome == AuditOutcome.DENIED
    assert "wrong-password" not in repr(list(AuditEvent.objects.values_list()))


def test_it_keeps_patient_data_out_of_events(owner, patient, client_for):
    client_for(owner).get(reverse("patient-list"), {"q": patient.name})
    for row in AuditEvent.objects.values_list():
        assert patient.name not in repr(row) and patient.external_id not in repr(row)


def test_it_refuses_to_change_or_delete_events(owner, patient, client_for):
    client_for(owner).get(reverse("patient-detail", args=[patient.pk]))
    event = AuditEvent.objects.get()
    event.action = "nothing happened"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.update(action="x")
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.bulk_update([event], ["action"])
    assert AuditEvent.objects.get().action == "view"


def test_it_records_admin_site_access_to_patient_data(victim, owner):
    staff = User.objects.create_user("sam", password=PASSWORD, is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(staff)
    for model in AUDITED_ADMIN_MODELS:
        response = client.get(reverse(f"admin:diagnosis_{model}_changelist"))
        assert response.status_code == 200
        assert AuditEvent.objects.filter(request_id=response["X-Request-ID"], surface="admin").count() == 1
    response = client.get(reverse("admin:diagnosis_patient_change", args=[victim["patient_id"]]))
    event = AuditEvent.objects.get(request_id=response["X-Request-ID"])
    assert (event.action, event.object_type, event.object_id, event.organisation_id) == (
        "view",
        "patient",
        victim["patient_id"],
        victim["organisation_id"],
    )


def test_it_shows_the_log_to_organisation_admins_only(victim, owner, colleague, outsider, client):
    url = reverse("organisation-audit", kwargs={"organisation_id": victim["organisation_id"]})
    client.force_login(colleague)
    client.get(reverse("patient-detail", kwargs={"patient_id": victim["patient_id"]}))
    assert client.get(url).status_code == 403
    client.force_login(outsider)
    assert client.get(url).status_code == 404
    client.force_login(owner)
    page = client.get(url, {"actor": "bob", "action": "view"})
    assert page.status_code == 200
    body = page.content.decode()
    assert "bob" in body and "patient" in body
    assert client.get(url, {"date_from": "not a date"}).status_code == 400


def test_it_exports_the_log_as_csv(victim, owner, colleague, client):
    client.force_login(colleague)
    client.get(reverse("patient-detail", kwargs={"patient_id": victim["patient_id"]}))
    client.force_login(owner)
    response = client.get(
        reverse("organisation-audit", kwargs={"organisation_id": victim["organisation_id"]}),
        {"format": "csv", "actor": "bob"},
    )
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows and {row["actor_username"] for row in rows} == {"bob"}
    assert any(row["route"] == "patient-detail" and row["object_id"] == str(victim["patient_id"]) for row in rows)


def test_it_records_the_forwarded_client_address_and_ignores_garbage(owner, patient, client_for, settings):
    settings.SKINPORTAL_TRUSTED_PROXIES = 1
    client = client_for(owner)
    url = reverse("patient-detail", args=[patient.pk])
    good = client.get(url, HTTP_X_FORWARDED_FOR="203.0.113.7")
    bad = client.get(url, HTTP_X_FORWARDED_FOR="<script>not-an-address</script>")
    assert bad.status_code == 200
    assert AuditEvent.objects.get(request_id=good["X-Request-ID"]).ip == "203.0.113.7"
    assert AuditEvent.objects.get(request_id=bad["X-Request-ID"]).ip is None


def test_it_records_an_id_too_large_for_the_database_without_failing(owner, api_for):
    response = api_for(owner).get("/api/v1/classifications/40772130642328330240/")
    assert response.status_code == 404
    event = AuditEvent.objects.get(request_id=response["X-Request-ID"])
    assert event.object_id is None and event.outcome == AuditOutcome.DENIED


def test_it_withholds_the_answer_when_the_event_cannot_be_written(owner, patient, api_for, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("database away")

    monkeypatch.setattr("diagnosis.audit.audit_request_record", broken)
    response = api_for(owner).get(f"/api/v1/patients/{patient.pk}/")
    assert response.status_code == 503 and response.json()["error"]["code"] == "audit_unavailable"
    assert patient.name not in response.content.decode()
