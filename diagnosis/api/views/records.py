"""API views of patients and lesions (closing a lesion, follow-ups due)."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from drf_spectacular.utils import extend_schema
from rest_framework import serializers as drf_serializers
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from diagnosis import audit, selectors, services
from diagnosis.api import serializers as s
from diagnosis.api.parsers import FormParser, JSONParser, MultiPartParser
from diagnosis.api.schema import ERROR
from diagnosis.api.views.base import PaginatedListMixin, ScopedApiView, _filters, _input, _referenced
from diagnosis.models import Organisation
from diagnosis.permissions import NO_PATIENTS_ANYWHERE


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


class LesionReopenApi(ScopedApiView):
    @extend_schema(
        request=None,
        responses={200: s.LesionOutput, 400: ERROR, 403: ERROR, 404: ERROR},
        tags=["lesions"],
        description="Open a closed lesion again. Its outcome is kept: a line with the closing date, outcome and "
        "note is added to the lesion's `notes`. A lesion that is open: 400.",
    )
    def post(self, request: Request, lesion_id: int) -> Response:
        services.patients.lesion_reopen(user=request.user, lesion=self.url_object("lesion_id"))
        return Response(s.LesionOutput(selectors.lesion_get(user=request.user, lesion_id=lesion_id)).data)


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
