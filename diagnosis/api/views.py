"""REST API views: validate with an input serializer, call a selector or service, answer with an
output serializer. The same selectors scope every read to the caller's organisations, so an
outsider's id is a 404 here exactly as on the pages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions as drf_exceptions
from rest_framework import serializers as drf_serializers
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from diagnosis import audit, selectors, services
from diagnosis.api import serializers as s
from diagnosis.api.pagination import StandardPagination
from diagnosis.api.parsers import FormParser, JSONParser, MultiPartParser
from diagnosis.api.schema import ERROR
from diagnosis.api.throttling import ScopedWriteRateThrottle
from diagnosis.api.waiting import wait_for
from diagnosis.models import Membership, Organisation
from diagnosis.permissions import NO_PATIENTS_ANYWHERE
from diagnosis.responses import heatmap_response, image_file_response
from diagnosis.scoping import scope_request, url_object
from skinportal.accounts import login_authenticate, request_is_cross_site


def _filters(serializer_class: type[drf_serializers.Serializer], request: Request) -> dict[str, Any]:
    """Validated query parameters (a plain dict: DRF reads a missing boolean in a QueryDict as false)."""
    serializer = serializer_class(data=request.query_params.dict())
    serializer.is_valid(raise_exception=True)
    return {key: value for key, value in serializer.validated_data.items() if value is not None}


def _waited(request: Request, settled: Callable[[], bool]) -> bool:
    """Honour the request's `wait` query parameter (s.WaitQuery): when it asks to wait and
    `settled()` is false, block until it is true or the wait runs out. True when it waited, so
    the view fetches its object again and answers with the state then."""
    wait = _filters(s.WaitQuery, request).get("wait")
    if not wait or settled():
        return False
    wait_for(settled, timeout=wait)
    return True


def _input(
    serializer_class: type[drf_serializers.Serializer], request: Request, *, partial: bool = False
) -> dict[str, Any]:
    serializer = serializer_class(data=request.data, partial=partial)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _referenced(getter, field: str, **kwargs: Any):
    """An object named in a request body; unknown or another organisation's: a field error, same text."""
    try:
        return getter(**kwargs)
    except Http404 as exc:
        raise drf_serializers.ValidationError({field: [f"No such {field}."]}) from exc


class ScopedApiView(APIView):
    """Every API view: after DRF authenticated the caller (token or session) and checked the
    permission, every object named in the URL is fetched through its scoped selector, so another
    organisation's id is a 404 whatever the method (a 405 would tell an outsider the id exists)."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        scope_request(request._request, user=request.user, url_kwargs=kwargs)

    def url_object(self, key: str) -> Any:
        """The object the URL names under `key` ("image_id"), fetched once (scoping.url_object)."""
        return url_object(self.request._request, key)


class PaginatedListMixin:
    pagination_class = StandardPagination  # also tells drf-spectacular the list is paginated

    def paginate(self, request: Request, queryset, serializer_class) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(serializer_class(page, many=True, context={"request": request}).data)


# --- Auth ----------------------------------------------------------------------------------


class TokenLimitReached(drf_exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "token_limit"


CROSS_SITE_TOKEN_REQUEST = (
    "A token request from another site's page is refused: send it from a script (no Origin header) or from this site."
)


class AuthTokenApi(ScopedApiView):
    """A new API token for a username and password. JSON bodies only, and never from another
    site's page: a hidden form elsewhere could otherwise make a visitor's browser post wrong
    passwords here and lock a user out (form bodies answer 415, another Origin 403, and neither
    reaches the password check or the lockout count)."""

    authentication_classes: list = []  # no session, so no CSRF check on this one POST: hence the Origin check
    throttle_classes = (ScopedWriteRateThrottle,)
    throttle_scope = "token"  # per client address
    permission_classes = [AllowAny]
    parser_classes = [JSONParser]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        if request_is_cross_site(request._request):  # before the throttle counts it
            raise drf_exceptions.PermissionDenied(CROSS_SITE_TOKEN_REQUEST, code="cross_site")
        super().initial(request, *args, **kwargs)

    @extend_schema(
        request=s.TokenInput,
        responses={200: s.TokenOutput, 400: ERROR, 403: ERROR, 409: ERROR, 429: ERROR},
        tags=["auth"],
        auth=[],
    )
    def post(self, request: Request) -> Response:
        data = _input(s.TokenInput, request)
        # The Django request, so django-axes counts the failure; once the username is locked out for
        # this address, its middleware answers 429 "locked_out" (skinportal.accounts) instead of the 400.
        user = login_authenticate(request._request, username=data["username"], password=data["password"])
        if user is None or not user.is_active:
            raise drf_serializers.ValidationError(
                {"non_field_errors": ["Unable to log in with the username and password given."]}
            )
        try:
            issued = services.accounts.api_token_create(user=user)
        except services.accounts.ApiTokenLimitReached as exc:
            raise TokenLimitReached(exc.messages[0]) from exc
        return Response(s.TokenOutput(issued).data)


class ApiTokenListApi(PaginatedListMixin, ScopedApiView):
    @extend_schema(responses={200: s.ApiTokenOutput(many=True)}, tags=["auth"])
    def get(self, request: Request) -> Response:
        """Your unexpired API tokens (never their keys: only a digest is stored), newest first."""
        return self.paginate(request, selectors.api_token_list(user=request.user), s.ApiTokenOutput)


class ApiTokenDetailApi(ScopedApiView):
    @extend_schema(responses={204: None, 404: ERROR}, tags=["auth"])
    def delete(self, request: Request, token_key: str) -> Response:
        """Revoke one of your tokens (the one this request carries, too): it stops working now."""
        services.accounts.api_token_revoke(user=request.user, token_key=token_key)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ApiTokenRotateApi(ScopedApiView):
    @extend_schema(request=None, responses={200: s.TokenOutput, 404: ERROR}, tags=["auth"])
    def post(self, request: Request, token_key: str) -> Response:
        """Replace one of your tokens by a new key with the same expiry; the old key stops working now."""
        issued = services.accounts.api_token_rotate(user=request.user, token_key=token_key)
        return Response(s.TokenOutput(issued).data)


class MeApi(ScopedApiView):
    @extend_schema(responses={200: s.MeOutput}, tags=["auth"])
    def get(self, request: Request) -> Response:
        memberships = Membership.objects.filter(user=request.user).select_related("organisation")
        return Response(
            s.MeOutput(
                {"id": request.user.pk, "username": request.user.get_username(), "memberships": memberships}
            ).data
        )


# --- Patients ------------------------------------------------------------------------------


class PatientListApi(PaginatedListMixin, ScopedApiView):
    @extend_schema(parameters=[s.PatientFilter], responses={200: s.PatientOutput(many=True)}, tags=["patients"])
    def get(self, request: Request) -> Response:
        filters = _filters(s.PatientFilter, request)
        patients = selectors.patient_list(user=request.user, query=filters.get("q", ""))
        if "organisation" in filters:
            patients = patients.filter(organisation_id=filters["organisation"])
        return self.paginate(request, patients, s.PatientOutput)

    @extend_schema(
        request=s.PatientCreateInput, responses={201: s.PatientOutput, 400: ERROR, 403: ERROR}, tags=["patients"]
    )
    def post(self, request: Request) -> Response:
        data = _input(s.PatientCreateInput, request)
        organisation = self._organisation(request, data.pop("organisation", None))
        patient = services.patients.patient_create(user=request.user, organisation=organisation, **data)
        audit.note(request, patient, "patient")
        return Response(s.PatientOutput(patient).data, status=status.HTTP_201_CREATED)

    @staticmethod
    def _organisation(request: Request, organisation_id: int | None) -> Organisation:
        if organisation_id is not None:
            organisation = selectors.organisation_list_for_user(user=request.user).filter(pk=organisation_id).first()
            if organisation is None:
                raise drf_serializers.ValidationError({"organisation": ["No such organisation."]})
            return organisation  # the service refuses a read-only role with 403
        writable = list(selectors.organisation_list_writable_by_user(user=request.user)[:2])
        if len(writable) == 1:
            return writable[0]
        if not writable:
            raise PermissionDenied(NO_PATIENTS_ANYWHERE)
        raise drf_serializers.ValidationError({"organisation": ["You belong to several organisations: say which one."]})


class PatientDetailApi(ScopedApiView):
    @extend_schema(responses={200: s.PatientOutput, 404: ERROR}, tags=["patients"])
    def get(self, request: Request, patient_id: int) -> Response:
        return Response(s.PatientOutput(self.url_object("patient_id")).data)

    @extend_schema(
        request=s.PatientUpdateInput,
        responses={200: s.PatientOutput, 400: ERROR, 403: ERROR, 404: ERROR},
        tags=["patients"],
    )
    def patch(self, request: Request, patient_id: int) -> Response:
        patient = self.url_object("patient_id")
        data = _input(s.PatientUpdateInput, request, partial=True)
        patient = services.patients.patient_update(user=request.user, patient=patient, data=data)
        return Response(s.PatientOutput(patient).data)


# --- Lesions -------------------------------------------------------------------------------


class LesionListApi(PaginatedListMixin, ScopedApiView):
    @extend_schema(parameters=[s.LesionFilter], responses={200: s.LesionOutput(many=True)}, tags=["lesions"])
    def get(self, request: Request) -> Response:
        filters = _filters(s.LesionFilter, request)
        return self.paginate(
            request, selectors.lesion_list(user=request.user, patient_id=filters.get("patient")), s.LesionOutput
        )

    @extend_schema(
        request=s.LesionCreateInput, responses={201: s.LesionOutput, 400: ERROR, 403: ERROR}, tags=["lesions"]
    )
    def post(self, request: Request) -> Response:
        data = _input(s.LesionCreateInput, request)
        patient = _referenced(selectors.patient_get, "patient", user=request.user, patient_id=data.pop("patient"))
        lesion = services.patients.lesion_create(user=request.user, patient=patient, **data)
        audit.note(request, lesion, "lesion")
        lesion = selectors.lesion_get(user=request.user, lesion_id=lesion.pk)
        return Response(s.LesionOutput(lesion).data, status=status.HTTP_201_CREATED)


class LesionDetailApi(ScopedApiView):
    @extend_schema(responses={200: s.LesionOutput, 404: ERROR}, tags=["lesions"])
    def get(self, request: Request, lesion_id: int) -> Response:
        return Response(s.LesionOutput(self.url_object("lesion_id")).data)

    @extend_schema(
        request=s.LesionUpdateInput,
        responses={200: s.LesionOutput, 400: ERROR, 403: ERROR, 404: ERROR},
        tags=["lesions"],
    )
    def patch(self, request: Request, lesion_id: int) -> Response:
        lesion = self.url_object("lesion_id")
        data = _input(s.LesionUpdateInput, request, partial=True)
        services.patients.lesion_update(user=request.user, lesion=lesion, data=data)
        return Response(s.LesionOutput(selectors.lesion_get(user=request.user, lesion_id=lesion_id)).data)


class LesionCloseApi(ScopedApiView):
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(
        request=s.LesionCloseInput,
        responses={200: s.LesionOutput, 400: ERROR, 403: ERROR, 404: ERROR},
        tags=["lesions"],
        description="Close the lesion with its outcome: `excised` (with histopathology; put its conclusion in "
        "`outcome_note`) or `discharged`. A closed lesion leaves the follow-up lists and the review queue and its "
        "follow-up date is cleared; its images and results stay. A lesion already closed: 400.",
    )
    def post(self, request: Request, lesion_id: int) -> Response:
        data = _input(s.LesionCloseInput, request)
        services.patients.lesion_close(user=request.user, lesion=self.url_object("lesion_id"), **data)
        return Response(s.LesionOutput(selectors.lesion_get(user=request.user, lesion_id=lesion_id)).data)


# --- Images --------------------------------------------------------------------------------


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
                user=request.user, lesion=lesion, files=files, captured_at=data.get("captured_at")
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


# --- Classifications -----------------------------------------------------------------------


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


# --- Reviews -------------------------------------------------------------------------------


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


# --- Batches -------------------------------------------------------------------------------


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
        batch = services.uploads.batch_create(
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


# --- Triage --------------------------------------------------------------------------------


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


class FollowUpListApi(PaginatedListMixin, ScopedApiView):
    @extend_schema(
        parameters=[s.FollowUpFilter],
        responses={200: s.LesionOutput(many=True), 400: ERROR},
        tags=["triage"],
        description="Open lesions of your organisations whose follow-up is overdue (`state=overdue`: the date "
        "has passed) or due (`state=due`: today or within the next 14 days); both without `state`. Earliest date "
        "first. Plan or change a lesion's date with PATCH /api/v1/lesions/{id}/ (`follow_up_on`); close it with "
        "POST /api/v1/lesions/{id}/close/.",
    )
    def get(self, request: Request) -> Response:
        filters = _filters(s.FollowUpFilter, request)
        return self.paginate(request, selectors.follow_up_list(user=request.user, state=filters.get("state")),
                             s.LesionOutput)
