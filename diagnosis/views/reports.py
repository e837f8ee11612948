"""PDF reports of a lesion and of one image, as downloads (diagnosis/reports). Any member of the
patient's organisation may read them, the read-only role too; each download is audited."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from diagnosis import reports
from diagnosis.scoping import url_object


@login_required
@require_GET
def lesion_report(request: HttpRequest, lesion_id: int) -> HttpResponse:
    lesion = url_object(request, "lesion_id")
    pdf = reports.lesion_report_pdf(user=request.user, lesion=lesion)
    return reports.pdf_response(pdf, filename=f"lesion-{lesion.pk}-report.pdf")


@login_required
@require_GET
def image_report(request: HttpRequest, image_id: int) -> HttpResponse:
    image = url_object(request, "image_id")
    pdf = reports.image_report_pdf(user=request.user, image=image)
    return reports.pdf_response(pdf, filename=f"image-{image.pk}-report.pdf")
