"""API of the lesion outline and the comparison of two visits: GET /api/v1/images/{id}/mask/ and
GET /api/v1/lesions/{id}/compare/?a=&b=."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from diagnosis.api.schema import ERROR
from diagnosis.api.serializers.segmentation import CompareOutput, CompareQuery
from diagnosis.api.views.base import ScopedApiView, _filters
from diagnosis.compare import CompareError, parse_image_id
from diagnosis.outlines import mask_png_response
from diagnosis.selectors.compare import lesion_comparison


class CannotCompare(drf_exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "cannot_compare"


class ImageMaskApi(ScopedApiView):
    @extend_schema(
        responses={(200, "image/png"): OpenApiTypes.BINARY, 404: ERROR},
        tags=["images"],
        description="The lesion's mask from the image's current result: a PNG, 255 for the lesion and 0 elsewhere, "
        "at the size it was measured (the image reduced to at most 1024 pixels on its long side, same aspect). "
        "404 when the result has no outline (results from before outlines were stored: classify again). Found "
        "automatically; it may miss part of the lesion.",
    )
    def get(self, request: Request, image_id: int) -> HttpResponse:
        return mask_png_response(self.url_object("image_id"))


class LesionCompareApi(ScopedApiView):
    @extend_schema(
        parameters=[CompareQuery],
        responses={200: CompareOutput, 400: ERROR, 404: ERROR},
        tags=["lesions"],
        description="Two images of the lesion compared, the earlier first: the time between them, the relative "
        "change in area, largest diameter, asymmetry, border irregularity, solidity, colour count and malignancy "
        "score, the view box that aligns the two lesions for display, and a summary in words. `a` and `b` default "
        "to the lesion's first and latest images; an id that is not an image of this lesion, the same image "
        "twice or a lesion with fewer than two images is a 400 `cannot_compare`. Areas are in mm² when both "
        "images have a scale, else in pixels (`area_in_pixels`), which a different zoom alone changes. A measured "
        "change is decision support, not a diagnosis.",
    )
    def get(self, request: Request, lesion_id: int) -> Response:
        lesion = self.url_object("lesion_id")
        query = _filters(CompareQuery, request)
        try:
            result = lesion_comparison(
                lesion=lesion, a=parse_image_id(query.get("a"), "a"), b=parse_image_id(query.get("b"), "b")
            )
        except CompareError as exc:
            raise CannotCompare(str(exc)) from exc
        return Response(CompareOutput(result, context={"request": request}).data)
