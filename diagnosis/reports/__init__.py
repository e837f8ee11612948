"""PDF reports of a lesion (every visit) and of one image, for the clinic's record or a referral.

Drawn with ReportLab (pure Python, BSD licence, no system libraries): the content is read
through the selectors (content.py), the pictures made small (pictures.py), the PDF drawn
without any query (layout.py, sections.py). Nothing here writes to the database; the views
that serve a report are audited like every patient-data read (diagnosis/audit.py).
"""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpResponse

from diagnosis.models import Lesion, LesionImage
from diagnosis.reports.content import image_report_content, lesion_report_content

PDF_CONTENT_TYPE = "application/pdf"

__all__ = ["PDF_CONTENT_TYPE", "image_report_pdf", "lesion_report_pdf", "pdf_response"]


def lesion_report_pdf(*, user: User, lesion: Lesion) -> bytes:
    """The lesion's report: patient, lesion, then every visit's image, heatmap, result and reviews,
    oldest first. `lesion` as the scoped selector fetched it for `user`."""
    from diagnosis.reports.layout import render_report  # ReportLab loads with the first report, not the URLs

    return render_report(lesion_report_content(user=user, lesion=lesion))


def image_report_pdf(*, user: User, image: LesionImage) -> bytes:
    """One image's report (`image` as selectors.image_get fetched it for `user`)."""
    from diagnosis.reports.layout import render_report

    return render_report(image_report_content(user=user, image=image))


def pdf_response(data: bytes, *, filename: str) -> HttpResponse:
    """A report as a download (pages and API alike). The name carries ids only, never the patient's."""
    response = HttpResponse(data, content_type=PDF_CONTENT_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
