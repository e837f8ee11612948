"""Responses that pages and the API give alike."""

from __future__ import annotations

from django.http import FileResponse, Http404

from diagnosis.models import LesionImage


def image_file_response(image: LesionImage) -> FileResponse:
    """The stored pixels of an image the caller was allowed to fetch (no public media URL): the
    upload's own JPEG or PNG data without its metadata."""
    try:
        handle = image.file.open("rb")
    except OSError as exc:
        raise Http404("The image file is missing.") from exc
    return FileResponse(handle, content_type=image.stored_content_type)
