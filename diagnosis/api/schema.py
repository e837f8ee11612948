"""OpenAPI declarations shared by every API operation: the one error body, and the error responses
each operation can give, so the schema documents every status code a client can receive.

Views declare the errors their own logic raises (`ERROR` for a 400 on a bad reference, a 403 for a
read-only role, ...). `add_error_responses`, a drf-spectacular post-processing hook, adds the ones
that come from the framework around them, which are easy to forget per view:

* 401 on every operation that requires authentication (no or a bad token),
* 400 on every operation that takes query parameters or a request body (validation),
* 404 on every operation with an id in its path (unknown or another organisation's), and on
  paginated lists (a page past the end, or not a number),
* 403 on every authenticated write (a read-only role; a session without its CSRF token),
* 415 on every operation that takes a request body (a content type it does not parse),
* 429 on every operation a throttle applies to.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema_field
from rest_framework import serializers
from rest_framework.permissions import SAFE_METHODS

from diagnosis.api.throttling import ScopedWriteRateThrottle

ERROR_COMPONENT = "Error"

_STATUS_DESCRIPTIONS = {
    400: "Invalid input: `fields` names each invalid field and what is wrong with it.",
    401: "Not authenticated: no credentials, or an unknown or inactive token.",
    403: "Not allowed: a read-only role, or a browser session without its CSRF token.",
    404: "Not found: no such object in your organisations, or no such page of results.",
    415: "Unsupported media type: send the body as one of the content types listed for it.",
    429: "Too many requests: slow down; the Retry-After header says when to try again.",
}


# Field name -> its messages; a nested input's (one file of several) nest as an object instead of a list.
_FIELD_ERRORS_SCHEMA = {"oneOf": [{"type": "array", "items": {}}, {"type": "object"}]}


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": _FIELD_ERRORS_SCHEMA,
        "description": "Field name (or `non_field_errors`) -> its error messages; a nested input's "
        "messages nest the same way (an object in place of the list).",
    }
)
class ErrorFieldsField(serializers.DictField):
    pass


class ErrorDetailSerializer(serializers.Serializer):
    status = serializers.IntegerField(help_text="The HTTP status code, repeated.")
    code = serializers.CharField(help_text="Machine-readable, e.g. invalid, not_found, permission_denied.")
    message = serializers.CharField(help_text="Human-readable; for validation errors, the first one.")
    fields = ErrorFieldsField(required=False, help_text="Validation errors only.")


class ErrorSerializer(serializers.Serializer):
    """{"error": {"status", "code", "message", "fields"?}}: every API error has this body."""

    error = ErrorDetailSerializer()


_GENERIC = "An error, in the API's error format."
ERROR = OpenApiResponse(response=ErrorSerializer, description=_GENERIC)
PAGINATION_PARAMETERS = {"page", "page_size"}


def _error_response(status: int) -> dict[str, Any]:
    return {
        "description": _STATUS_DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}},
    }


def _throttled(callback: Any, method: str) -> bool:
    view_class = getattr(callback, "cls", None)
    throttles = getattr(view_class, "throttle_classes", None) or ()
    if not throttles:
        return False
    # Throttles that only count writes never answer a read with 429.
    return not (method.upper() in SAFE_METHODS and all(issubclass(t, ScopedWriteRateThrottle) for t in throttles))


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular post-processing hook: see the module docstring."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    callbacks = {(path, method.lower()): callback for path, _regex, method, callback in generator.endpoints or ()}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            parameters = operation.get("parameters", [])
            codes: set[int] = set()
            if any(requirement for requirement in operation.get("security", [])):  # [] or [{}]: anonymous
                codes.add(401)
                if method.upper() not in SAFE_METHODS:
                    codes.add(403)
            query = {p.get("name") for p in parameters if p.get("in") == "query"}
            if operation.get("requestBody") or query - PAGINATION_PARAMETERS:
                codes.add(400)
            if any(p.get("in") == "path" for p in parameters) or "page" in query:
                codes.add(404)
            if operation.get("requestBody"):
                codes.add(415)
            if _throttled(callbacks.get((path, method)), method):
                codes.add(429)
            responses = operation["responses"]
            for code in sorted(codes):
                schemas.setdefault(ERROR_COMPONENT, _error_component())
                responses.setdefault(str(code), _error_response(code))
            for code, response in responses.items():  # a view's ERROR: say what this status means
                if response.get("description") == _GENERIC and int(code) in _STATUS_DESCRIPTIONS:
                    response["description"] = _STATUS_DESCRIPTIONS[int(code)]
            operation["responses"] = dict(sorted(responses.items()))
    return result


def _error_component() -> dict[str, Any]:
    """The Error schema, for a schema in which no view named ERROR (drf-spectacular did not emit it)."""
    return {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "status": {"type": "integer"},
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "fields": {"type": "object", "additionalProperties": _FIELD_ERRORS_SCHEMA},
                },
                "required": ["status", "code", "message"],
            }
        },
        "required": ["error"],
    }
