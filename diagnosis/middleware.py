"""Request-wide rules of the portal: organisation scoping of URL objects, and the audit trail."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
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
    """One AuditEvent per request to a patient-data route (diagnosis/audit.py), and an
    X-Request-ID on every response to tie logs and events together.

    Fails closed: when the event cannot be written, the response is withheld (503), because
    patient data must not leave without a trace."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.request_id = audit.request_id_for(request)
        response = self.get_response(request)
        try:
            audit.audit_request_record(request=request, response=response)
        except Exception:
            logger.exception("audit event could not be written for %s %s", request.method, request.path)
            message = "The audit trail could not be written; the request was not served."
            if request.path.startswith("/api/"):
                response = error_response(status=503, code="audit_unavailable", message=message)
            else:
                response = HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")
        response["X-Request-ID"] = request.request_id
        return response
