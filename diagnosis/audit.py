"""The audit trail: one append-only AuditEvent per access to patient data, and per denied attempt.

* Pages, API and admin: `AuditMiddleware` records one event per request to a route listed in
  `AUDITED_ROUTES` (whatever the method and the outcome: a 404 for another organisation's id is
  a denied attempt, a 400 a refused one), after the response is built, so the status is known.
* Background tasks: `audit_classifications_record` records one event per image classified;
  `import_images` one per image it imports (`audit_command_record`).
* Sign-in: failed logins and lockouts (signals, connected in apps.py).

Events hold ids, the route's name and the outcome, never patient data (no names, no search
text: the path is not stored because a query string may hold a patient's name).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
    "image-detail": AuditedRoute("image", DETAIL),
    "image-file": AuditedRoute("image", DETAIL),
    "image-heatmap": AuditedRoute("image", DETAIL),
    "image-review": AuditedRoute("image", DETAIL, "review"),
    "image-classify": AuditedRoute("image", DETAIL, "classify"),
    "image-report": AuditedRoute("image", DETAIL, read="export"),
    "batch-list": AuditedRoute("batch", LIST),
    "batch-create": AuditedRoute("batch", FORM, "upload"),
    "batch-detail": AuditedRoute("batch", DETAIL),
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
    "api-image-classify": AuditedRoute("image", DETAIL, "classify"),
    "api-image-report": AuditedRoute("image", DETAIL, read="export"),
    "api-batch-list": AuditedRoute("batch", LIST, "upload"),
    "api-batch-detail": AuditedRoute("batch", DETAIL),
    "api-classification-list": AuditedRoute("classification", LIST),
    "api-classification-detail": AuditedRoute("classification", DETAIL),
    "api-review-list": AuditedRoute("review", LIST, "review"),
    "api-review-detail": AuditedRoute("review", DETAIL),
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
    "patient": Patient,
    "lesion": Lesion,
    "image": LesionImage,
    "classification": Classification,
    "review": ClinicianReview,
    "batch": Batch,
}

MAX_OBJECT_ID = 2**63 - 1  # BigIntegerField
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def request_id_for(request: HttpRequest) -> str:
    """The caller's X-Request-ID when it is a sane token (a proxy's, to correlate logs), else a new one."""
    incoming = request.headers.get("X-Request-ID", "")
    return incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex


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
    route = AUDITED_ROUTES.get(match.url_name)
    if route is None:
        return None
    surface = AuditSurface.API if match.url_name.startswith("api-") else AuditSurface.PAGE
    object_id = match.kwargs.get(f"{route.object_type}_id")
    return surface, match.url_name, route, object_id


def audit_request_record(*, request: HttpRequest, response: HttpResponse) -> AuditEvent | None:
    """Record the one event of an audited request (None for routes that are not audited)."""
    found = _route_for(request)
    if found is None:
        return None
    surface, route_name, route, url_object_id = found
    user = getattr(request, "user", None)
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
    return AuditEvent.objects.create(
        actor_id=user.pk if authenticated else None,
        actor_username=user.get_username() if authenticated else "",
        organisation_id=organisation_id,
        action=_action(route, request.method or ""),
        object_type=object_type,
        object_id=object_id,
        surface=surface,
        route=route_name,
        method=request.method or "",
        status_code=response.status_code,
        outcome=_outcome(response.status_code),
        ip=client_ip(request),
        request_id=getattr(request, "request_id", ""),
    )


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


def audit_sign_in_record(*, request: HttpRequest | None, username: str, action: str) -> AuditEvent:
    """A failed login or a lockout (the username tried is kept: it is not patient data)."""
    path = request.path if request is not None else ""
    surface = (
        AuditSurface.API
        if path.startswith("/api/")
        else AuditSurface.ADMIN
        if path.startswith("/admin/")
        else AuditSurface.PAGE
    )
    return AuditEvent.objects.create(
        actor_username=(username or "")[:150],
        action=action,
        object_type="user",
        surface=surface,
        route=getattr(getattr(request, "resolver_match", None), "url_name", "") or "",
        method=getattr(request, "method", "") or "",
        outcome=AuditOutcome.DENIED,
        ip=client_ip(request) if request is not None else None,
        request_id=getattr(request, "request_id", ""),
    )
