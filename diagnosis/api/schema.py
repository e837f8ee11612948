"""OpenAPI declarations shared by every API operation: the one error body, the error responses
each operation can give (so the schema documents every status code a client can receive), the
and the operations' descriptions (the views serving the schema and its pages: diagnosis/api/docs.py).

Descriptions are written for integrators. drf-spectacular would fall back on the view's class
docstring, inherited ones included, and so published ScopedApiView's note on how scoping works as
the description of every operation that had none. `PortalAutoSchema` takes an operation's
description from its view's `extend_schema(description=...)`, else from the docstring of the
handler method itself or of the view class itself (so such a docstring is public text: write it
for integrators, as the token views do), else from `OPERATION_DESCRIPTIONS` below (by operation
id); never from an inherited docstring. tests/portal/test_api_docs.py fails for an operation
without a description, or one that repeats a base class's docstring.

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

import inspect
from typing import Any

from drf_spectacular.openapi import AutoSchema
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


# --- Descriptions -----------------------------------------------------------------------------

_PAGED = " Paginated: `page` and `page_size` (at most 100); `next` and `previous` link the pages."
# Operation id -> what an integrator reads, for operations whose view says nothing itself.
OPERATION_DESCRIPTIONS: dict[str, str] = {
    "auth_token_create": "A new API token for a username and password (a JSON body). Wrong passwords count "
    "towards the login lockout, and the endpoint is rate-limited per client address.",
    "model_retrieve": "The model that classifies new images: its version, what it is for, its classes and "
    "malignant group, the clinical context it weighs, its operating point, and its figures on the held-out test "
    "split (image alone, and with the clinical context) with 95% intervals over lesions. 503 when the served "
    "model's manifest cannot be read.",
    "me_retrieve": "Who you are: your user id, username and, for each organisation you belong to, your role "
    "and whether you may write there.",
    "patients_list": "The patients of your organisations, by name. `q` matches the name or the external id; "
    "`organisation` keeps one organisation's." + _PAGED,
    "patients_create": "Add a patient to an organisation where you are a clinician or admin. `organisation` "
    "may be left out when you can write to exactly one. A read-only role gets 403.",
    "patients_retrieve": "One patient of your organisations. Another organisation's patient is a 404, "
    "exactly like one that does not exist.",
    "patients_partial_update": "Change some of a patient's details; fields left out stay as they are "
    "(clinician or admin role).",
    "lesions_list": "The lesions of your organisations' patients, each with its latest image and result; "
    "`patient` keeps one patient's." + _PAGED,
    "lesions_create": "Add a lesion (a body site and a label) to one of your patients (clinician or admin role).",
    "lesions_retrieve": "One lesion, with its latest image and that image's result.",
    "lesions_partial_update": "Change a lesion's label, body site or notes; fields left out stay as they are "
    "(clinician or admin role).",
    "images_list": "The images of your organisations, newest capture first, each with its current "
    "classification; filter by `lesion`, `patient` or `batch`." + _PAGED,
    "classifications_list": "Classifications of your organisations' images, newest first, every model "
    "version's included. Filter by patient, lesion, image, status, capture date, or `flagged` (true: at or "
    "above the model's threshold). Decision support, not a diagnosis." + _PAGED,
    "classifications_retrieve": "One classification: the seven class probabilities, the malignancy score "
    "against the model's threshold, the warnings about the image, the reading in words and the model's "
    "measured performance. Decision support, not a diagnosis.",
    "reviews_list": "Clinicians' reviews of your organisations' images, newest first; filter by `image`, "
    "`lesion` or `patient`." + _PAGED,
    "reviews_create": "Record your own diagnosis of an image (one of the seven classes or `other`), whether "
    "histopathology confirmed it, and a comment; it is kept beside the model's result (clinician or admin role).",
    "reviews_retrieve": "One clinician's review of an image.",
    "batches_list": "Your organisations' batches (uploads of several images, and bulk imports), newest first, "
    "each with its progress." + _PAGED,
}


class PortalAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema with descriptions as the module docstring says (an explicit
    extend_schema(description=...) replaces this method)."""

    def get_description(self) -> str:
        own = vars(self.view.__class__)  # the class's own handler and docstring, never a base class's
        handler = own.get(self.method.lower())
        for doc in (getattr(handler, "__doc__", None), own.get("__doc__")):
            if doc:
                return inspect.cleandoc(doc)
        return OPERATION_DESCRIPTIONS.get(self.get_operation_id(), "")
