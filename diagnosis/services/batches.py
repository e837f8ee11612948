"""Batches: several files, or a ZIP with an optional CSV saying where each goes, stored as one
Batch with an error per refused file (the valid ones go on).

Each file is checked and stripped of its metadata like a single upload
(diagnosis/services/uploads.py) and shares the request's one decompression budget
(diagnosis/budget.py): over it, the whole batch is refused and nothing of it is stored.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import IO

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from diagnosis import inference
from diagnosis.archives import Member, ZipMembers, csv_rows, parse_date, too_large
from diagnosis.budget import BudgetExceeded, UploadBudget
from diagnosis.models import Batch, BatchKind, BodySite, Lesion, LesionImage, Organisation, Patient
from diagnosis.permissions import require_write
from diagnosis.services.classification import classification_enqueue_on_commit
from diagnosis.services.patients import lesion_create
from diagnosis.services.uploads import (
    ImageUpload,
    charge_file_bytes,
    check_captured_at,
    lesion_image_build,
    stored_files_removed_on_failure,
)


@dataclass(frozen=True)
class _Target:
    lesion: Lesion
    captured_at: dt.date


class _BatchTargets:
    """Where each file goes: its CSV row (patient external id, lesion label, body site, date), or
    the batch's lesion. Lesions named in the CSV are created on first use."""

    def __init__(
        self,
        *,
        user: AbstractBaseUser,
        organisation: Organisation,
        lesion: Lesion | None,
        captured_at: dt.date,
        csv_bytes: bytes | None,
    ) -> None:
        self.user, self.organisation, self.lesion, self.captured_at = user, organisation, lesion, captured_at
        self.rows: dict[str, dict[str, str]] = csv_rows(csv_bytes) if csv_bytes is not None else {}
        self.used: set[str] = set()
        self._lesions: dict[tuple[int, str], Lesion] = {}
        self._patients: dict[str, Patient | None] = {}

    def row_for(self, name: str) -> tuple[str, dict[str, str]] | None:
        if name in self.rows:
            return name, self.rows[name]
        base = name.rsplit("/", 1)[-1]
        if base in self.rows:
            return base, self.rows[base]
        return None

    def seen(self, name: str) -> None:
        """The file is in the batch: its CSV row (if any) is not one "listed but not in the ZIP"."""
        found = self.row_for(name)
        if found is not None:
            self.used.add(found[0])

    def _patient(self, external_id: str) -> Patient | None:
        if external_id not in self._patients:
            self._patients[external_id] = Patient.objects.filter(
                organisation=self.organisation, external_id=external_id
            ).first()
        return self._patients[external_id]

    def target(self, name: str) -> _Target:
        """Raises ValidationError (a message for this file only)."""
        found = self.row_for(name)
        if found is None:
            if self.lesion is None:
                raise ValidationError("not listed in the CSV, and no lesion was chosen for unlisted files")
            return _Target(self.lesion, self.captured_at)
        key, row = found
        self.used.add(key)
        captured_at = (
            parse_date(row["captured_at"], what="capture date") if row.get("captured_at") else self.captured_at
        )
        external_id, label = row.get("patient", ""), row.get("lesion", "")
        if not external_id and not label:
            if self.lesion is None:
                raise ValidationError("the CSV row names no patient and lesion, and no lesion was chosen")
            return _Target(self.lesion, captured_at)
        if external_id:
            patient = self._patient(external_id)
            if patient is None:
                raise ValidationError(f"no patient with external id {external_id!r} in {self.organisation.name}")
        elif self.lesion is not None:
            patient = self.lesion.patient
        else:
            raise ValidationError("the CSV row names a lesion but no patient")
        if not label:
            if self.lesion is not None and self.lesion.patient_id == patient.pk:
                return _Target(self.lesion, captured_at)
            raise ValidationError("the CSV row names a patient but no lesion label")
        return _Target(self._lesion(patient, label, row), captured_at)

    def _lesion(self, patient: Patient, label: str, row: dict[str, str]) -> Lesion:
        body_site = (row.get("body_site") or "").strip().lower() or BodySite.UNKNOWN
        if body_site not in BodySite.values:
            raise ValidationError(f"unknown body site {body_site!r}; use one of {', '.join(BodySite.values)}")
        lesion = self._lesions.get((patient.pk, label))
        if lesion is None:
            lesion = Lesion.objects.filter(patient=patient, label=label).order_by("id").first()
            if lesion is None:
                lesion = lesion_create(user=self.user, patient=patient, body_site=body_site, label=label)
            self._lesions[(patient.pk, label)] = lesion
        return lesion

    def unused_rows(self) -> list[str]:
        return [name for name in self.rows if name not in self.used]


def batch_create(
    *,
    user: AbstractBaseUser,
    organisation: Organisation | None = None,
    lesion: Lesion | None = None,
    files: Sequence[ImageUpload] = (),
    archive: IO[bytes] | None = None,
    archive_name: str = "",
    captured_at: dt.date | None = None,
) -> Batch:
    """Store several images at once as one Batch and queue them for classification.

    `files` are single uploads; `archive` is a ZIP (a binary file object) whose images are read
    one at a time, with an optional CSV (columns: file, patient, lesion, body_site, captured_at)
    saying where each goes; files the CSV does not list go to `lesion`. Each invalid file is
    reported in `batch.rejected` and the valid ones go on; only when no file is valid is nothing
    stored (ValidationError listing every file).

    All or nothing: the batch, its images and the lesions its CSV creates are written in one
    transaction once every file has been checked, and queued SKINPORTAL_MICRO_BATCH at a time
    when it commits. A ZIP bomb, or files that together go over the request's decompression
    budget, refuse the whole batch (ValidationError); a request that fails leaves no batch
    behind, and no file.
    """
    if lesion is not None:
        organisation = lesion.patient.organisation
    if organisation is None:
        raise ValidationError({"organisation": "Say which organisation the images belong to."})
    require_write(user=user, organisation_id=organisation.pk)
    captured_at = check_captured_at(captured_at)
    max_bytes = settings.SKINPORTAL_MAX_UPLOAD_BYTES
    max_files = settings.SKINPORTAL_MAX_FILES_PER_BATCH
    if files and archive is not None:
        raise ValidationError({"archive": "Send either image files or one ZIP archive, not both."})
    budget = UploadBudget.for_request()
    store = partial(
        _batch_store, user=user, organisation=organisation, lesion=lesion, captured_at=captured_at, budget=budget
    )
    if archive is not None:
        with ZipMembers(archive, max_bytes=max_bytes, max_files=max_files, budget=budget) as members:
            return store(
                members=members,
                csv_bytes=members.csv_bytes,
                kind=BatchKind.ARCHIVE,
                name=archive_name or "archive.zip",
                error_field="archive",
            )
    return store(
        members=_file_members(files, max_bytes=max_bytes, max_files=max_files, budget=budget),
        csv_bytes=None,
        kind=BatchKind.FILES,
        name=f"{len(files)} file{'s' if len(files) != 1 else ''}",
        error_field="images",
    )


def _file_members(
    files: Sequence[ImageUpload], *, max_bytes: int, max_files: int, budget: UploadBudget
) -> list[Member]:
    """Single uploads as batch members; one too large is refused alone, the others go on. The
    files' bytes are paid to the budget here, before any is decoded."""
    if not files:
        raise ValidationError({"images": "Choose at least one image file (JPEG or PNG) or a ZIP archive."})
    if len(files) > max_files:
        raise ValidationError({"images": f"At most {max_files} images per batch; you sent {len(files)}."})
    charge_file_bytes(files, budget=budget, max_bytes=max_bytes, field="images", unnamed="a file")
    return [
        Member(f.name or f"file {i + 1}", *((f.data, "") if len(f.data) <= max_bytes else (None, too_large(max_bytes))))
        for i, f in enumerate(files)
    ]


def _batch_store(
    *,
    user: AbstractBaseUser,
    organisation: Organisation,
    lesion: Lesion | None,
    captured_at: dt.date,
    budget: UploadBudget,
    members: Sequence[Member] | ZipMembers,
    csv_bytes: bytes | None,
    kind: str,
    name: str,
    error_field: str,
) -> Batch:
    if csv_bytes is None and lesion is None:
        raise ValidationError(
            {"lesion": "Choose the lesion these images show, or put a CSV in the ZIP saying where each one goes."}
        )
    # One transaction for the whole batch (its rows, and the lesions the CSV creates), entered
    # inside the file cleanup: a refusal or an error rolls the rows back, then deletes the files.
    with stored_files_removed_on_failure() as images, transaction.atomic():
        targets = _BatchTargets(
            user=user, organisation=organisation, lesion=lesion, captured_at=captured_at, csv_bytes=csv_bytes
        )
        try:
            rejected = _batch_members_write(members=members, targets=targets, budget=budget, user=user, images=images)
        except BudgetExceeded as exc:
            raise ValidationError({error_field: f"{exc}."}) from exc
        rejected += [
            {"name": missing, "error": "listed in the CSV but not in the ZIP"} for missing in targets.unused_rows()
        ]
        if not images:
            raise ValidationError(
                {error_field: [f"{r['name']}: {r['error']}." for r in rejected] or ["No image could be stored."]}
            )
        batch = Batch.objects.create(
            organisation=organisation,
            kind=kind,
            name=name[:255],
            lesion=lesion,
            received=len(members),
            created_by=user,
            rejected=rejected,
        )
        for image in images:
            image.batch = batch
        LesionImage.objects.bulk_create(images)  # one INSERT for the batch
        classification_enqueue_on_commit(image_ids=[image.pk for image in images])  # sent in micro-batches
    return batch


def _batch_members_write(
    *,
    members: Sequence[Member] | ZipMembers,
    targets: _BatchTargets,
    budget: UploadBudget,
    user: AbstractBaseUser,
    images: list[LesionImage],
) -> list[dict[str, str]]:
    """Check each member and write the file of each valid one, its row built (not saved) into
    `images`: one member's bytes in memory at a time. Returns the refused files with the reason.
    Raises BudgetExceeded when the members go over the request's budget."""
    rejected: list[dict[str, str]] = []
    for member in members:
        try:
            target, item = _batch_member_check(member, targets, budget=budget)
        except ValidationError as exc:
            rejected.append({"name": member.name, "error": "; ".join(exc.messages)})
            continue
        images.append(
            lesion_image_build(
                lesion=target.lesion,
                item=item,
                source=member.data,
                name=member.name,
                captured_at=target.captured_at,
                user=user,
                batch=None,
            )
        )
    return rejected


def _batch_member_check(
    member: Member, targets: _BatchTargets, *, budget: UploadBudget
) -> tuple[_Target, inference.SanitisedImage]:
    """Where a file goes and what of it is stored; ValidationError says why it is refused, and
    BudgetExceeded that the whole batch is. The image is checked first: finding the target may
    create the lesion its CSV row names, which a refused file must not leave behind."""
    targets.seen(member.name)  # its CSV row is accounted for, whether the file is stored or refused
    if member.data is None:
        raise ValidationError(member.error)
    try:
        item = inference.sanitise_upload(member.data, budget=budget, name=member.name)
    except inference.InvalidImageError as exc:
        raise ValidationError(str(exc)) from exc
    return targets.target(member.name), item
