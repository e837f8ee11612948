"""The OpenAPI schema and its two documentation pages (Swagger UI, ReDoc), as served.

They need a login (a session, or a token for the schema): they hold nothing secret (the source
is public), but they describe this installation's API, version and endpoints to whoever asks,
and every integrator has an account anyway. `?version=` takes only the version served: the value
is written into the schema's Content-Disposition header, so anything else is a 400.

Kept apart from diagnosis/api/schema.py: drf-spectacular's views load the schema class named in
the settings (schema.PortalAutoSchema) when they are defined.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.views.decorators.http import require_safe
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response


def served_versions() -> tuple[str, ...]:
    return (str(settings.SPECTACULAR_SETTINGS["VERSION"]),)


class SchemaApi(SpectacularAPIView):
    """GET /api/v1/schema/ (YAML, or JSON with ?format=json): for signed-in users and token holders.
    Errors are the API's JSON, whatever format was asked for."""

    permission_classes = (IsAuthenticated,)

    @extend_schema(exclude=True)  # as drf-spectacular's own view: the schema does not describe itself
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        version = request.query_params.get("version")
        if version is not None and version not in served_versions():
            # drf-spectacular would write it, as sent, into the Content-Disposition header.
            raise serializers.ValidationError(
                {"version": [f"Unknown API version; this server documents version {served_versions()[0]}."]}
            )
        return super().get(request, *args, **kwargs)

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        # An error body is the API's JSON error, not a YAML or OpenAPI document.
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response


# The documentation pages: GET only (any other method is a 405, signed in or not), and a
# visitor who is not signed in is sent to the login page first.
docs_page = require_safe(login_required(SpectacularSwaggerSplitView.as_view(url_name="api-schema")))
redoc_page = require_safe(login_required(SpectacularRedocView.as_view(url_name="api-schema")))
