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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from diagnosis import inference
from diagnosis.models import (
    DIAGNOSIS_CHOICES,
    Classification,
    ClassificationStatus,
    ClinicianReview,
    Lesion,
    LesionImage,
    Membership,
    Organisation,
    Patient,
    Role,
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


def _prepare_uploads(files: Sequence[ImageUpload]) -> list[inference.ReencodedImage]:
    """Check every file before anything is stored: one bad file rejects the whole upload."""
    max_files = settings.SKINPORTAL_MAX_FILES_PER_UPLOAD
    max_bytes = settings.SKINPORTAL_MAX_UPLOAD_BYTES
    if not files:
        raise ValidationError({"image": "Choose at least one image file (JPEG or PNG)."})
    if len(files) > max_files:
        raise ValidationError({"image": f"At most {max_files} images per upload; you sent {len(files)}."})
    prepared: list[inference.ReencodedImage] = []
    errors: list[str] = []
    for upload in files:
        label = upload.name or "the file"
        if len(upload.data) > max_bytes:
            errors.append(f"{label}: the file is larger than the {_human_size(max_bytes)} limit.")
            continue
        try:
            prepared.append(inference.reencode_upload(upload.data))
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
        for item in prepared:
            image = LesionImage(
                lesion=lesion,
                captured_at=captured_at,
                sha256=hashlib.sha256(item.png_bytes).hexdigest(),
                width=item.width,
                height=item.height,
                size_bytes=len(item.png_bytes),
                source_format=item.source_format,
                uploaded_by=user,
            )
            image.file.save("upload.png", ContentFile(item.png_bytes), save=False)  # name generated by upload_to
            image.save()
            images.append(image)
    except Exception:
        # The rows roll back with the transaction; the files written so far must go too.
        for image in images:
            image.file.delete(save=False)
        raise
    for image in images:
        image_id = image.pk
        transaction.on_commit(lambda image_id=image_id: _enqueue_classification(image_id))
    return images


# --- Classification ------------------------------------------------------------------------


def _enqueue_classification(image_id: int) -> None:
    """Send the Celery task; a broker outage becomes a failed classification, not a 500."""
    from diagnosis.tasks import classify_image  # tasks import this module

    try:
        classify_image.delay(image_id)
    except Exception as exc:  # kombu raises several unrelated types when the broker is unreachable
        logger.exception("could not queue classification of image %s", image_id)
        _classification_store(
            image_id=image_id,
            model_version=Classification.UNKNOWN_MODEL_VERSION,
            values={
                "status": ClassificationStatus.FAILED,
                "error_message": f"The classification queue is unavailable ({type(exc).__name__}). "
                "Use 'Classify again' once the worker is running.",
            },
        )


@transaction.atomic
def classification_request(*, user: AbstractBaseUser, image: LesionImage) -> None:
    """Queue a new classification of an image (e.g. after a failure or a model upgrade)."""
    _require_write(user=user, organisation_id=image.lesion.patient.organisation_id)
    image_id = image.pk
    transaction.on_commit(lambda: _enqueue_classification(image_id))


@transaction.atomic
def _classification_store(*, image_id: int, model_version: str, values: dict[str, Any]) -> Classification | None:
    """Insert or update the one row for (image, model version)."""
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


def classification_run(*, image_id: int) -> Classification | None:
    """Classify one stored image with the loaded model and store the outcome.

    Never raises for a model or image problem: the failure is stored with a message a
    clinician can read. Returns None only if the image no longer exists. Not atomic as a whole:
    inference runs outside any transaction; only the write is.
    """
    image = LesionImage.objects.filter(pk=image_id).first()
    if image is None:
        logger.info("image %s was deleted before it could be classified", image_id)
        return None
    started_at = timezone.now()
    model_version = Classification.UNKNOWN_MODEL_VERSION

    def fail(message: str) -> Classification | None:
        return _classification_store(
            image_id=image_id,
            model_version=model_version,
            values={
                "status": ClassificationStatus.FAILED,
                "error_message": message,
                "started_at": started_at,
                "finished_at": timezone.now(),
                "inference_ms": None,
            },
        )

    try:
        model_version = inference.loaded_model_version()
    except inference.MLError as exc:
        logger.error("model unavailable: %s", exc)
        return fail(f"The model could not be loaded: {exc}")
    except Exception as exc:
        logger.exception("unexpected error loading the model")
        return fail(f"The model could not be loaded ({type(exc).__name__}); see the server log.")

    try:
        with image.file.open("rb") as fh:
            data = fh.read()
    except OSError as exc:
        logger.error("image %s: stored file unreadable: %s", image_id, exc)
        return fail("The stored image file could not be read; upload it again.")

    try:
        prediction = inference.classify_image_bytes(data)
    except inference.InvalidImageError as exc:
        return fail(f"The image could not be analysed: {exc}.")
    except inference.MLError as exc:
        logger.error("image %s: classification failed: %s", image_id, exc)
        return fail(f"Classification failed: {exc}")
    except Exception as exc:
        logger.exception("image %s: unexpected classification error", image_id)
        return fail(f"Classification failed unexpectedly ({type(exc).__name__}); see the server log.")

    return _classification_store(
        image_id=image_id,
        model_version=prediction.model_version,
        values={
            "status": ClassificationStatus.SUCCEEDED,
            "model_variant": prediction.variant,
            "probabilities": prediction.probabilities,
            "top_class": prediction.top_class,
            "malignancy_score": prediction.malignancy_score,
            "malignant": prediction.malignant,
            "threshold": prediction.threshold,
            "error_message": "",
            "started_at": started_at,
            "finished_at": timezone.now(),
            "inference_ms": prediction.inference_ms,
        },
    )


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
