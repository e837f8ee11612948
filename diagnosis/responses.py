"""Responses that pages and the API give alike."""

from __future__ import annotations

import re

from django.http import FileResponse, Http404, HttpResponse, StreamingHttpResponse

from diagnosis import agreement, inference, selectors
from diagnosis.exports import csv_lines
from diagnosis.models import LesionImage


def image_file_response(image: LesionImage) -> FileResponse:
    """The stored pixels of an image the caller was allowed to fetch (no public media URL): the
    upload's own JPEG or PNG data without its metadata."""
    try:
        handle = image.file.open("rb")
    except OSError as exc:
        raise Http404("The image file is missing.") from exc
    return FileResponse(handle, content_type=image.stored_content_type)


class HeatmapUnavailable(Http404):
    """The image has no successful classification with a class activation map."""


def heatmap_response(image: LesionImage, class_code: str | None) -> HttpResponse:
    """PNG of the image with the class activation map of `class_code` (default: the result's top
    class) blended over it, from the image's current successful classification. The class is
    checked by the caller (pages and the API each say 400 their own way)."""
    shown = selectors.image_latest_classification(image=image)
    if shown is None or not shown.succeeded or not shown.activation_map:
        raise HeatmapUnavailable(
            "No heatmap for this image: it has no successful classification with an activation map "
            "(results of older model bundles have none: classify it again)."
        )
    try:
        with image.file.open("rb") as handle:
            data = handle.read()
        png = inference.heatmap_png(data, shown.activation_map, class_code or shown.top_class, shown.field_of_view)
    except (OSError, inference.InvalidImageError) as exc:
        raise Http404("The image file is missing or unreadable.") from exc
    except ValueError as exc:  # a stored map or crop box that cannot be drawn
        raise HeatmapUnavailable("No heatmap for this image: its stored activation map could not be drawn.") from exc
    return HttpResponse(png, content_type="image/png")


def agreement_csv_response(report: agreement.AgreementReport, *, organisation_id: int) -> StreamingHttpResponse:
    """The agreement figures as a CSV download (one row per figure, agreement.CSV_COLUMNS), every
    cell through exports.csv_lines, which writes formula-like text as text."""
    rows = agreement.csv_rows(report, notice=agreement.NOTICE)
    response = StreamingHttpResponse(csv_lines(agreement.CSV_COLUMNS, rows), content_type="text/csv; charset=utf-8")
    version = re.sub(r"[^A-Za-z0-9._-]", "_", report.model_version)[:60] if report.model_version else "all"
    filename = f"agreement-organisation-{organisation_id}-{version}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
