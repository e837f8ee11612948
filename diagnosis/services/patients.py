"""Patients and their lesions."""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from diagnosis.models import Laterality, Lesion, LesionImage, LesionOutcome, Organisation, Patient
from diagnosis.permissions import ADMIN_ONLY_DELETE, require_admin, require_write

logger = logging.getLogger(__name__)

PATIENT_FIELDS = ("external_id", "name", "date_of_birth", "sex", "notes")
LESION_FIELDS = ("body_site", "laterality", "label", "notes", "map_view", "map_x", "map_y")


def patient_check(patient: Patient) -> None:
    """Tidy and validate an unsaved or changed patient (also for patients created by an import)."""
    patient.external_id = patient.external_id.strip()
    patient.name = patient.name.strip()
    if patient.date_of_birth and patient.date_of_birth > timezone.localdate():
        raise ValidationError({"date_of_birth": "The date of birth cannot be in the future."})
    clash = Patient.objects.filter(organisation_id=patient.organisation_id, external_id=patient.external_id)
    if patient.pk:
        clash = clash.exclude(pk=patient.pk)
    if patient.external_id and clash.exists():
        raise ValidationError(
            {"external_id": f"A patient with external id {patient.external_id!r} already exists in this organisation."}
        )
    patient.full_clean(exclude=["created_by"], validate_constraints=False)


def patient_save_unique(instance: Patient) -> None:
    """Save, turning a lost race on the unique external id into the same clear error."""
    try:
        with transaction.atomic():
            instance.save()
    except IntegrityError as exc:
        raise ValidationError(
            {"external_id": "A patient with this external id already exists in this organisation."}
        ) from exc


@transaction.atomic
def patient_create(
    *,
    user: AbstractBaseUser,
    organisation: Organisation,
    external_id: str,
    name: str,
    date_of_birth: dt.date | None = None,
    sex: str = "unknown",
    notes: str = "",
) -> Patient:
    require_write(user=user, organisation_id=organisation.pk)
    patient = Patient(
        organisation=organisation,
        external_id=external_id,
        name=name,
        date_of_birth=date_of_birth,
        sex=sex,
        notes=notes,
        created_by=user,
    )
    patient_check(patient)
    patient_save_unique(patient)
    return patient


@transaction.atomic
def patient_update(*, user: AbstractBaseUser, patient: Patient, data: dict[str, Any]) -> Patient:
    """Change any of PATIENT_FIELDS; the organisation never changes."""
    require_write(user=user, organisation_id=patient.organisation_id)
    unknown = set(data) - set(PATIENT_FIELDS)
    if unknown:
        raise ValidationError(f"These patient fields cannot be changed: {', '.join(sorted(unknown))}.")
    # Work on a fresh copy so a rejected change leaves the caller's object untouched.
    updated = Patient.objects.select_for_update().get(pk=patient.pk)
    for field, value in data.items():
        setattr(updated, field, value)
    patient_check(updated)
    patient_save_unique(updated)
    return updated


@transaction.atomic
def patient_delete(*, user: AbstractBaseUser, patient: Patient) -> int:
    """Delete a patient with every lesion, image, classification and review; an organisation
    admin's decision (the page asks for their password first). The image files go once the
    deletion has committed, so a failed transaction leaves them in place. Returns the number of
    images removed."""
    require_admin(user=user, organisation_id=patient.organisation_id, message=ADMIN_ONLY_DELETE)
    images = LesionImage.objects.filter(lesion__patient=patient)
    storage_names = [name for name in images.values_list("file", flat=True) if name]
    patient.delete()
    storage = LesionImage._meta.get_field("file").storage

    def remove_files() -> None:
        for name in storage_names:
            try:
                storage.delete(name)
            except OSError:
                logger.warning("could not delete stored file %s of a deleted patient", name)

    transaction.on_commit(remove_files)
    return len(storage_names)


@transaction.atomic
def lesion_create(
    *,
    user: AbstractBaseUser,
    patient: Patient,
    body_site: str,
    label: str,
    notes: str = "",
    laterality: str = Laterality.UNKNOWN,
    map_view: str = "",
    map_x: float | None = None,
    map_y: float | None = None,
) -> Lesion:
    require_write(user=user, organisation_id=patient.organisation_id)
    lesion = Lesion(
        patient=patient, body_site=body_site, laterality=laterality, label=label.strip(), notes=notes,
        map_view=map_view or "", map_x=map_x, map_y=map_y, created_by=user,
    )
    _map_position_check(lesion)
    lesion.full_clean(exclude=["created_by"])
    lesion.save()
    return lesion


@transaction.atomic
def lesion_update(*, user: AbstractBaseUser, lesion: Lesion, data: dict[str, Any]) -> Lesion:
    """Change any of LESION_FIELDS, and `follow_up_on` (by the rules of lesion_follow_up_set)."""
    require_write(user=user, organisation_id=lesion.patient.organisation_id)
    unknown = set(data) - set(LESION_FIELDS) - {"follow_up_on"}
    if unknown:
        raise ValidationError(f"These lesion fields cannot be changed: {', '.join(sorted(unknown))}.")
    updated = Lesion.objects.select_for_update().get(pk=lesion.pk)
    if "follow_up_on" in data:
        _follow_up_check(updated, data["follow_up_on"])
    for field, value in data.items():
        setattr(updated, field, value.strip() if field == "label" else value)
    updated.map_view = updated.map_view or ""  # null from the API means "not placed", stored blank
    _map_position_check(updated)
    updated.full_clean(exclude=["created_by"])
    updated.save()
    return updated


def _map_position_check(lesion: Lesion) -> None:
    """The body map place is all or nothing: a view with both coordinates, each 0-1 (a change to
    one of them is judged with the others as they stand). NaN and infinities fail the range test."""
    x, y = lesion.map_x, lesion.map_y
    if x is None and y is None:
        if lesion.map_view:
            raise ValidationError({"map_view": "Place the lesion on the drawing, or leave the view empty."})
        return
    if x is None or y is None:
        raise ValidationError({"map_x" if x is None else "map_y": "Give both coordinates, or neither."})
    for field, value in (("map_x", x), ("map_y", y)):
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValidationError({field: "A position on the drawing runs from 0 to 1."})
    if not lesion.map_view:
        raise ValidationError({"map_view": "Say which drawing (front or back) the position is on."})


# --- Follow-up and closing -----------------------------------------------------------------------


def _follow_up_check(lesion: Lesion, follow_up_on: dt.date | None) -> None:
    if follow_up_on is None or follow_up_on == lesion.follow_up_on:
        return  # clearing it, or keeping an overdue date as it is
    if lesion.closed_on is not None:
        raise ValidationError({"follow_up_on": "This lesion is closed: it needs no follow-up."})
    if follow_up_on < timezone.localdate():
        raise ValidationError({"follow_up_on": "The follow-up date cannot be in the past."})


@transaction.atomic
def lesion_follow_up_set(*, user: AbstractBaseUser, lesion: Lesion, follow_up_on: dt.date | None) -> Lesion:
    """Plan when to see the lesion again (None: no follow-up planned). Today or later, and only
    while the lesion is open."""
    return lesion_update(user=user, lesion=lesion, data={"follow_up_on": follow_up_on})


@transaction.atomic
def lesion_close(
    *,
    user: AbstractBaseUser,
    lesion: Lesion,
    outcome: str,
    closed_on: dt.date | None = None,
    outcome_note: str = "",
) -> Lesion:
    """Close a lesion with its outcome (excised with histopathology, or discharged): it leaves the
    follow-up lists and the review queue, and its planned follow-up is cleared."""
    require_write(user=user, organisation_id=lesion.patient.organisation_id)
    if outcome not in LesionOutcome.values:
        raise ValidationError({"outcome": f"Choose one of {', '.join(LesionOutcome.values)}."})
    closed_on = closed_on or timezone.localdate()
    if closed_on > timezone.localdate():
        raise ValidationError({"closed_on": "The closing date cannot be in the future."})
    updated = Lesion.objects.select_for_update().get(pk=lesion.pk)
    if updated.closed_on is not None:
        raise ValidationError(f"This lesion was closed on {updated.closed_on:%Y-%m-%d}.")
    updated.closed_on = closed_on
    updated.outcome = outcome
    updated.outcome_note = outcome_note.strip()
    updated.follow_up_on = None
    updated.full_clean(exclude=["created_by"])
    updated.save()
    return updated


@transaction.atomic
def lesion_reopen(*, user: AbstractBaseUser, lesion: Lesion) -> Lesion:
    """Open a closed lesion again (closed by mistake, or it needs watching after all). The outcome
    is not thrown away: a line with the closing date, outcome and note goes to the end of the
    lesion's notes, and the audit trail has the event."""
    require_write(user=user, organisation_id=lesion.patient.organisation_id)
    updated = Lesion.objects.select_for_update().get(pk=lesion.pk)
    if updated.closed_on is None:
        raise ValidationError("This lesion is open.")
    closed = f"Closed {updated.closed_on:%Y-%m-%d}"
    if updated.outcome:
        closed += f" ({updated.get_outcome_display()})"
    if updated.outcome_note:
        closed += f": {updated.outcome_note}"
    record = f"{closed}; reopened {timezone.localdate():%Y-%m-%d}."
    updated.notes = f"{updated.notes.rstrip()}\n{record}" if updated.notes.strip() else record
    updated.closed_on, updated.outcome, updated.outcome_note = None, "", ""
    updated.full_clean(exclude=["created_by"])
    updated.save()
    return updated
