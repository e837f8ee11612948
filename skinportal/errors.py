"""Errors, the same everywhere: one JSON envelope for every API failure, and the error pages.

The envelope (used by the API's exception handler, the session and lockout middleware, the
audit trail and the handlers below):

    {"error": {"status": 400, "code": "invalid", "message": "external_id: ...", "fields": {"external_id": ["..."]}}}

`fields` is present only for validation errors.

The handlers: the site's own templates (400/403/404/500.html) for pages, and the envelope for
anything under /api/. Never a stack trace: DEBUG is off in production, and these handlers only
say what happened and, for 500, that the details are in the server log.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults


def error_body(*, status: int, code: str, message: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"status": status, "code": code, "message": message}
    if fields is not None:
        error["fields"] = fields
    return {"error": error}


def error_response(*, status: int, code: str, message: str) -> JsonResponse:
    """The envelope as a response, for code outside DRF (middleware, handlers)."""
    return JsonResponse(error_body(status=status, code=code, message=message), status=status)


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def _json(status: int, code: str, message: str) -> JsonResponse:
    return error_response(status=status, code=code, message=message)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _json(400, "bad_request", "The request could not be understood.")
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _json(403, "permission_denied", str(exception) or "You do not have permission to do this.")
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _json(404, "not_found", "Not found.")
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return _json(500, "server_error", "Something went wrong on our side; the details are in the server log.")
    return defaults.server_error(request)
