"""Read-only exports (nothing here writes to the database): a patient's record as a ZIP, and the
one CSV writer every CSV the portal sends goes through."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from django.utils import timezone

from diagnosis.models import LesionImage, Patient

EXPORT_FORMAT = 1

# A spreadsheet reads a cell that starts with one of these as a formula (or, tab and CR, as the
# start of one once trimmed): "=HYPERLINK(...)" in a username, "-A1-B1" in a request id.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str | int | float:
    """A value as a CSV cell that no spreadsheet runs: text starting like a formula gets a leading
    apostrophe (OWASP's advice; the spreadsheet shows the text as written). Numbers stay numbers,
    None is empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return value
    text = str(value)
    return f"'{text}" if text.startswith(FORMULA_PREFIXES) else text


class _Echo:
    """A file-like object whose write returns the line, so csv.writer can feed a streaming response."""

    def write(self, value: str) -> str:
        return value


def csv_lines(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    """The lines of a CSV file, header first, every cell through `csv_cell` (stream them)."""
    writer = csv.writer(_Echo())
    yield writer.writerow([csv_cell(name) for name in header])
    for row in rows:
        yield writer.writerow([csv_cell(value) for value in row])


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def patient_export_zip(*, patient: Patient) -> bytes:
    """One patient's whole record as a ZIP: `patient.json` (details, lesions, images with every
    model version's classification and every clinician review) and `images/<image id>.png`
    (the stored, metadata-free pixels). For a referral, a second opinion or the patient's own
    request for their data."""
    lesions = patient.lesions.prefetch_related("images__classifications", "images__reviews__author").order_by("id")
    record: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "exported_at": timezone.now().isoformat(),
        "notice": "SkinPortal is decision support for research and education, not a certified medical device.",
        "patient": {
            "id": patient.pk,
            "external_id": patient.external_id,
            "name": patient.name,
            "date_of_birth": _iso(patient.date_of_birth),
            "sex": patient.sex,
            "notes": patient.notes,
            "organisation": patient.organisation.name,
        },
        "lesions": [],
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
        for lesion in lesions:
            lesion_row: dict[str, Any] = {
                "id": lesion.pk,
                "label": lesion.label,
                "body_site": lesion.body_site,
                "laterality": lesion.laterality,
                "map_view": lesion.map_view,
                "map_x": lesion.map_x,
                "map_y": lesion.map_y,
                "follow_up_on": lesion.follow_up_on.isoformat() if lesion.follow_up_on else None,
                "closed_on": lesion.closed_on.isoformat() if lesion.closed_on else None,
                "outcome": lesion.outcome,
                "outcome_note": lesion.outcome_note,
                "notes": lesion.notes,
                "images": [],
            }
            for image in lesion.images.all():
                member = f"images/{image.pk}.{image.stored_extension}"
                with image.file.open("rb") as handle:
                    archive.writestr(member, handle.read())
                lesion_row["images"].append(_image_record(image, member=member))
            record["lesions"].append(lesion_row)
        archive.writestr("patient.json", json.dumps(record, indent=2, ensure_ascii=False))
    return buffer.getvalue()


def _image_record(image: LesionImage, *, member: str) -> dict[str, Any]:
    """An image in patient.json: its file in the ZIP, every model version's result, every review."""
    return {
        "id": image.pk,
        "file": member,
        "sha256": image.sha256,
        "captured_at": _iso(image.captured_at),
        "uploaded_at": _iso(image.uploaded_at),
        "classifications": [
            {
                "model_version": c.model_version,
                "status": c.status,
                "top_class": c.top_class,
                "probabilities": c.probabilities,
                "malignancy_score": c.malignancy_score,
                "malignant": c.malignant,
                "threshold": c.threshold,
                "error_message": c.error_message,
                "finished_at": _iso(c.finished_at),
            }
            for c in image.classifications.all()
        ],
        "reviews": [
            {
                "diagnosis": r.diagnosis,
                "histopathology_confirmed": r.histopathology_confirmed,
                "comment": r.comment,
                "author": r.author.get_username() if r.author else None,
                "created_at": _iso(r.created_at),
            }
            for r in image.reviews.all()
        ],
    }
