"""API view of the served model: GET /api/v1/model/ (the portal's model page, for programs)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from diagnosis import inference
from diagnosis.api import serializers as s
from diagnosis.api.schema import ErrorSerializer
from diagnosis.api.views.base import ScopedApiView


class ModelUnavailable(drf_exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "model_unavailable"


class ServedModelApi(ScopedApiView):
    @extend_schema(
        responses={
            200: s.ServedModelOutput,
            503: OpenApiResponse(ErrorSerializer, description="The served model's manifest cannot be read "
                                 "(the readiness check, /readyz, fails too)."),
        },
        tags=["model"],
    )
    def get(self, request: Request) -> Response:
        model = inference.served_model()
        if model is None:
            detail = inference.model_check().detail or "its manifest could not be read"
            raise ModelUnavailable(f"The served model cannot be described: {detail}.")
        return Response(s.ServedModelOutput(model).data)
