"""Errors, the same everywhere: one JSON envelope for every API failure, and the error pages.

The envelope (used by the API's exception handler, the session and lockout middleware, the
audit trail and the handlers below):

    {"error": {"status": 400, "code": "invalid", "message": "external_id: ...", "fields": {"external_id": ["..."]}}}

`fields` is present only for validation errors.

The handlers: the site's own templates (400/403/404/500.html) for pages, and the envelope for
anything under /api/. Never a stack trace: DEBUG is off in production, and these handlers only
say what happened and, for 500, that the details are in the server log.

A request body Django refuses to read (too large, too many fields or files, a malformed
multipart form, a charset that is no text encoding) is a 400 that says which
(`unreadable_body_message`), on pages and in the API alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.template import loader
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


class UnsupportedCharset(ValueError):
    """The Content-Type names a codec that is no text encoding ('hex', 'rot13', 'bz2_codec')."""


class NulInHeader(ValueError):
    """A request header holds a NUL (RFC 9110 forbids it; PostgreSQL cannot store it)."""


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / 1024 / 1024:.1f} MiB"


def unreadable_body_message(exception: BaseException | None) -> str | None:
    """Why Django refused to read a request's body, in words for its sender; None for other errors."""
    if isinstance(exception, RequestDataTooBig):
        limit = _mib(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        return f"The request body is larger than the {limit} limit (images go in file fields, which have their own)."
    if isinstance(exception, TooManyFieldsSent):
        return f"The form has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields."
    if isinstance(exception, TooManyFilesSent):
        return f"The form has more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES} files."
    if isinstance(exception, MultiPartParserError):
        return f"The multipart form could not be read: {exception}."
    if isinstance(exception, UnsupportedCharset):
        return f"Unsupported charset {str(exception)!r} in the Content-Type header; send UTF-8."
    if isinstance(exception, NulInHeader):
        return f"The {exception} header holds a NUL character."
    return None


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    message = unreadable_body_message(exception)
    if _is_api(request):
        return _json(400, "bad_request", message or "The request could not be understood.")
    if message is None:
        return defaults.bad_request(request, exception)
    return HttpResponseBadRequest(loader.get_template("400.html").render({"message": message}))


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


class MalformedRequestMiddleware:
    """Two requests no view should see, refused with a 400 before anything reads them:
    * a Content-Type charset that is no text encoding: Django accepts any codec Python knows for
      request.encoding, then fails with LookupError (a 500) when the CSRF check or a form decodes
      the body with it;
    * a header holding a NUL: headers reach the database (django-axes stores a failed login's
      User-Agent), and PostgreSQL refuses NUL in text (a DataError 500). Servers and proxies
      usually refuse such a header already; this does not depend on them."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        for key, value in request.META.items():
            if key.startswith("HTTP_") and isinstance(value, str) and "\x00" in value:
                return bad_request(request, NulInHeader(key[5:].replace("_", "-").title()))
        encoding = request.encoding
        if encoding:
            try:
                "".encode(encoding)  # unlike codecs.lookup, refuses bytes-to-bytes codecs
            except (LookupError, UnicodeError):
                return bad_request(request, UnsupportedCharset(encoding))
        return self.get_response(request)
