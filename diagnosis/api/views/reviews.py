"""API views of clinician reviews and the review queue."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from diagnosis import audit, selectors, services
from diagnosis.api import serializers as s
from diagnosis.api.schema import ERROR
from diagnosis.api.views.base import PaginatedListMixin, ScopedApiView, _filters, _input, _referenced


class ReviewListApi(PaginatedListMixin, ScopedApiView):
    @extend_schema(parameters=[s.ReviewFilter], responses={200: s.ReviewOutput(many=True)}, tags=["reviews"])
    def get(self, request: Request) -> Response:
        filters = _filters(s.ReviewFilter, request)
        reviews = selectors.review_list(
            user=request.user,
            image_id=filters.get("image"),
            lesion_id=filters.get("lesion"),
            patient_id=filters.get("patient"),
        )
        return self.paginate(request, reviews, s.ReviewOutput)

    @extend_schema(
        request=s.ReviewCreateInput, responses={201: s.ReviewOutput, 400: ERROR, 403: ERROR}, tags=["reviews"]
    )
    def post(self, request: Request) -> Response:
        data = _input(s.ReviewCreateInput, request)
        image = _referenced(selectors.image_get, "image", user=request.user, image_id=data.pop("image"))
        review = services.reviews.review_create(user=request.user, image=image, **data)
        audit.note(request, review, "review")
        return Response(s.ReviewOutput(review).data, status=status.HTTP_201_CREATED)


class ReviewDetailApi(ScopedApiView):
    @extend_schema(responses={200: s.ReviewOutput, 404: ERROR}, tags=["reviews"])
    def get(self, request: Request, review_id: int) -> Response:
        return Response(s.ReviewOutput(self.url_object("review_id")).data)


class ReviewQueueApi(PaginatedListMixin, ScopedApiView):
    @extend_schema(
        responses={200: s.ReviewQueueOutput(many=True)},
        tags=["triage"],
        description="The review queue: images of your organisations whose latest successful result is flagged "
        "(at or above the threshold) or carries a screening warning, that no clinician has reviewed yet, on "
        "lesions still open; highest malignancy score first. Reviewing an image (POST /api/v1/reviews/) takes it "
        "out of the queue. Decision support, not a diagnosis.",
    )
    def get(self, request: Request) -> Response:
        return self.paginate(request, selectors.review_queue(user=request.user), s.ReviewQueueOutput)
