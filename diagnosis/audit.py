"""The audit trail: one append-only AuditEvent per access to patient data, and per denied attempt.

* Pages, API and admin: `AuditMiddleware` records one event per request to a route listed in
  `AUDITED_ROUTES` or `AUDITED_ORGANISATION_ROUTES` (whatever the method and the outcome: a 404
  for another organisation's id is a denied attempt, a 400 a refused one), after the response is
  built, so the status is known; an exception in the view is a 500 there, so an "error" event.
  A write (POST, PUT, PATCH, DELETE) first records a `started` event, committed before the view
  runs: a worker killed mid-way (timeout, SIGKILL, lost machine) leaves that trace.
* Background tasks: `audit_classifications_record` records one event per image classified;
  `import_images` one per image it imports (`audit_command_record`).
* Sign-in: failed logins and lockouts, filed under every organisation of the username tried
  (signals, connected in apps.py).
* Members: every membership added, changed or removed, whoever did it (page, admin, command),
  in the same transaction as the change (signals).

Events hold ids, the route's name and the outcome, never patient data (no names, no search
text: the path is not stored because a query string may hold a patient's name).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse

from diagnosis.models import (
    AuditEvent,
    AuditOutcome,
    AuditSurface,
    Batch,
    Classification,
    ClinicianReview,
    Lesion,
    LesionImage,
    Membership,
    Organisation,
    Patient,
)
from diagnosis.scoping import ORGANISATION_PATHS
from skinportal import accounts

logger = logging.getLogger(__name__)

# Route kinds: a list route reads many rows, a detail route one object; `post` is what a POST does.
LIST, DETAIL, FORM = "list", "detail", "form"


@dataclass(frozen=True)
class AuditedRoute:
    object_type: str
    kind: str
    post: str = "other"  # the action of a POST on this route
    read: str | None = None  # the action of a GET when it is more than a view (a report is an export)


# Every route that reads or writes patient data, by URL name. A new patient-data route must be
# added here: tests/portal/test_audit.py walks the URL resolver and fails on any route that
# shows patient data without being listed (or explicitly exempted there).
AUDITED_ROUTES: dict[str, AuditedRoute] = {
    # pages
    "dashboard": AuditedRoute("classification", LIST),
    "patient-list": AuditedRoute("patient", LIST),
    "patient-create": AuditedRoute("patient", FORM, "create"),
    "patient-detail": AuditedRoute("patient", DETAIL),
    "patient-edit": AuditedRoute("patient", DETAIL, "update"),
    "patient-delete": AuditedRoute("patient", DETAIL, "delete"),
    "patient-export": AuditedRoute("patient", DETAIL, "export"),
    "lesion-create": AuditedRoute("patient", DETAIL, "create"),
    "lesion-detail": AuditedRoute("lesion", DETAIL),
    "lesion-edit": AuditedRoute("lesion", DETAIL, "update"),
    "lesion-upload": AuditedRoute("lesion", DETAIL, "upload"),
    "lesion-report": AuditedRoute("lesion", DETAIL, read="export"),
    "lesion-follow-up": AuditedRoute("lesion", DETAIL, "follow_up"),
    "lesion-close": AuditedRoute("lesion", DETAIL, "close"),
    "lesion-reopen": AuditedRoute("lesion", DETAIL, "reopen"),
    "lesion-compare": AuditedRoute("lesion", DETAIL),
    "image-detail": AuditedRoute("image", DETAIL),
    "image-file": AuditedRoute("image", DETAIL),
    "image-heatmap": AuditedRoute("image", DETAIL),
    "image-mask": AuditedRoute("image", DETAIL),
    "image-review": AuditedRoute("image", DETAIL, "review"),
    "image-classify": AuditedRoute("image", DETAIL, "classify"),
    "image-report": AuditedRoute("image", DETAIL, read="export"),
    "batch-list": AuditedRoute("batch", LIST),
    "batch-create": AuditedRoute("batch", FORM, "upload"),
    "batch-detail": AuditedRoute("batch", DETAIL),
    # the organisation's figures counted from its reviews and results (no patient named; CSV: export)
    "organisation-agreement": AuditedRoute("organisation", DETAIL),
    # API
    "api-patient-list": AuditedRoute("patient", LIST, "create"),
    "api-patient-detail": AuditedRoute("patient", DETAIL),
    "api-lesion-list": AuditedRoute("lesion", LIST, "create"),
    "api-lesion-detail": AuditedRoute("lesion", DETAIL),
    "api-lesion-report": AuditedRoute("lesion", DETAIL, read="export"),
    "api-image-list": AuditedRoute("image", LIST, "upload"),
    "api-image-detail": AuditedRoute("image", DETAIL),
    "api-image-file": AuditedRoute("image", DETAIL),
    "api-image-heatmap": AuditedRoute("image", DETAIL),
    "api-image-mask": AuditedRoute("image", DETAIL),
    "api-image-classify": AuditedRoute("image", DETAIL, "classify"),
    "api-image-report": AuditedRoute("image", DETAIL, read="export"),
    "api-image-dicom": AuditedRoute("image", DETAIL, read="export"),
    "api-batch-list": AuditedRoute("batch", LIST, "upload"),
    "api-batch-detail": AuditedRoute("batch", DETAIL),
    "api-organisation-agreement": AuditedRoute("organisation", DETAIL),
    "api-organisation-agreement-csv": AuditedRoute("organisation", DETAIL, read="export"),
    "api-classification-list": AuditedRoute("classification", LIST),
    "api-classification-detail": AuditedRoute("classification", DETAIL),
    "api-review-list": AuditedRoute("review", LIST, "review"),
    "api-review-detail": AuditedRoute("review", DETAIL),
    "api-review-queue": AuditedRoute("image", LIST),
    "api-follow-up-list": AuditedRoute("lesion", LIST),
    "api-lesion-close": AuditedRoute("lesion", DETAIL, "close"),
    "api-lesion-reopen": AuditedRoute("lesion", DETAIL, "reopen"),  # after close: the audit walk reopens it
    "api-lesion-compare": AuditedRoute("lesion", DETAIL),
    # FHIR R4 (diagnosis/fhir): every read is an export to another system
    "api-fhir-patient-search": AuditedRoute("patient", LIST, read="export"),
    "api-fhir-patient-read": AuditedRoute("patient", DETAIL, read="export"),
    "api-fhir-patient-everything": AuditedRoute("patient", DETAIL, read="export"),
    "api-fhir-bodystructure-search": AuditedRoute("lesion", LIST, read="export"),
    "api-fhir-bodystructure-read": AuditedRoute("lesion", DETAIL, read="export"),
    "api-fhir-media-search": AuditedRoute("image", LIST, read="export"),
    "api-fhir-media-read": AuditedRoute("image", DETAIL, read="export"),
    "api-fhir-observation-search": AuditedRoute("classification", LIST, read="export"),
    "api-fhir-observation-read": AuditedRoute("classification", DETAIL, read="export"),
    "api-fhir-diagnosticreport-search": AuditedRoute("classification", LIST, read="export"),
    "api-fhir-diagnosticreport-read": AuditedRoute("classification", DETAIL, read="export"),
}

# Organisation pages: who reads or manages the members and the audit log, and every attempt by
# someone who may not (an outsider's 404, a non-admin's 403). Not patient data, so counted apart.
AUDITED_ORGANISATION_ROUTES: dict[str, AuditedRoute] = {
    "organisation-detail": AuditedRoute("organisation", DETAIL, "member_set"),
    "organisation-member-remove": AuditedRoute("membership", DETAIL, "member_remove"),
    "organisation-audit": AuditedRoute("organisation", DETAIL),
}

# Admin: changelist, add, change, delete and history pages of these models.
AUDITED_ADMIN_MODELS: dict[str, str] = {
    "patient": "patient",
    "lesion": "lesion",
    "lesionimage": "image",
    "classification": "classification",
    "clinicianreview": "review",
    "batch": "batch",
}
_ADMIN_ROUTE = re.compile(r"^diagnosis_(?P<model>[a-z]+)_(?P<page>changelist|add|change|delete|history)$")

# Unscoped lookups of a target's organisation, only to file a denied attempt under the
# organisation whose data was aimed at (its admins see it in their log).
_MODELS_BY_TYPE = {
    "organisation": Organisation,
    "membership": Membership,
    "patient": Patient,
    "lesion": Lesion,
    "image": LesionImage,
    "classification": Classification,
    "review": ClinicianReview,
    "batch": Batch,
}

MAX_OBJECT_ID = 2**63 - 1  # BigIntegerField
# A proxy's request id (to correlate logs): letters, digits, dot, dash and underscore, starting
# with a letter or digit, so it can never be read as a spreadsheet formula ("-A1-B1", "=1+1").
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
STARTED = "started"  # the action of the event a write records before its view runs

# The request being served, for events written below the view (membership signals) that have no
# request of their own; set by AuditMiddleware for the length of one request.
_current_request: ContextVar[HttpRequest | None] = ContextVar("audit_current_request", default=None)


@contextmanager
def request_context(request: HttpRequest) -> Iterator[None]:
    token = _current_request.set(request)
    try:
        yield
    finally:
        _current_request.reset(token)


def request_id_for(request: HttpRequest) -> str:
    """The caller's X-Request-ID when it is a sane token, else a new one (never an error: the
    header is the caller's to send, and a bad one must not cost them their answer)."""
    incoming = request.headers.get("X-Request-ID", "")
    return incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex


def client_ip(request: HttpRequest) -> str | None:
    """The client's address by the same rule as the lockout and the throttles (trusted proxies);
    None when it is not an IP address (a forwarded header can hold anything)."""
    address = accounts.client_ip(request)
    try:
        return str(ipaddress.ip_address(address)) if address else None
    except ValueError:
        return None


def note(request: Any, instance: Any, object_type: str) -> None:
    """Tell the audit trail which object a request created (its id is not in the URL)."""
    django_request = getattr(request, "_request", request)  # a DRF Request wraps Django's
    django_request.audit_object = (object_type, instance.pk, _organisation_of(object_type, instance.pk))


def note_action(request: Any, action: str) -> None:
    """Tell the audit trail what a request did when the route's method does not say it (a GET that
    downloads the audit log as CSV is an export, not a view)."""
    getattr(request, "_request", request).audit_action = action


def _organisation_of(object_type: str, pk: Any) -> int | None:
    model = _MODELS_BY_TYPE.get(object_type)
    if model is None:
        return None
    try:
        return model.objects.filter(pk=int(pk)).values_list(ORGANISATION_PATHS[object_type], flat=True).first()
    except (TypeError, ValueError):
        return None


def _outcome(status_code: int) -> str:
    if status_code < 400:
        return AuditOutcome.OK
    if status_code in (401, 403, 404):
        return AuditOutcome.DENIED
    if status_code >= 500:
        return AuditOutcome.ERROR
    return AuditOutcome.REFUSED


def _action(route: AuditedRoute, method: str) -> str:
    kind, post_action = route.kind, route.post
    if method in ("GET", "HEAD", "OPTIONS"):
        return route.read or ("list" if kind == LIST else "view")
    if method == "POST":
        return post_action
    if method in ("PUT", "PATCH"):
        return "update"
    if method == "DELETE":
        return "delete"
    return "other"


def _route_for(request: HttpRequest) -> tuple[str, str, AuditedRoute, str | None] | None:
    """(surface, route name, route, object id in the URL) when the request is audited."""
    match = getattr(request, "resolver_match", None)
    if match is None or not match.url_name:
        return None
    if match.namespace == "admin":
        admin_route = _ADMIN_ROUTE.match(match.url_name)
        if admin_route is None or admin_route["model"] not in AUDITED_ADMIN_MODELS:
            return None
        page = admin_route["page"]
        kind = LIST if page == "changelist" else FORM if page == "add" else DETAIL
        post = {"changelist": "update", "add": "create", "change": "update", "delete": "delete"}.get(page, "other")
        route = AuditedRoute(AUDITED_ADMIN_MODELS[admin_route["model"]], kind, post)
        return AuditSurface.ADMIN, f"admin:{match.url_name}", route, match.kwargs.get("object_id")
    route = AUDITED_ROUTES.get(match.url_name) or AUDITED_ORGANISATION_ROUTES.get(match.url_name)
    if route is None:
        return None
    surface = AuditSurface.API if match.url_name.startswith("api-") else AuditSurface.PAGE
    object_id = match.kwargs.get(f"{route.object_type}_id")
    return surface, match.url_name, route, object_id


def _event_for(request: HttpRequest, user: Any) -> AuditEvent | None:
    """An unsaved event of an audited request, filled in but for its action and outcome (None for
    routes that are not audited)."""
    found = _route_for(request)
    if found is None:
        return None
    surface, route_name, route, url_object_id = found
    authenticated = bool(user is not None and user.is_authenticated)
    object_type, object_id, organisation_id = route.object_type, url_object_id, None
    noted = getattr(request, "audit_object", None)  # set by scoping or by a view that created something
    if noted is not None:
        object_type, object_id, organisation_id = noted
    elif url_object_id is not None:
        organisation_id = _organisation_of(object_type, url_object_id)
    if organisation_id is None and authenticated:
        memberships = list(Membership.objects.filter(user=user).values_list("organisation_id", flat=True)[:2])
        organisation_id = memberships[0] if len(memberships) == 1 else None
    try:
        object_id = int(object_id) if object_id is not None else None
    except (TypeError, ValueError):
        object_id = None
    if object_id is not None and not 0 < object_id <= MAX_OBJECT_ID:
        object_id = None  # a made-up id larger than the column: the route and outcome still say what was tried
    return AuditEvent(
        actor_id=user.pk if authenticated else None,
        actor_username=user.get_username() if authenticated else "",
        organisation_id=organisation_id,
        action=getattr(request, "audit_action", None) or _action(route, request.method or ""),
        object_type=object_type,
        object_id=object_id,
        surface=surface,
        route=route_name,
        method=request.method or "",
        ip=client_ip(request),
        request_id=getattr(request, "request_id", ""),
    )


def audit_request_record(*, request: HttpRequest, response: HttpResponse) -> AuditEvent | None:
    """Record the one event of an audited request (None for routes that are not audited)."""
    event = _event_for(request, getattr(request, "user", None))
    if event is None:
        return None
    event.status_code = response.status_code
    event.outcome = _outcome(response.status_code)
    event.save()
    return event


def audit_request_started(*, request: HttpRequest, user: Any) -> AuditEvent | None:
    """Before a write's view runs: who is about to do what to which object. Committed at once
    (outside any transaction of the view), so a request that never finishes still left a trace;
    its outcome is the request's second event, with the same request id. `user` is the caller as
    far as is known before the view (a session's user, or an API token's owner)."""
    if (request.method or "") not in WRITE_METHODS:
        return None
    event = _event_for(request, user)
    if event is None:
        return None
    event.action = STARTED  # no status, no outcome yet
    event.save()
    return event


def audit_classifications_record(*, classifications: Sequence[Classification], request_id: str = "") -> None:
    """One event per image a background task classified (or failed to)."""
    if not classifications:
        return
    organisations = dict(
        LesionImage.objects.filter(pk__in=[c.image_id for c in classifications]).values_list(
            "pk", "lesion__patient__organisation_id"
        )
    )
    AuditEvent.objects.bulk_create(
        AuditEvent(
            organisation_id=organisations.get(c.image_id),
            action="classify",
            object_type="image",
            object_id=c.image_id,
            surface=AuditSurface.TASK,
            route="diagnosis.classify_images",
            outcome=AuditOutcome.OK if c.succeeded else AuditOutcome.ERROR,
            request_id=request_id[:64],
        )
        for c in classifications
    )


def audit_command_record(*, command: str, action: str, instance: LesionImage, organisation_id: int) -> AuditEvent:
    """Patient data written by an operator's management command (bulk import)."""
    return AuditEvent.objects.create(
        organisation_id=organisation_id,
        action=action,
        object_type="image",
        object_id=instance.pk,
        surface=AuditSurface.COMMAND,
        route=command,
    )


def _route_name(request: HttpRequest | None) -> str:
    """The URL name of what the request reached ("organisation-detail", "admin:login"), if any."""
    match = getattr(request, "resolver_match", None)
    if match is None or not match.url_name:
        return ""
    return f"{match.namespace}:{match.url_name}" if match.namespace else match.url_name


def _surface_of(request: HttpRequest | None) -> str:
    if request is None:
        return AuditSurface.COMMAND
    path = request.path
    if path.startswith("/api/"):
        return AuditSurface.API
    if path.startswith("/admin/"):
        return AuditSurface.ADMIN
    return AuditSurface.PAGE


def audit_sign_in_record(*, request: HttpRequest | None, username: str, action: str) -> list[AuditEvent]:
    """A failed login or a lockout (the username tried is kept: it is not patient data): one event
    per organisation the username belongs to, so each one's admins see the attempts on their
    members; one without an organisation (staff see it in the admin) for an unknown username."""
    username = (username or "")[:150]
    user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: username}).first() if username else None
    organisations: list[int | None] = []
    if user is not None:
        organisations = list(Membership.objects.filter(user=user).values_list("organisation_id", flat=True))
    return AuditEvent.objects.bulk_create(
        AuditEvent(
            actor_username=username,
            organisation_id=organisation_id,
            action=action,
            object_type="user",
            object_id=user.pk if user is not None else None,
            surface=_surface_of(request) if request is not None else AuditSurface.PAGE,
            route=_route_name(request),
            method=getattr(request, "method", "") or "",
            outcome=AuditOutcome.DENIED,
            ip=client_ip(request) if request is not None else None,
            request_id=getattr(request, "request_id", ""),
        )
        for organisation_id in organisations or [None]
    )


def audit_membership_record(*, organisation_id: int, user_id: int, action: str) -> AuditEvent:
    """A member added, given another role, or removed (`action`: "add:<role>", "role:<role>",
    "remove:<role they had>"; object "member", the user's id). Whoever changed it and from where
    come from the request being served; outside a request it was an operator's command."""
    request = _current_request.get()
    actor = getattr(request, "user", None)
    authenticated = bool(actor is not None and actor.is_authenticated)
    return AuditEvent.objects.create(
        actor_id=actor.pk if authenticated else None,
        actor_username=actor.get_username() if authenticated else "",
        organisation_id=organisation_id,
        action=action[:20],
        object_type="member",
        object_id=user_id,
        surface=_surface_of(request),
        route=_route_name(request),
        method=getattr(request, "method", "") or "",
        ip=client_ip(request) if request is not None else None,
        request_id=getattr(request, "request_id", ""),
    )
