"""API views of batches."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from diagnosis import audit, selectors, services
from diagnosis.api import serializers as s
from diagnosis.api.parsers import FormParser, MultiPartParser
from diagnosis.api.schema import ERROR
from diagnosis.api.throttling import ScopedWriteRateThrottle
from diagnosis.api.views.base import PaginatedListMixin, ScopedApiView, _input, _referenced, _waited
from diagnosis.api.views.records import PatientListApi


def batch_data(batch, *, with_images: bool = False) -> dict[str, Any]:
    """What the batch outputs serialise: the batch, its progress and (detail) each image's status.
    Results are not here: a client polls this while the batch runs, so it stays one cheap query;
    they are paged at `images_url`."""
    images = selectors.batch_image_statuses(batch=batch) if with_images else None
    progress = selectors.batch_progress(batch=batch, images=images)
    data = {
        "id": batch.pk,
        "organisation_id": batch.organisation_id,
        "kind": batch.kind,
        "name": batch.name,
        "lesion_id": batch.lesion_id,
        "received": batch.received,
        "status": progress.status,
        "progress": {**asdict(progress), "percent": progress.percent},
        "rejected": batch.rejected or [],
        "created_by": batch.created_by,
        "created_at": batch.created_at,
        "url": reverse("batch-detail", args=[batch.pk]),
        "images_url": f"{reverse('api-image-list')}?batch={batch.pk}",
    }
    if with_images:
        data["images"] = images
    return data


class BatchListApi(PaginatedListMixin, ScopedApiView):
    parser_classes = [MultiPartParser, FormParser]
    throttle_classes = (ScopedWriteRateThrottle,)
    throttle_scope = "uploads"  # POST only, per user

    @extend_schema(responses={200: s.BatchOutput(many=True)}, tags=["batches"])
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(selectors.batch_list(user=request.user), request, view=self)
        return paginator.get_paginated_response(s.BatchOutput([batch_data(b) for b in page], many=True).data)

    @extend_schema(
        request={"multipart/form-data": s.BatchCreateInput},
        responses={201: s.BatchDetailOutput, 400: ERROR, 403: ERROR, 429: ERROR},
        tags=["batches"],
        description="Upload several images (`images`, repeated) or one ZIP (`archive`, optionally with a CSV "
        "mapping each file to patient external id, lesion label, body site and capture date). Invalid files are "
        "listed in `rejected`; the others are stored and queued. Poll GET /api/v1/batches/{id}/ for progress; "
        "the results are paged at `images_url` (GET /api/v1/images/?batch={id}).",
    )
    def post(self, request: Request) -> Response:
        data = _input(s.BatchCreateInput, request)
        lesion = None
        if data.get("lesion") is not None:
            lesion = _referenced(
                selectors.lesion_get, "lesion", user=request.user, lesion_id=data["lesion"], with_latest_result=False
            )
        organisation = None
        if lesion is None:
            organisation = PatientListApi._organisation(request, data.get("organisation"))
        files = [services.uploads.ImageUpload.from_file(f) for f in data.get("images") or []]
        archive = data.get("archive")
        batch = services.batches.batch_create(
            user=request.user,
            organisation=organisation,
            lesion=lesion,
            files=files,
            archive=archive,
            archive_name=(archive.name or "") if archive is not None else "",
            captured_at=data.get("captured_at"),
        )
        audit.note(request, batch, "batch")
        batch = selectors.batch_get(user=request.user, batch_id=batch.pk)
        return Response(s.BatchDetailOutput(batch_data(batch, with_images=True)).data, status=status.HTTP_201_CREATED)


class BatchDetailApi(ScopedApiView):
    @extend_schema(
        parameters=[s.WaitQuery],
        responses={200: s.BatchDetailOutput, 400: ERROR, 404: ERROR},
        tags=["batches"],
        description="The batch's progress and each image's status. With `wait`, the answer comes as soon as the "
        "batch is finished (or after `wait` seconds, with the progress then).",
    )
    def get(self, request: Request, batch_id: int) -> Response:
        batch = self.url_object("batch_id")
        if _waited(request, lambda: selectors.batch_settled(batch_id=batch.pk)):
            batch = selectors.batch_get(user=request.user, batch_id=batch.pk)  # the state now
        return Response(s.BatchDetailOutput(batch_data(batch, with_images=True)).data)
