"""Writes. Every change to SkinPortal's data goes through a function here.

Pages, the REST API, Celery tasks and management commands all call these, so the rules
(permissions, validation, what happens after an upload) live in one place. Services raise
django.core.exceptions.ValidationError for bad input and PermissionDenied for a role that may
not write; callers turn those into a form error or a 4xx JSON error.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from diagnosis import audit, inference
from diagnosis.models import (
    DIAGNOSIS_CHOICES,
    Batch,
    BatchKind,
    BodySite,
    Classification,
    ClassificationStatus,
    ClinicianReview,
    Lesion,
    LesionImage,
    Membership,
    Organisation,
    Patient,
    Role,
    Sex,
)
from diagnosis.selectors import user_can_write, user_is_admin

logger = logging.getLogger(__name__)


# --- Permissions ---------------------------------------------------------------------------


def _require_write(*, user: AbstractBaseUser, organisation_id: int) -> None:
    if not user_can_write(user=user, organisation_id=organisation_id):
        raise PermissionDenied("Your role in this organisation is read-only: you cannot make changes.")


# --- Organisations, members, accounts -------------------------------------------------------


@transaction.atomic
def organisation_get_or_create(*, name: str) -> tuple[Organisation, bool]:
    name = name.strip()
    if not name:
        raise ValidationError({"name": "The organisation needs a name."})
    return Organisation.objects.get_or_create(name=name)


@transaction.atomic
def membership_set(*, user: AbstractBaseUser, organisation: Organisation, role: str) -> Membership:
    """Add the user to the organisation, or change their role there."""
    if role not in Role.values:
        raise ValidationError({"role": f"Unknown role {role!r}; choose one of {', '.join(Role.values)}."})
    membership, _ = Membership.objects.update_or_create(user=user, organisation=organisation, defaults={"role": role})
    return membership


def _require_admin(*, user: AbstractBaseUser, organisation_id: int) -> None:
    if not user_is_admin(user=user, organisation_id=organisation_id):
        raise PermissionDenied("Only an owner/admin of this organisation can manage its members.")


def _keep_an_admin(*, organisation: Organisation, leaving: Membership) -> None:
    """An organisation must keep at least one owner/admin, or nobody could manage it again."""
    if leaving.role != Role.ADMIN:
        return
    if not Membership.objects.filter(organisation=organisation, role=Role.ADMIN).exclude(pk=leaving.pk).exists():
        raise ValidationError("The organisation needs at least one owner/admin: appoint another one first.")


@transaction.atomic
def membership_grant(*, actor: AbstractBaseUser, organisation: Organisation, username: str, role: str) -> Membership:
    """An admin adds an existing login to the organisation, or changes their role there."""
    _require_admin(user=actor, organisation_id=organisation.pk)
    user = get_user_model().objects.filter(username=username.strip()).first()
    if user is None:
        raise ValidationError(
            {"username": f"No login named {username.strip()!r}; an operator creates it with createclinician."}
        )
    existing = Membership.objects.filter(user=user, organisation=organisation).first()
    if existing is not None and role != Role.ADMIN:
        _keep_an_admin(organisation=organisation, leaving=existing)
    return membership_set(user=user, organisation=organisation, role=role)


@transaction.atomic
def membership_revoke(*, actor: AbstractBaseUser, membership: Membership) -> None:
    _require_admin(user=actor, organisation_id=membership.organisation_id)
    _keep_an_admin(organisation=membership.organisation, leaving=membership)
    membership.delete()


@dataclass(frozen=True)
class ClinicianAccount:
    user: AbstractBaseUser
    organisation: Organisation
    membership: Membership
    user_created: bool
    organisation_created: bool


@transaction.atomic
def clinician_create(
    *,
    organisation_name: str,
    username: str,
    password: str,
    role: str = Role.CLINICIAN,
    email: str = "",
    validate: bool = True,
) -> ClinicianAccount:
    """Create (or update) a login in an organisation, creating the organisation if needed.

    An existing user keeps their account and other memberships; their password is set to the
    one given and their role in this organisation to `role`.
    """
    username = username.strip()
    if not username:
        raise ValidationError({"username": "A username is required."})
    if role not in Role.values:
        raise ValidationError({"role": f"Unknown role {role!r}; choose one of {', '.join(Role.values)}."})
    organisation, organisation_created = organisation_get_or_create(name=organisation_name)
    user_model = get_user_model()
    user = user_model.objects.filter(username=username).first()
    user_created = user is None
    if user is None:
        user = user_model(username=username, email=email)
    if validate:
        validate_password(password, user=user)
    user.set_password(password)
    if email:
        user.email = email
    user.save()
    membership = membership_set(user=user, organisation=organisation, role=role)
    return ClinicianAccount(user, organisation, membership, user_created, organisation_created)


@transaction.atomic
def api_token_get_or_create(*, user: AbstractBaseUser) -> Token:
    token, _ = Token.objects.get_or_create(user=user)
    return token


# --- Patients ------------------------------------------------------------------------------

PATIENT_FIELDS = ("external_id", "name", "date_of_birth", "sex", "notes")


def _check_patient(patient: Patient) -> None:
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


def _save_unique(instance: Patient) -> None:
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
    _require_write(user=user, organisation_id=organisation.pk)
    patient = Patient(
        organisation=organisation,
        external_id=external_id,
        name=name,
        date_of_birth=date_of_birth,
        sex=sex,
        notes=notes,
        created_by=user,
    )
    _check_patient(patient)
    _save_unique(patient)
    return patient


@transaction.atomic
def patient_update(*, user: AbstractBaseUser, patient: Patient, data: dict[str, Any]) -> Patient:
    """Change any of PATIENT_FIELDS; the organisation never changes."""
    _require_write(user=user, organisation_id=patient.organisation_id)
    unknown = set(data) - set(PATIENT_FIELDS)
    if unknown:
        raise ValidationError(f"These patient fields cannot be changed: {', '.join(sorted(unknown))}.")
    # Work on a fresh copy so a rejected change leaves the caller's object untouched.
    updated = Patient.objects.select_for_update().get(pk=patient.pk)
    for field, value in data.items():
        setattr(updated, field, value)
    _check_patient(updated)
    _save_unique(updated)
    return updated


@transaction.atomic
def patient_delete(*, user: AbstractBaseUser, patient: Patient) -> int:
    """Delete a patient with every lesion, image, classification and review; an organisation
    admin's decision (the page asks for their password first). The image files go once the
    deletion has committed, so a failed transaction leaves them in place. Returns the number of
    images removed."""
    if not user_is_admin(user=user, organisation_id=patient.organisation_id):
        raise PermissionDenied("Only an owner/admin of this organisation can delete a patient.")
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


# --- Lesions -------------------------------------------------------------------------------

LESION_FIELDS = ("body_site", "label", "notes")


@transaction.atomic
def lesion_create(*, user: AbstractBaseUser, patient: Patient, body_site: str, label: str, notes: str = "") -> Lesion:
    _require_write(user=user, organisation_id=patient.organisation_id)
    lesion = Lesion(patient=patient, body_site=body_site, label=label.strip(), notes=notes, created_by=user)
    lesion.full_clean(exclude=["created_by"])
    lesion.save()
    return lesion


@transaction.atomic
def lesion_update(*, user: AbstractBaseUser, lesion: Lesion, data: dict[str, Any]) -> Lesion:
    _require_write(user=user, organisation_id=lesion.patient.organisation_id)
    unknown = set(data) - set(LESION_FIELDS)
    if unknown:
        raise ValidationError(f"These lesion fields cannot be changed: {', '.join(sorted(unknown))}.")
    updated = Lesion.objects.select_for_update().get(pk=lesion.pk)
    for field, value in data.items():
        setattr(updated, field, value.strip() if field == "label" else value)
    updated.full_clean(exclude=["created_by"])
    updated.save()
    return updated


# --- Images --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageUpload:
    """One uploaded file: its name (for error messages only, never stored on disk) and bytes."""

    name: str
    data: bytes


def _human_size(n_bytes: int) -> str:
    return f"{n_bytes / (1024 * 1024):.1f} MiB"


def _prepare_uploads(files: Sequence[ImageUpload]) -> list[inference.SanitisedImage]:
    """Check every file before anything is stored: one bad file rejects the whole upload."""
    max_files = settings.SKINPORTAL_MAX_FILES_PER_UPLOAD
    max_bytes = settings.SKINPORTAL_MAX_UPLOAD_BYTES
    if not files:
        raise ValidationError({"image": "Choose at least one image file (JPEG or PNG)."})
    if len(files) > max_files:
        raise ValidationError({"image": f"At most {max_files} images per upload; you sent {len(files)}."})
    prepared: list[inference.SanitisedImage] = []
    errors: list[str] = []
    for upload in files:
        label = upload.name or "the file"
        if len(upload.data) > max_bytes:
            errors.append(f"{label}: the file is larger than the {_human_size(max_bytes)} limit.")
            continue
        try:
            prepared.append(inference.sanitise_upload(upload.data))
        except inference.InvalidImageError as exc:
            errors.append(f"{label}: {exc}.")
    if errors:
        raise ValidationError({"image": errors})
    return prepared


@transaction.atomic
def lesion_image_upload(
    *,
    user: AbstractBaseUser,
    lesion: Lesion,
    files: Sequence[ImageUpload],
    captured_at: dt.date | None = None,
) -> list[LesionImage]:
    """Store one or more images of a lesion (pixels only) and queue each for classification.

    Classification is sent after the transaction commits; with Celery eager (the embedded
    default) it runs before this returns to the caller's caller, so pages show the result.
    """
    _require_write(user=user, organisation_id=lesion.patient.organisation_id)
    captured_at = captured_at or timezone.localdate()
    if captured_at > timezone.localdate():
        raise ValidationError({"captured_at": "The capture date cannot be in the future."})
    prepared = _prepare_uploads(files)
    images: list[LesionImage] = []
    try:
        for upload, item in zip(files, prepared):
            images.append(
                _new_image(
                    lesion=lesion,
                    item=item,
                    source=upload.data,
                    name=upload.name or "",
                    captured_at=captured_at,
                    user=user,
                    batch=None,
                )
            )
    except Exception:  # a file could not be written: those written so far must go
        for image in images:
            image.file.delete(save=False)
        raise
    _insert_images(images)
    classification_enqueue_on_commit(image_ids=[image.pk for image in images])
    return images


# --- Batches: several files or a ZIP (+ optional CSV), per-file errors -------------------------

BATCH_CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "file": ("file", "filename", "file_name", "image", "image_file"),
    "patient": ("patient", "patient_external_id", "patient_id", "external_id"),
    "lesion": ("lesion", "lesion_label", "label"),
    "body_site": ("body_site", "localization", "site"),
    "captured_at": ("captured_at", "capture_date", "date"),
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass
class _Member:
    name: str
    data: bytes | None  # None: could not be read (error says why)
    error: str = ""


@dataclass(frozen=True)
class _Target:
    lesion: Lesion
    captured_at: dt.date


def _normalise_member_name(name: str) -> str:
    name = name.replace("\\", "/").strip()
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _csv_header_map(fieldnames: Sequence[str]) -> dict[str, str]:
    """Our column name -> the CSV's header, for the aliases in BATCH_CSV_COLUMNS."""
    normalised = {(h or "").strip().lower().replace(" ", "_"): h for h in fieldnames}
    found: dict[str, str] = {}
    for column, aliases in BATCH_CSV_COLUMNS.items():
        for alias in aliases:
            if alias in normalised:
                found[column] = normalised[alias]
                break
    return found


def _parse_date(value: str, *, what: str) -> dt.date:
    try:
        parsed = dt.date.fromisoformat(value.strip())
    except ValueError as exc:
        raise ValidationError(f"{what} {value!r} is not a date (YYYY-MM-DD)") from exc
    if parsed > timezone.localdate():
        raise ValidationError(f"{what} {parsed} is in the future")
    return parsed


class _ZipMembers:
    """The image members of a ZIP, each read (size-capped) only when iterated, and its CSV.

    Only one member is in memory at a time, whatever the archive's size. Use as a context
    manager; the archive stays open while iterating.
    """

    def __init__(self, archive, *, max_bytes: int, max_files: int) -> None:
        import zipfile

        self.max_bytes = max_bytes
        try:
            self.zf = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise ValidationError({"archive": "The file is not a readable ZIP archive."}) from exc
        try:
            self._scan(max_files)
        except Exception:
            self.zf.close()
            raise

    def _scan(self, max_files: int) -> None:
        infos = [
            info
            for info in self.zf.infolist()
            if not info.is_dir()
            and not info.filename.startswith("__MACOSX/")
            and not _normalise_member_name(info.filename).rsplit("/", 1)[-1].startswith(".")
        ]
        csvs = [info for info in infos if info.filename.lower().endswith(".csv")]
        if len(csvs) > 1:
            raise ValidationError({"archive": f"The ZIP holds {len(csvs)} CSV files; put at most one in it."})
        self.images = [info for info in infos if not info.filename.lower().endswith(".csv")]
        if not self.images:
            raise ValidationError({"archive": "The ZIP holds no files besides the CSV."})
        if len(self.images) > max_files:
            raise ValidationError(
                {"archive": f"At most {max_files} images per batch; the ZIP holds {len(self.images)}."}
            )
        self.csv_bytes = None
        if csvs:
            if csvs[0].file_size > 5 * 1024 * 1024:
                raise ValidationError({"archive": "The CSV in the ZIP is larger than 5 MiB."})
            data, error = self._read(csvs[0], 5 * 1024 * 1024)
            if data is None:
                raise ValidationError({"archive": f"The CSV {error}."})
            self.csv_bytes = data

    def _read(self, info, limit: int) -> tuple[bytes | None, str]:
        import zipfile
        import zlib

        try:
            with self.zf.open(info) as fh:
                return fh.read(limit + 1), ""  # the header's size may lie: read one byte past the cap
        except (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, OSError, EOFError) as exc:
            return None, f"could not be extracted ({type(exc).__name__})"

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self):
        for info in self.images:
            name = _normalise_member_name(info.filename)
            if info.file_size > self.max_bytes:
                yield _Member(name, None, f"the file is larger than the {_human_size(self.max_bytes)} limit")
                continue
            data, error = self._read(info, self.max_bytes)
            if data is not None and len(data) > self.max_bytes:
                data, error = None, f"the file is larger than the {_human_size(self.max_bytes)} limit"
            yield _Member(name, data, error)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.zf.close()


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
        self.rows: dict[str, dict[str, str]] = {}
        self.used: set[str] = set()
        self._lesions: dict[tuple[int, str], Lesion] = {}
        self._patients: dict[str, Patient | None] = {}
        if csv_bytes is not None:
            self._parse(csv_bytes)

    def _parse(self, csv_bytes: bytes) -> None:
        import csv
        import io

        try:
            text = csv_bytes.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValidationError({"archive": "The CSV is not UTF-8 text."}) from exc
        reader = csv.DictReader(io.StringIO(text))
        columns = _csv_header_map(reader.fieldnames or [])
        if "file" not in columns:
            raise ValidationError(
                {
                    "archive": "The CSV needs a 'file' column naming each image (and optionally patient, lesion, "
                    "body_site, captured_at)."
                }
            )
        for raw in reader:
            row = {column: (raw.get(header) or "").strip() for column, header in columns.items()}
            name = _normalise_member_name(row["file"])
            if name:
                self.rows[name] = row

    def row_for(self, name: str) -> tuple[str, dict[str, str]] | None:
        if name in self.rows:
            return name, self.rows[name]
        base = name.rsplit("/", 1)[-1]
        if base in self.rows:
            return base, self.rows[base]
        return None

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
            _parse_date(row["captured_at"], what="capture date") if row.get("captured_at") else self.captured_at
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
        body_site = (row.get("body_site") or "").strip().lower() or BodySite.UNKNOWN
        if body_site not in BodySite.values:
            raise ValidationError(f"unknown body site {body_site!r}; use one of {', '.join(BodySite.values)}")
        lesion = self._lesions.get((patient.pk, label))
        if lesion is None:
            lesion = Lesion.objects.filter(patient=patient, label=label).order_by("id").first()
            if lesion is None:
                lesion = lesion_create(user=self.user, patient=patient, body_site=body_site, label=label)
            self._lesions[(patient.pk, label)] = lesion
        return _Target(lesion, captured_at)

    def unused_rows(self) -> list[str]:
        return [name for name in self.rows if name not in self.used]


def _new_image(
    *,
    lesion: Lesion,
    item: inference.SanitisedImage,
    source: bytes,
    name: str,
    captured_at: dt.date,
    user: AbstractBaseUser | None,
    batch: Batch | None,
) -> LesionImage:
    """An unsaved image row whose file is already written (its name generated by upload_to)."""
    image = LesionImage(
        lesion=lesion,
        batch=batch,
        captured_at=captured_at,
        source_name=name[:255],
        source_sha256=hashlib.sha256(source).hexdigest(),
        sha256=hashlib.sha256(item.data).hexdigest(),
        width=item.width,
        height=item.height,
        size_bytes=len(item.data),
        source_format=item.source_format,
        uploaded_by=user,
    )
    image.file.save(f"upload.{item.extension}", ContentFile(item.data), save=False)
    return image


def _insert_images(images: list[LesionImage]) -> list[LesionImage]:
    """One INSERT for the rows of images made by _new_image (a micro-batch costs one round trip,
    not one per image); if it fails, their files are removed. Callers hold a transaction: when
    it rolls back later, they remove the files themselves."""
    try:
        LesionImage.objects.bulk_create(images)
    except Exception:
        for image in images:
            image.file.delete(save=False)
        raise
    return images


def batch_create(
    *,
    user: AbstractBaseUser,
    organisation: Organisation | None = None,
    lesion: Lesion | None = None,
    files: Sequence[ImageUpload] = (),
    archive=None,
    archive_name: str = "",
    captured_at: dt.date | None = None,
) -> Batch:
    """Store several images at once as one Batch and queue them for classification.

    `files` are single uploads; `archive` is a ZIP (a binary file object) whose images are read
    one at a time, with an optional CSV (columns: file, patient, lesion, body_site, captured_at)
    saying where each goes; files the CSV does not list go to `lesion`. Each invalid file is
    reported in `batch.rejected` and the valid ones go on; only when no file is valid is nothing
    stored (ValidationError listing every file).

    Images are committed and queued SKINPORTAL_MICRO_BATCH at a time, so workers start on the
    first ones while the rest are still being stored (the batch page shows them as they come).
    """
    if lesion is not None:
        organisation = lesion.patient.organisation
    if organisation is None:
        raise ValidationError({"organisation": "Say which organisation the images belong to."})
    _require_write(user=user, organisation_id=organisation.pk)
    captured_at = captured_at or timezone.localdate()
    if captured_at > timezone.localdate():
        raise ValidationError({"captured_at": "The capture date cannot be in the future."})
    max_bytes = settings.SKINPORTAL_MAX_UPLOAD_BYTES
    max_files = settings.SKINPORTAL_MAX_FILES_PER_BATCH
    if files and archive is not None:
        raise ValidationError({"archive": "Send either image files or one ZIP archive, not both."})
    if archive is not None:
        with _ZipMembers(archive, max_bytes=max_bytes, max_files=max_files) as members:
            return _batch_store(
                user=user,
                organisation=organisation,
                lesion=lesion,
                captured_at=captured_at,
                members=members,
                csv_bytes=members.csv_bytes,
                kind=BatchKind.ARCHIVE,
                name=archive_name or "archive.zip",
                error_field="archive",
            )
    if not files:
        raise ValidationError({"images": "Choose at least one image file (JPEG or PNG) or a ZIP archive."})
    if len(files) > max_files:
        raise ValidationError({"images": f"At most {max_files} images per batch; you sent {len(files)}."})
    too_large = f"the file is larger than the {_human_size(max_bytes)} limit"
    members = [
        _Member(f.name or f"file {i + 1}", *((f.data, "") if len(f.data) <= max_bytes else (None, too_large)))
        for i, f in enumerate(files)
    ]
    return _batch_store(
        user=user,
        organisation=organisation,
        lesion=lesion,
        captured_at=captured_at,
        members=members,
        csv_bytes=None,
        kind=BatchKind.FILES,
        name=f"{len(files)} file{'s' if len(files) != 1 else ''}",
        error_field="images",
    )


def _batch_store(
    *,
    user: AbstractBaseUser,
    organisation: Organisation,
    lesion: Lesion | None,
    captured_at: dt.date,
    members,
    csv_bytes: bytes | None,
    kind: str,
    name: str,
    error_field: str,
) -> Batch:
    if csv_bytes is None and lesion is None:
        raise ValidationError(
            {"lesion": "Choose the lesion these images show, or put a CSV in the ZIP saying where each one goes."}
        )
    targets = _BatchTargets(
        user=user, organisation=organisation, lesion=lesion, captured_at=captured_at, csv_bytes=csv_bytes
    )
    with transaction.atomic():
        batch = Batch.objects.create(
            organisation=organisation, kind=kind, name=name[:255], lesion=lesion, received=len(members), created_by=user
        )
    rejected: list[dict[str, str]] = []
    pending: list[tuple[_Member, _Target, inference.SanitisedImage]] = []
    stored = 0

    def flush() -> None:
        nonlocal stored
        images: list[LesionImage] = []
        try:
            with transaction.atomic():
                for member, target, item in pending:
                    images.append(
                        _new_image(
                            lesion=target.lesion,
                            item=item,
                            source=member.data,
                            name=member.name,
                            captured_at=target.captured_at,
                            user=user,
                            batch=batch,
                        )
                    )
                _insert_images(images)
                classification_enqueue_on_commit(image_ids=[image.pk for image in images])
        except Exception:
            for image in images:  # the rows rolled back; their files must go too
                image.file.delete(save=False)
            raise
        stored += len(images)
        pending.clear()

    for member in members:
        if member.data is None:
            rejected.append({"name": member.name, "error": member.error})
            continue
        try:
            target = targets.target(member.name)
            item = inference.sanitise_upload(member.data)
        except ValidationError as exc:
            rejected.append({"name": member.name, "error": "; ".join(exc.messages)})
            continue
        except inference.InvalidImageError as exc:
            rejected.append({"name": member.name, "error": str(exc)})
            continue
        pending.append((member, target, item))
        if len(pending) >= settings.SKINPORTAL_MICRO_BATCH:
            flush()
    if pending:
        flush()
    for missing in targets.unused_rows():
        rejected.append({"name": missing, "error": "listed in the CSV but not in the ZIP"})
    if not stored:
        batch.delete()
        raise ValidationError(
            {error_field: [f"{r['name']}: {r['error']}." for r in rejected] or ["No image could be stored."]}
        )
    batch.rejected = rejected
    batch.save(update_fields=["rejected"])
    return batch


# --- Bulk import (operator command) ----------------------------------------------------------


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


def import_already_present(*, organisation: Organisation, data: bytes) -> bool:
    """Re-running an import skips files already stored in this organisation (sha256 of the bytes)."""
    return LesionImage.objects.filter(
        lesion__patient__organisation=organisation, source_sha256=hashlib.sha256(data).hexdigest()
    ).exists()


@transaction.atomic
def image_import(*, organisation: Organisation, row: ImportRow, batch: Batch | None = None) -> LesionImage | None:
    """Store one imported image, creating its patient and lesion on first sight (an operator's
    action: no role check). Returns None when this file is already stored (sha256); raises
    ValidationError for a bad row, with nothing stored."""
    if import_already_present(organisation=organisation, data=row.data):
        return None
    body_site = (row.body_site or "").strip().lower() or BodySite.UNKNOWN
    if body_site not in BodySite.values:
        raise ValidationError(f"unknown body site {row.body_site!r}")
    if not row.patient_external_id or not row.lesion_label:
        raise ValidationError("the row has no patient or lesion id")
    try:
        item = inference.sanitise_upload(row.data)
    except inference.InvalidImageError as exc:
        raise ValidationError(str(exc)) from exc
    patient = Patient.objects.filter(organisation=organisation, external_id=row.patient_external_id).first()
    if patient is None:
        patient = Patient(
            organisation=organisation,
            external_id=row.patient_external_id,
            name=row.patient_external_id,  # research data is anonymised: the id is the only name
            sex=row.sex if row.sex in Sex.values else Sex.UNKNOWN,
            notes="Created by import_images.",
        )
        _check_patient(patient)
        _save_unique(patient)
    lesion = Lesion.objects.filter(patient=patient, label=row.lesion_label).order_by("id").first()
    if lesion is None:
        lesion = Lesion(patient=patient, label=row.lesion_label, body_site=body_site)
        lesion.full_clean(exclude=["created_by"])
        lesion.save()
    (image,) = _insert_images(
        [
            _new_image(
                lesion=lesion,
                item=item,
                source=row.data,
                name=row.image_name,
                captured_at=row.captured_at or timezone.localdate(),
                user=None,
                batch=batch,
            )
        ]
    )
    audit.audit_command_record(
        command="import_images", action="create", instance=image, organisation_id=organisation.pk
    )
    return image


@transaction.atomic
def import_batch_finish(*, batch: Batch, received: int, rejected: list[dict[str, str]]) -> Batch:
    """`received`: rows that were new (stored or refused); rows already imported do not count."""
    batch.received = received
    batch.rejected = rejected
    batch.save(update_fields=["received", "rejected"])
    return batch


# --- Model upgrades ------------------------------------------------------------------------------


def classification_enqueue_missing(
    *, model_version: str, organisation: Organisation | None = None, dry_run: bool = False
) -> int:
    """Queue every image without a successful classification by `model_version` (a model
    upgrade, or earlier failures); earlier versions' results stay as history. Returns the count."""
    from diagnosis.selectors import image_ids_missing_classification

    image_ids = list(image_ids_missing_classification(model_version=model_version, organisation=organisation))
    if not dry_run and image_ids:
        _enqueue_classifications(image_ids)
    return len(image_ids)


# --- Classification ------------------------------------------------------------------------
#
# Delivery rules (docs/deployment.md): a task may be delivered more than once (acks_late: a
# worker that dies mid-task gets its message redelivered), so running one must be idempotent.
# The database keeps exactly one Classification per (image, model version); a delivery first
# *claims* that row: an image that already has a result for the loaded version is skipped, and
# a request delivered more than SKINPORTAL_MAX_DELIVERIES times is stored as failed with the reason.


def _queue_failure_message(exc: Exception) -> str:
    return (
        f"The classification queue is unavailable ({type(exc).__name__}). "
        "Use 'Classify again' once the worker is running."
    )


def _enqueue_classification(image_id: int, *, force: bool = False) -> None:
    """Send the Celery task; a broker outage becomes a failed classification, not a 500."""
    from diagnosis.tasks import classify_image  # tasks import this module

    try:
        if force:
            classify_image.delay(image_id, force=True)
        else:
            classify_image.delay(image_id)
    except Exception as exc:  # kombu raises several unrelated types when the broker is unreachable
        logger.exception("could not queue classification of image %s", image_id)
        classification_fail_unqueued(image_ids=[image_id], message=_queue_failure_message(exc))


def _enqueue_classifications(image_ids: Sequence[int], *, force: bool = False) -> int:
    """Send images in micro-batches of SKINPORTAL_MICRO_BATCH (one task each); returns tasks sent."""
    from diagnosis.tasks import classify_images

    size = settings.SKINPORTAL_MICRO_BATCH
    sent = 0
    for start in range(0, len(image_ids), size):
        chunk = [int(i) for i in image_ids[start : start + size]]
        try:
            classify_images.delay(chunk, force=force)
            sent += 1
        except Exception as exc:
            logger.exception("could not queue classification of images %s", chunk)
            classification_fail_unqueued(image_ids=chunk, message=_queue_failure_message(exc))
    return sent


def classification_enqueue(*, image_ids: Sequence[int], force: bool = False) -> int:
    """Queue these images now, in micro-batches; returns the number of tasks sent."""
    return _enqueue_classifications([int(i) for i in image_ids], force=force)


def classification_enqueue_on_commit(*, image_ids: Sequence[int], force: bool = False) -> None:
    """Queue classification of these images once the current transaction commits."""
    ids = [int(i) for i in image_ids]
    if not ids:
        return
    if len(ids) == 1:
        transaction.on_commit(lambda: _enqueue_classification(ids[0], force=force))
    else:
        transaction.on_commit(lambda: _enqueue_classifications(ids, force=force))


@transaction.atomic
def classification_request(*, user: AbstractBaseUser, image: LesionImage) -> None:
    """Queue a new classification of an image (e.g. after a failure or a model upgrade)."""
    _require_write(user=user, organisation_id=image.lesion.patient.organisation_id)
    classification_enqueue_on_commit(image_ids=[image.pk], force=True)


def classification_fail_unqueued(*, image_ids: Sequence[int], message: str) -> None:
    """Images whose task could not even be sent: say so on each (model version unknown)."""
    for image_id in image_ids:
        _classification_store(
            image_id=image_id,
            model_version=Classification.UNKNOWN_MODEL_VERSION,
            values={"status": ClassificationStatus.FAILED, "error_message": message},
        )


@transaction.atomic
def classification_fail_delivery(*, image_ids: Sequence[int], task_id: str, message: str) -> int:
    """A task gave up (retries exhausted, unexpected error): its claimed rows become failed."""
    return Classification.objects.filter(
        image_id__in=list(image_ids), task_id=task_id, status=ClassificationStatus.RUNNING
    ).update(status=ClassificationStatus.FAILED, error_message=message, finished_at=timezone.now())


@transaction.atomic
def _classification_store(*, image_id: int, model_version: str, values: dict[str, Any]) -> Classification | None:
    """Insert or update the one row for (image, model version)."""
    return _store_row(image_id=image_id, model_version=model_version, values=values)


_FAILURE_CLEARS = {
    "probabilities": {},
    "top_class": "",
    "malignancy_score": None,
    "malignant": False,
    "threshold": None,
}


def _classification_store_many(outcomes: Sequence[tuple[int, str, dict[str, Any]]]) -> list[Classification]:
    """Several results in a handful of queries (a micro-batch), with the same rules as
    _store_row: one row per (image, model version), failures keep no stale numbers, a success
    removes the image's failures that never reached a model. The caller holds the transaction."""
    if not outcomes:
        return []
    alive = set(LesionImage.objects.filter(pk__in={i for i, _, _ in outcomes}).values_list("pk", flat=True))
    outcomes = [o for o in outcomes if o[0] in alive]  # images deleted meanwhile are skipped
    existing = {
        (row.image_id, row.model_version): row
        for row in Classification.objects.select_for_update()
        .filter(image_id__in=alive, model_version__in={v for _, v, _ in outcomes})
        .order_by("image_id", "model_version")
    }
    now = timezone.now()
    result: list[Classification] = []
    updates: dict[tuple[str, ...], list[Classification]] = {}  # rows by the fields they change
    for image_id, model_version, values in outcomes:
        if values.get("status") == ClassificationStatus.FAILED:
            values = {**_FAILURE_CLEARS, **values}
        row = existing.get((image_id, model_version))
        if row is None:  # not claimed (or deleted since): a plain write, racing claims are handled by the constraint
            row = _store_row(image_id=image_id, model_version=model_version, values=values)
            if row is not None:
                result.append(row)
            continue
        for field, value in values.items():
            setattr(row, field, value)
        row.updated_at = now
        updates.setdefault((*values, "updated_at"), []).append(row)
        result.append(row)
    for fields, rows in updates.items():
        _update_each(rows, fields)
    succeeded = [r.image_id for r in result if r.status == ClassificationStatus.SUCCEEDED]
    if succeeded:
        Classification.objects.filter(
            image_id__in=succeeded,
            model_version=Classification.UNKNOWN_MODEL_VERSION,
            status=ClassificationStatus.FAILED,
        ).delete()
    return result


def _update_each(rows: Sequence[models.Model], fields: Sequence[str]) -> None:
    """Write `fields` of each row (each its own values) in one executemany: psycopg pipelines
    it into one round trip, where an UPDATE per row costs one each and Django's bulk_update
    builds a CASE per field that costs more than both. No signals, like QuerySet.update."""
    meta = rows[0]._meta
    columns = [meta.get_field(name) for name in fields]
    quote = connection.ops.quote_name
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {', '.join(f'{quote(c.column)} = %s' for c in columns)} "
        f"WHERE {quote(meta.pk.column)} = %s"
    )
    params = [[c.get_db_prep_save(getattr(row, c.attname), connection) for c in columns] + [row.pk] for row in rows]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def _store_row(*, image_id: int, model_version: str, values: dict[str, Any]) -> Classification | None:
    if not LesionImage.objects.filter(pk=image_id).exists():
        return None  # deleted while the task waited in the queue
    if values.get("status") == ClassificationStatus.FAILED:
        # A failure keeps no stale numbers from an earlier run.
        values = {
            "probabilities": {},
            "top_class": "",
            "malignancy_score": None,
            "malignant": False,
            "threshold": None,
            **values,
        }
    classification, _ = Classification.objects.update_or_create(
        image_id=image_id, model_version=model_version, defaults=values
    )
    if classification.status == ClassificationStatus.SUCCEEDED:
        # An earlier failure that never reached a model is superseded by this result.
        Classification.objects.filter(
            image_id=image_id, model_version=Classification.UNKNOWN_MODEL_VERSION, status=ClassificationStatus.FAILED
        ).delete()
    return classification


@dataclass
class _Claim:
    image: LesionImage
    classification: Classification
    started_at: dt.datetime


@transaction.atomic
def _classification_claim(
    *, image_id: int, model_version: str, request_id: str, force: bool
) -> tuple[Classification | None, bool]:
    """Take the (image, model version) row for this delivery. Returns (row, run_it)."""
    if not LesionImage.objects.filter(pk=image_id).exists():
        return None, False
    return _claim_row(image_id=image_id, model_version=model_version, request_id=request_id, force=force)


@transaction.atomic
def _classification_claim_many(
    *, image_ids: Sequence[int], model_version: str, request_id: str, force: bool
) -> tuple[dict[int, LesionImage], dict[int, tuple[Classification, bool]]]:
    """Claim a micro-batch in one transaction and a handful of queries; rows are created, then
    locked in id order (two workers never deadlock), then decided exactly as _claim_row does."""
    images = LesionImage.objects.in_bulk(sorted({int(i) for i in image_ids}))
    if not images:
        return images, {}
    now = timezone.now()
    Classification.objects.bulk_create(
        [
            Classification(
                image_id=image_id,
                model_version=model_version,
                status=ClassificationStatus.PENDING,
                task_id="",
                attempts=0,
            )
            for image_id in images
        ],
        ignore_conflicts=True,  # rows that exist already stay as they are
    )
    rows = (
        Classification.objects.select_for_update()
        .filter(image_id__in=list(images), model_version=model_version)
        .order_by("image_id")
    )
    claims: dict[int, tuple[Classification, bool]] = {}
    changed: list[Classification] = []
    for row in rows:
        skipped = row.status == ClassificationStatus.SUCCEEDED and not force
        run_it = _claim_decide(row, request_id=request_id, force=force, now=now)
        claims[row.image_id] = (row, run_it)
        if not skipped:
            row.updated_at = now
            changed.append(row)
    claim_fields = ["status", "task_id", "attempts", "started_at", "finished_at", "error_message", "updated_at"]
    groups: dict[str, tuple[tuple, list[int]]] = {}  # rows getting the same values: one UPDATE (usually one in all)
    for row in changed:
        fields = claim_fields + (list(_FAILURE_CLEARS) if row.status == ClassificationStatus.FAILED else [])
        values = tuple((field, getattr(row, field)) for field in fields)
        groups.setdefault(repr(values), (values, []))[1].append(row.pk)
    for values, pks in groups.values():  # plain UPDATEs: Django's bulk_update (CASE WHEN) costs far more
        Classification.objects.filter(pk__in=pks).update(**dict(values))
    return images, claims


def _claim_decide(row: Classification, *, request_id: str, force: bool, now: dt.datetime) -> bool:
    """Update `row` in memory for this delivery; True when the image is to be classified now."""
    if row.status == ClassificationStatus.SUCCEEDED and not force:
        return False  # already classified by this version: a redelivered or repeated request
    if request_id and row.task_id == request_id:
        row.attempts += 1  # the same request again: the worker that had it died
    else:
        row.task_id, row.attempts = request_id, 1
    max_deliveries = settings.SKINPORTAL_MAX_DELIVERIES
    if row.attempts > max_deliveries:
        row.status = ClassificationStatus.FAILED
        row.error_message = (
            f"Gave up after {max_deliveries} attempts: the worker stopped each time while classifying this "
            "image (killed, out of memory or over the time limit). Use 'Classify again' to retry."
        )
        row.finished_at = now
        for field, value in _FAILURE_CLEARS.items():
            setattr(row, field, value)
        return False
    if row.status != ClassificationStatus.SUCCEEDED:  # a re-run keeps the shown result until replaced
        row.status = ClassificationStatus.RUNNING
    row.started_at = now
    return True


def _claim_row(*, image_id: int, model_version: str, request_id: str, force: bool) -> tuple[Classification, bool]:
    row, _ = Classification.objects.select_for_update().get_or_create(
        image_id=image_id,
        model_version=model_version,
        defaults={"status": ClassificationStatus.PENDING, "task_id": "", "attempts": 0},
    )
    run_it = _claim_decide(row, request_id=request_id, force=force, now=timezone.now())
    row.save()
    return row, run_it


def classification_run(*, image_id: int, force: bool = True, request_id: str = "") -> Classification | None:
    """Classify one stored image now and store the outcome; by default a re-run replaces this
    model version's result (see classification_run_many)."""
    results = classification_run_many(image_ids=[image_id], force=force, request_id=request_id)
    return results[0] if results else None


def classification_run_many(
    *, image_ids: Sequence[int], force: bool = False, request_id: str = ""
) -> list[Classification]:
    """Classify stored images with the loaded model (one micro-batch) and store each outcome.

    Never raises for a model or image problem: each failure is stored with a message a clinician
    can read. Database errors propagate (the task retries them). Images deleted meanwhile are
    skipped; an image already classified by this model version is not classified again unless
    `force`. Returns the classifications of the images that still exist. Not atomic as a whole:
    inference runs outside any transaction; only the claims and the writes are.
    """
    request_id = request_id or uuid.uuid4().hex
    started_at = timezone.now()
    try:
        model_version = inference.loaded_model_version()
    except Exception as exc:
        if isinstance(exc, inference.MLError):
            logger.error("model unavailable: %s", exc)
            message = f"The model could not be loaded: {exc}"
        else:
            logger.exception("unexpected error loading the model")
            message = f"The model could not be loaded ({type(exc).__name__}); see the server log."
        stored = []
        for image_id in image_ids:
            row = _classification_store(
                image_id=image_id,
                model_version=Classification.UNKNOWN_MODEL_VERSION,
                values={
                    "status": ClassificationStatus.FAILED,
                    "error_message": message,
                    "started_at": started_at,
                    "finished_at": timezone.now(),
                    "inference_ms": None,
                },
            )
            if row is None:
                logger.info("image %s was deleted before it could be classified", image_id)
            else:
                stored.append(row)
        audit.audit_classifications_record(classifications=stored, request_id=request_id)
        return stored

    results: dict[int, Classification] = {}
    images, claimed = _classification_claim_many(
        image_ids=image_ids, model_version=model_version, request_id=request_id, force=force
    )
    claims: list[_Claim] = []
    for image_id in dict.fromkeys(int(i) for i in image_ids):
        if image_id not in claimed:
            logger.info("image %s was deleted before it could be classified", image_id)
            continue
        row, run_it = claimed[image_id]
        results[image_id] = row
        if run_it:
            claims.append(_Claim(image=images[image_id], classification=row, started_at=timezone.now()))

    outcomes_to_store: list[tuple[int, str, dict[str, Any]]] = []

    def fail(claim: _Claim, message: str) -> None:
        outcomes_to_store.append(
            (
                claim.image.pk,
                model_version,
                {
                    "status": ClassificationStatus.FAILED,
                    "error_message": message,
                    "started_at": claim.started_at,
                    "finished_at": timezone.now(),
                    "inference_ms": None,
                },
            )
        )

    readable: list[tuple[_Claim, bytes]] = []
    for claim in claims:
        try:
            with claim.image.file.open("rb") as fh:
                readable.append((claim, fh.read()))
        except OSError as exc:
            logger.error("image %s: stored file unreadable: %s", claim.image.pk, exc)
            fail(claim, "The stored image file could not be read; upload it again.")

    outcomes: list[inference.PortalPrediction | Exception]
    try:
        if len(readable) == 1:
            try:
                outcomes = [inference.classify_image_bytes(readable[0][1])]
            except inference.InvalidImageError as exc:
                outcomes = [exc]
        else:
            outcomes = list(inference.classify_many([data for _, data in readable]))
    except inference.MLError as exc:
        logger.error("images %s: classification failed: %s", [c.image.pk for c, _ in readable], exc)
        outcomes = [exc] * len(readable)
    except Exception as exc:
        logger.exception("images %s: unexpected classification error", [c.image.pk for c, _ in readable])
        outcomes = [exc] * len(readable)

    for (claim, _), outcome in zip(readable, outcomes):
        if isinstance(outcome, inference.InvalidImageError):
            fail(claim, f"The image could not be analysed: {outcome}.")
        elif isinstance(outcome, inference.MLError):
            fail(claim, f"Classification failed: {outcome}")
        elif isinstance(outcome, Exception):
            fail(claim, f"Classification failed unexpectedly ({type(outcome).__name__}); see the server log.")
        else:
            outcomes_to_store.append(
                (
                    claim.image.pk,
                    outcome.model_version,
                    {
                        "status": ClassificationStatus.SUCCEEDED,
                        "model_variant": outcome.variant,
                        "probabilities": outcome.probabilities,
                        "top_class": outcome.top_class,
                        "malignancy_score": outcome.malignancy_score,
                        "malignant": outcome.malignant,
                        "threshold": outcome.threshold,
                        "error_message": "",
                        "started_at": claim.started_at,
                        "finished_at": timezone.now(),
                        "inference_ms": outcome.inference_ms,
                    },
                )
            )
    with transaction.atomic():  # the results and their audit events: one commit
        written = _classification_store_many(outcomes_to_store)
        audit.audit_classifications_record(classifications=written, request_id=request_id)
    for row in written:
        results[row.image_id] = row
    return list(results.values())


# --- Reviews -------------------------------------------------------------------------------


@transaction.atomic
def review_create(
    *,
    user: AbstractBaseUser,
    image: LesionImage,
    diagnosis: str,
    histopathology_confirmed: bool = False,
    comment: str = "",
) -> ClinicianReview:
    _require_write(user=user, organisation_id=image.lesion.patient.organisation_id)
    valid = {code for code, _ in DIAGNOSIS_CHOICES}
    if diagnosis not in valid:
        raise ValidationError({"diagnosis": f"Choose one of {', '.join(sorted(valid))}."})
    review = ClinicianReview(
        image=image,
        diagnosis=diagnosis,
        histopathology_confirmed=histopathology_confirmed,
        comment=comment.strip(),
        author=user,
    )
    review.full_clean(exclude=["author"])
    review.save()
    return review
