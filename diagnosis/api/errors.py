"""The API's errors in the project's one envelope (skinportal/errors.py: error_body):
services' Django ValidationError and PermissionDenied, Http404 from the scoped selectors, the
bodies Django refuses to read (too large, too many fields or files) and DRF's own exceptions all
map onto the same shape.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler

from skinportal.errors import error_body, error_response, unreadable_body_message


def _first_message(fields: dict[str, Any]) -> str:
    for field, errors in fields.items():
        first = errors[0] if isinstance(errors, list) and errors else errors
        if isinstance(first, dict):  # nested serializer errors
            return f"{field}: {_first_message(first)}"
        prefix = "" if field in ("non_field_errors", "__all__") else f"{field}: "
        return f"{prefix}{first}"
    return "Invalid input."


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    unreadable = unreadable_body_message(exc)  # Django's refusals of a body: a 400 naming the reason
    if unreadable is not None:
        exc = exceptions.ParseError(unreadable)
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)

    response = exception_handler(exc, context)
    if response is None:
        return None  # a real bug: Django's 500 handling and logging take over

    if isinstance(exc, exceptions.ValidationError):
        data = response.data
        fields = data if isinstance(data, dict) else {"non_field_errors": data if isinstance(data, list) else [data]}
        response.data = error_body(
            status=response.status_code, code="invalid", message=_first_message(fields), fields=fields
        )
    else:
        detail = getattr(exc, "detail", None)
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
        message = str(detail) if detail is not None else str(exc)
        response.data = error_body(status=response.status_code, code=str(code), message=message)
    return response


@csrf_exempt  # it changes nothing; without this a POST to an unknown path got Django's HTML CSRF 403
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Unknown paths under /api/v1/ (an id that is not a number, too) answer 404 in the API's format,
    whatever the method, not with an HTML page."""
    return error_response(status=404, code="not_found", message=f"No API endpoint at {request.path}.")
