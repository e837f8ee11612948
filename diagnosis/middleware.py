"""Request-wide rules of the portal: organisation scoping of URL objects, and the audit trail."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.views import APIView

from diagnosis import audit
from diagnosis.scoping import scope_request
from skinportal.errors import error_response

logger = logging.getLogger(__name__)


class ObjectScopeMiddleware:
    """Pages: fetch every object named in the URL through its scoped selector before the view
    (and its method decorators) run, so another organisation's id is a 404 for every method;
    the view takes the object from here (scoping.url_object).

    API views do the same in ScopedApiView.initial, after DRF has authenticated the token;
    admin pages are for staff only and not organisation-scoped."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func: Any, view_args: Any, view_kwargs: dict) -> None:
        if not request.user.is_authenticated or not view_kwargs:
            return
        match = request.resolver_match
        if match is not None and match.namespace == "admin":
            return
        view_class = getattr(view_func, "cls", None)
        if isinstance(view_class, type) and issubclass(view_class, APIView):
            return
        scope_request(request, user=request.user, url_kwargs=view_kwargs)  # Http404 -> 404 page
        return


class AuditMiddleware:
    """One AuditEvent per request to an audited route (diagnosis/audit.py), and an X-Request-ID
    on every response to tie logs and events together. A write also records a `started` event
    before its view runs, so a request killed mid-way still left a trace.

    Fails closed: when an event cannot be written, the request is not served (503), because
    patient data must not leave, nor change, without a trace."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.request_id = audit.request_id_for(request)
        with audit.request_context(request):
            # Django turns an exception in the view (or a middleware below) into its 500 answer
            # before it gets here, so such a request is recorded as an "error" event.
            response = self.get_response(request)
            try:
                audit.audit_request_record(request=request, response=response)
            except Exception:
                logger.exception("audit event could not be written for %s %s", request.method, request.path)
                response = _audit_unavailable(request)
        response["X-Request-ID"] = request.request_id
        return response

    def process_view(
        self, request: HttpRequest, view_func: Any, view_args: Any, view_kwargs: dict
    ) -> HttpResponse | None:
        if request.method not in audit.WRITE_METHODS:
            return None
        try:
            audit.audit_request_started(request=request, user=_caller(request, view_func))
        except Exception:
            logger.exception("audit event could not be written for %s %s", request.method, request.path)
            return _audit_unavailable(request)  # nothing was done: the view never ran
        return None


def _audit_unavailable(request: HttpRequest) -> HttpResponse:
    message = "The audit trail could not be written; the request was not served."
    if request.path.startswith("/api/"):
        return error_response(status=503, code="audit_unavailable", message=message)
    return HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")


def _caller(request: HttpRequest, view_func: Any) -> Any:
    """Who is calling, as far as is known before the view: the session's user, or for an API view
    the owner of the token it will accept (DRF authenticates only inside the view). Session
    authentication is not re-run here: its user is request.user already, and its CSRF check would
    read the body before the view does."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return user
    view_class = getattr(view_func, "cls", None)
    if not (isinstance(view_class, type) and issubclass(view_class, APIView)):
        return user
    drf_request = Request(request)
    for authenticator_class in view_class.authentication_classes:
        if issubclass(authenticator_class, SessionAuthentication):
            continue
        try:
            found = authenticator_class().authenticate(drf_request)
        except Exception:  # noqa: BLE001 - a bad or undecodable token: the view answers it, and its event says so
            return user
        if found is not None:
            return found[0]
    return user
