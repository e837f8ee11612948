"""Bulk import of research images by an operator (`manage.py import_images`): no role check,
patients and lesions created on first sight, files already stored skipped."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from diagnosis import audit, inference
from diagnosis.models import Batch, BatchKind, BodySite, Lesion, LesionImage, Organisation, Patient, Sex
from diagnosis.selectors import import_already_present
from diagnosis.services.patients import patient_check, patient_save_unique
from diagnosis.services.uploads import lesion_image_build, stored_files_removed_on_failure


@dataclass(frozen=True)
class ImportRow:
    """One image of a HAM10000-style metadata CSV, resolved by the command."""

    patient_external_id: str
    lesion_label: str
    body_site: str
    image_name: str
    data: bytes
    sex: str = Sex.UNKNOWN
    captured_at: dt.date | None = None


def import_batch_start(*, organisation: Organisation, name: str, rows: int) -> Batch:
    return Batch.objects.create(organisation=organisation, kind=BatchKind.IMPORT, name=name[:255], received=rows)


@transaction.atomic
def image_import(
    *, organisation: Organisation, row: ImportRow, batch: Batch | None = None, command: str = "import_images"
) -> LesionImage | None:
    """Store one imported image, creating its patient and lesion on first sight (an operator's
    action: no role check). Returns None when this file is already stored (sha256); raises
    ValidationError for a bad row, with nothing stored. `command` names the operator's command in
    the audit trail."""
    if import_already_present(organisation=organisation, data=row.data):
        return None
    body_site = (row.body_site or "").strip().lower() or BodySite.UNKNOWN
    if body_site not in BodySite.values:
        raise ValidationError(f"unknown body site {row.body_site!r}")
    if not row.patient_external_id or not row.lesion_label:
        raise ValidationError("the row has no patient or lesion id")
    _check_row_text(row)
    try:
        item = inference.sanitise_upload(row.data)
    except inference.InvalidImageError as exc:
        raise ValidationError(str(exc)) from exc
    lesion = _lesion_get_or_create(organisation=organisation, row=row, body_site=body_site)
    with stored_files_removed_on_failure() as images:
        images.append(
            lesion_image_build(
                lesion=lesion,
                item=item,
                source=row.data,
                name=row.image_name,
                captured_at=row.captured_at or _file_date(item) or timezone.localdate(),
                user=None,
                batch=batch,
            )
        )
        LesionImage.objects.bulk_create(images)
    (image,) = images
    audit.audit_command_record(
        command=command, action="create", instance=image, organisation_id=organisation.pk
    )
    return image


def _file_date(item: inference.SanitisedImage) -> dt.date | None:
    """The date a file states it was taken (a DICOM file's), unless it is in the future."""
    if item.acquired_on is None or item.acquired_on > timezone.localdate():
        return None
    return item.acquired_on


def _check_row_text(row: ImportRow) -> None:
    """An operator's CSV is checked like a clinician's: no control characters (PostgreSQL cannot
    store a NUL: it was a DataError for the whole command) and the model's lengths."""
    limits = {"patient id": (row.patient_external_id, Patient._meta.get_field("external_id").max_length),
              "lesion id": (row.lesion_label, Lesion._meta.get_field("label").max_length)}
    for what, (value, max_length) in limits.items():
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValidationError(f"the {what} holds a control character")
        if len(value) > max_length:
            raise ValidationError(f"the {what} is longer than {max_length} characters")


def _lesion_get_or_create(*, organisation: Organisation, row: ImportRow, body_site: str) -> Lesion:
    patient = Patient.objects.filter(organisation=organisation, external_id=row.patient_external_id).first()
    if patient is None:
        patient = Patient(
            organisation=organisation,
            external_id=row.patient_external_id,
            name=row.patient_external_id,  # research data is anonymised: the id is the only name
            sex=row.sex if row.sex in Sex.values else Sex.UNKNOWN,
            notes="Created by import_images.",
        )
        patient_check(patient)
        patient_save_unique(patient)
    lesion = Lesion.objects.filter(patient=patient, label=row.lesion_label).order_by("id").first()
    if lesion is None:
        lesion = Lesion(patient=patient, label=row.lesion_label, body_site=body_site)
        lesion.full_clean(exclude=["created_by"])
        lesion.save()
    return lesion


@transaction.atomic
def import_batch_finish(*, batch: Batch, received: int, rejected: list[dict[str, str]]) -> Batch:
    """`received`: rows that were new (stored or refused); rows already imported do not count."""
    batch.received = received
    batch.rejected = rejected
    batch.save(update_fields=["received", "rejected"])
    return batch
