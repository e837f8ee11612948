"""API views of images (upload, file, heatmap, classify) and their classifications."""

from __future__ import annotations

from django.http import FileResponse, HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from diagnosis import audit, selectors, services
from diagnosis.api import serializers as s
from diagnosis.api.parsers import FormParser, MultiPartParser
from diagnosis.api.schema import ERROR
from diagnosis.api.throttling import ScopedWriteRateThrottle
from diagnosis.api.views.base import PaginatedListMixin, ScopedApiView, _filters, _input, _referenced, _waited
from diagnosis.responses import heatmap_response, image_file_response


class DuplicateImage(drf_exceptions.APIException):
    """409: the file is byte for byte an image the lesion already has; the message names its URL."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "duplicate_image"

    def __init__(self, exc: services.uploads.DuplicateUpload, request: Request) -> None:
        _, image = exc.existing[0]
        url = request.build_absolute_uri(reverse("api-image-detail", kwargs={"image_id": image.pk}))
        super().__init__(f"This exact file is already image {image.pk} of this lesion "
                         f"(captured {image.captured_at:%Y-%m-%d}): {url}")


class ImageListApi(PaginatedListMixin, ScopedApiView):
    parser_classes = [MultiPartParser, FormParser]
    throttle_classes = (ScopedWriteRateThrottle,)
    throttle_scope = "uploads"  # POST only, per user

    @extend_schema(parameters=[s.ImageFilter], responses={200: s.ImageOutput(many=True)}, tags=["images"])
    def get(self, request: Request) -> Response:
        filters = _filters(s.ImageFilter, request)
        images = selectors.image_list(
            user=request.user,
            lesion_id=filters.get("lesion"),
            patient_id=filters.get("patient"),
            batch_id=filters.get("batch"),
        )
        return self.paginate(request, images.order_by("-captured_at", "-uploaded_at", "-id"), s.ImageOutput)

    @extend_schema(
        request={"multipart/form-data": s.ImageCreateInput},
        responses={201: s.ImageOutput, 400: ERROR, 403: ERROR, 409: ERROR, 429: ERROR},
        tags=["images"],
        description="Upload one image of a lesion. With the embedded (eager) worker the response already "
        "carries the classification; with a separate worker `classification` is null until it finishes: "
        "poll GET /api/v1/images/{id}/. A file byte for byte the same (sha256) as an image the lesion already "
        "has is refused with 409 `duplicate_image`, its message ending with that image's URL.",
    )
    def post(self, request: Request) -> Response:
        data = _input(s.ImageCreateInput, request)
        lesion = _referenced(
            selectors.lesion_get, "lesion", user=request.user, lesion_id=data["lesion"], with_latest_result=False
        )
        files = [services.uploads.ImageUpload.from_file(data["image"])]
        try:
            (image,) = services.uploads.lesion_image_upload(
                user=request.user, lesion=lesion, files=files, captured_at=data.get("captured_at"),
                pixels_per_mm=data.get("pixels_per_mm"),
            )
        except services.uploads.DuplicateUpload as exc:
            raise DuplicateImage(exc, request) from exc
        audit.note(request, image, "image")
        image = selectors.image_get(user=request.user, image_id=image.pk)  # with its classification
        return Response(s.ImageOutput(image, context={"request": request}).data, status=status.HTTP_201_CREATED)


class ImageDetailApi(ScopedApiView):
    @extend_schema(
        parameters=[s.WaitQuery],
        responses={200: s.ImageOutput, 400: ERROR, 404: ERROR},
        tags=["images"],
        description="One image and its current classification. With `wait`, the answer comes as soon as no "
        "classification of the image is queued or running (or after `wait` seconds, with the state then): "
        "one request instead of a polling loop.",
    )
    def get(self, request: Request, image_id: int) -> Response:
        image = self.url_object("image_id")
        if _waited(request, lambda: selectors.image_classification_settled(image_id=image.pk)):
            image = selectors.image_get(user=request.user, image_id=image.pk)  # the state now
        return Response(s.ImageOutput(image, context={"request": request}).data)


class ImageFileApi(ScopedApiView):
    @extend_schema(
        responses={(200, "image/jpeg"): OpenApiTypes.BINARY, (200, "image/png"): OpenApiTypes.BINARY, 404: ERROR},
        tags=["images"],
        description="The stored image: the upload's own JPEG or PNG data without its metadata.",
    )
    def get(self, request: Request, image_id: int) -> FileResponse:
        return image_file_response(self.url_object("image_id"))


class ImageHeatmapApi(ScopedApiView):
    @extend_schema(
        parameters=[s.HeatmapQuery],
        responses={(200, "image/png"): OpenApiTypes.BINARY, 400: ERROR, 404: ERROR},
        tags=["images"],
        description="Where the model saw the evidence: the image with the class activation map of one class "
        "(`class`, default the result's top class) blended over it, as a PNG at most 1024 pixels on the long "
        "side. The map is exact for this model (global average pooling then a dense layer) and shows positive "
        "evidence only, scaled to its own maximum: it says where, not how much. 404 when the image has no "
        "successful classification with a map (results of older model bundles).",
    )
    def get(self, request: Request, image_id: int) -> HttpResponse:
        query = _filters(s.HeatmapQuery, request)
        return heatmap_response(self.url_object("image_id"), query.get("class"))


class ImageClassifyApi(ScopedApiView):
    @extend_schema(
        request=None,
        responses={202: s.ImageOutput, 403: ERROR, 404: ERROR},
        tags=["images"],
        description="Classify the image again with the loaded model (after a failure or a model upgrade).",
    )
    def post(self, request: Request, image_id: int) -> Response:
        image = self.url_object("image_id")
        services.classification.classification_request(user=request.user, image=image)
        image = selectors.image_get(user=request.user, image_id=image_id)
        return Response(s.ImageOutput(image, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)


class ClassificationListApi(PaginatedListMixin, ScopedApiView):
    @extend_schema(
        parameters=[s.ClassificationFilter],
        responses={200: s.ClassificationOutput(many=True), 400: ERROR},
        tags=["classifications"],
    )
    def get(self, request: Request) -> Response:
        filters = _filters(s.ClassificationFilter, request)
        classifications = selectors.classification_list(
            user=request.user,
            patient_id=filters.get("patient"),
            lesion_id=filters.get("lesion"),
            image_id=filters.get("image"),
            flagged=filters.get("flagged"),
            status=filters.get("status"),
            date_from=filters.get("date_from"),
            date_to=filters.get("date_to"),
        )
        return self.paginate(request, classifications, s.ClassificationOutput)


class ClassificationDetailApi(ScopedApiView):
    @extend_schema(responses={200: s.ClassificationOutput, 404: ERROR}, tags=["classifications"])
    def get(self, request: Request, classification_id: int) -> Response:
        classification = self.url_object("classification_id")
        return Response(s.ClassificationOutput(classification, context={"request": request}).data)
