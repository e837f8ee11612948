"""How the model does on an organisation's own patients, over the API: the figures of the
organisation's agreement page as JSON, and the same as a CSV download."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from diagnosis import agreement, selectors
from diagnosis.api import serializers as s
from diagnosis.api.reports import FileDownloadNegotiation
from diagnosis.api.schema import ERROR
from diagnosis.api.views import ScopedApiView
from diagnosis.models import Organisation
from diagnosis.responses import agreement_csv_response

AGREEMENT_DESCRIPTION = (
    "the model's top class against the clinicians' reviews of the organisation's images, for all reviews and "
    "separately for histopathology-confirmed ones: the 7x7 confusion matrix (rows: the clinician's class; "
    "columns: the model's), agreement overall and per class, Cohen's kappa (unweighted, with the large-sample "
    "95% interval of Fleiss, Cohen & Everitt), and the malignancy flag's sensitivity and specificity against "
    "histopathology-confirmed malignant (mel, bcc, akiec) and benign diagnoses. Every proportion comes with its "
    "count, total and Wilson 95% interval; under 50 images `small_sample` is true. Each reviewed image counts "
    "once: its latest review against the model's latest succeeded classification of it (of `model_version` when "
    "given; `model_versions` lists the versions with their counts). Reviews saying `other` and images without a "
    "result are counted and left out. Kappa is null with `undefined_reason` where it is not defined. Any member "
    "of the organisation may read it. Agreement with clinicians is not accuracy; decision support, not a diagnosis."
)


def _report(request: Request, organisation: Organisation) -> agreement.AgreementReport:
    versions = selectors.agreement_model_versions(organisation=organisation)
    query = s.AgreementQuery(
        data=request.query_params.dict(), context={"versions": {v.model_version for v in versions}}
    )
    query.is_valid(raise_exception=True)
    model_version = query.validated_data.get("model_version") or None
    return selectors.agreement_report(organisation=organisation, model_version=model_version, versions=versions)


class OrganisationAgreementApi(ScopedApiView):
    @extend_schema(
        operation_id="organisations_agreement_retrieve",
        parameters=[s.AgreementQuery],
        responses={200: s.AgreementOutput, 400: ERROR, 404: ERROR},
        tags=["organisations"],
        description=f"How the model does on this organisation's own patients: {AGREEMENT_DESCRIPTION} The same "
        "figures as CSV: GET /api/v1/organisations/{id}/agreement.csv.",
    )
    def get(self, request: Request, organisation_id: int) -> Response:
        organisation = self.url_object("organisation_id")
        report = _report(request, organisation)
        return Response(s.AgreementOutput(report, context={"organisation": organisation}).data)


class OrganisationAgreementCsvApi(ScopedApiView):
    renderer_classes = (JSONRenderer,)  # the errors; the CSV is written as it is
    content_negotiation_class = FileDownloadNegotiation

    @extend_schema(
        operation_id="organisations_agreement_csv_retrieve",
        parameters=[s.AgreementQuery],
        responses={(200, "text/csv"): OpenApiTypes.STR, 400: ERROR, 404: ERROR},
        tags=["organisations"],
        description="The figures of GET /api/v1/organisations/{id}/agreement/ as a CSV download, one row per "
        "figure: section (all_reviews, confirmed), measure (overall_agreement, cohen_kappa, class_agreement, "
        "confusion, flag_sensitivity, flag_specificity, the counts), model_version, clinician_class, model_class, "
        "count, total, value, ci95_low, ci95_high and a note (kappa not defined, small samples). Text a "
        "spreadsheet would run as a formula is written with a leading apostrophe. Sent as a download "
        "(`Content-Disposition: attachment`) whatever the Accept header; errors are JSON. Decision support, not "
        "a diagnosis.",
    )
    def get(self, request: Request, organisation_id: int) -> StreamingHttpResponse:
        organisation = self.url_object("organisation_id")
        return agreement_csv_response(_report(request, organisation), organisation_id=organisation.pk)
