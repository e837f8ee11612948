"""PDF reports over the API: the same documents as the pages' downloads (diagnosis/reports).

A download answers with the file whatever the Accept header asks for, so a client that sends
`Accept: application/pdf` gets the PDF rather than a 406 from DRF's content negotiation (whose
renderers are JSON); an error is still the JSON envelope.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request

from diagnosis import reports
from diagnosis.api.schema import ERROR
from diagnosis.api.views import ScopedApiView

REPORT_DESCRIPTION = (
    "every visit's image (oldest first) with its heatmap, the seven probabilities, the malignancy score against "
    "the threshold, the reading and its warnings, the model version with its measured performance, clinicians' "
    "reviews, and the note that this is decision support, not a diagnosis. Sent as a download "
    "(`Content-Disposition: attachment`), whatever the Accept header; errors are JSON."
)


class FileDownloadNegotiation(BaseContentNegotiation):
    """The body is the file whatever is asked for; the first renderer (JSON) writes the errors."""

    def select_parser(self, request: Request, parsers: list[Any]) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(
        self, request: Request, renderers: list[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        return renderers[0], renderers[0].media_type


class _ReportApi(ScopedApiView):
    renderer_classes = (JSONRenderer,)
    content_negotiation_class = FileDownloadNegotiation


class LesionReportApi(_ReportApi):
    @extend_schema(
        responses={(200, "application/pdf"): OpenApiTypes.BINARY, 404: ERROR},
        tags=["lesions"],
        description=f"The lesion's PDF report: patient identifier, lesion, body site, then {REPORT_DESCRIPTION}",
    )
    def get(self, request: Request, lesion_id: int) -> HttpResponse:
        lesion = self.url_object("lesion_id")
        pdf = reports.lesion_report_pdf(user=request.user, lesion=lesion)
        return reports.pdf_response(pdf, filename=f"lesion-{lesion.pk}-report.pdf")


class ImageReportApi(_ReportApi):
    @extend_schema(
        responses={(200, "application/pdf"): OpenApiTypes.BINARY, 404: ERROR},
        tags=["images"],
        description=f"One image's PDF report: patient identifier, lesion, body site, then {REPORT_DESCRIPTION}",
    )
    def get(self, request: Request, image_id: int) -> HttpResponse:
        image = self.url_object("image_id")
        pdf = reports.image_report_pdf(user=request.user, image=image)
        return reports.pdf_response(pdf, filename=f"image-{image.pk}-report.pdf")
