"""Images coming in: one upload of a few files for one lesion, all stored or none, and the
building blocks that batches (diagnosis/services/batches.py) share with it.

Every image is checked and stripped of its metadata (inference.sanitise_upload) before it is
stored, then queued for classification once its transaction commits. Each request (one upload,
one batch) gets one decompression budget (diagnosis/budget.py) that all its files share: over
it, the whole request is refused and nothing of it is stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from diagnosis import inference
from diagnosis.archives import read_capped, too_large
from diagnosis.budget import BudgetExceeded, UploadBudget
from diagnosis.models import (
    PIXELS_PER_MM_MAX,
    PIXELS_PER_MM_MIN,
    Batch,
    Lesion,
    LesionImage,
)
from diagnosis.permissions import require_write
from diagnosis.services.classification import classification_enqueue_on_commit


@dataclass(frozen=True)
class ImageUpload:
    """One uploaded file: its name (for error messages only, never stored on disk) and bytes."""

    name: str
    data: bytes

    @classmethod
    def from_file(cls, uploaded: UploadedFile) -> ImageUpload:
        """A form's or the API's uploaded file, read up to the size cap (and one byte more, so
        the service can say it is too large)."""
        return cls(name=uploaded.name or "", data=read_capped(uploaded, settings.SKINPORTAL_MAX_UPLOAD_BYTES))


def _prepare_uploads(
    files: Sequence[ImageUpload], *, budget: UploadBudget | None = None
) -> list[inference.SanitisedImage]:
    """Check every file before anything is stored: one bad file rejects the whole upload, and so
    does going over the request's decompression budget (at once: no further file is decoded)."""
    budget = budget if budget is not None else UploadBudget.for_request()
    max_files = settings.SKINPORTAL_MAX_FILES_PER_UPLOAD
    max_bytes = settings.SKINPORTAL_MAX_UPLOAD_BYTES
    if not files:
        raise ValidationError({"image": "Choose at least one image file (JPEG or PNG)."})
    if len(files) > max_files:
        raise ValidationError({"image": f"At most {max_files} images per upload; you sent {len(files)}."})
    prepared: list[inference.SanitisedImage] = []
    errors: list[str] = []
    charge_file_bytes(files, budget=budget, max_bytes=max_bytes, field="image", unnamed="the file")
    for upload in files:
        label = upload.name or "the file"
        if len(upload.data) > max_bytes:
            errors.append(f"{label}: {too_large(max_bytes)}.")
            continue
        try:
            prepared.append(inference.sanitise_upload(upload.data, budget=budget, name=label))
        except inference.InvalidImageError as exc:
            errors.append(f"{label}: {exc}.")
        except BudgetExceeded as exc:
            raise ValidationError({"image": [*errors, f"{exc}."]}) from exc
    if errors:
        raise ValidationError({"image": errors})
    return prepared


def charge_file_bytes(
    files: Sequence[ImageUpload], *, budget: UploadBudget, max_bytes: int, field: str, unnamed: str
) -> None:
    """Pay every file's bytes to the request's budget before any is decoded (a file over the size
    cap pays nothing: it is refused on its own). Over the budget: ValidationError on `field`;
    `unnamed` names a file that came without a name."""
    try:
        for upload in files:
            if len(upload.data) <= max_bytes:
                budget.charge_file_bytes(len(upload.data), what=upload.name or unnamed)
    except BudgetExceeded as exc:
        raise ValidationError({field: f"{exc}."}) from exc


def check_captured_at(captured_at: dt.date | None) -> dt.date:
    captured_at = captured_at or timezone.localdate()
    if captured_at > timezone.localdate():
        raise ValidationError({"captured_at": "The capture date cannot be in the future."})
    return captured_at


def _check_pixels_per_mm(pixels_per_mm: float | None) -> float | None:
    if pixels_per_mm is None:
        return None
    if not (math.isfinite(pixels_per_mm) and PIXELS_PER_MM_MIN <= pixels_per_mm <= PIXELS_PER_MM_MAX):
        raise ValidationError({"pixels_per_mm": (
            f"The scale must be between {PIXELS_PER_MM_MIN:g} and {PIXELS_PER_MM_MAX:g} pixels per mm; "
            "leave it empty when it is not known."
        )})
    return float(pixels_per_mm)


class DuplicateUpload(ValidationError):
    """A file byte for byte the same (sha256) as an image already stored on the lesion: refused,
    with the images it repeats (`existing`, one per repeated file) so the caller can link to them."""

    def __init__(self, existing: list[tuple[str, LesionImage]]) -> None:
        self.existing = existing
        super().__init__({"image": [
            f"{name or 'the file'}: this exact file is already image {image.pk} of this lesion "
            f"(captured {image.captured_at:%Y-%m-%d})."
            for name, image in existing
        ]})


def _refuse_repeats(lesion: Lesion, files: Sequence[ImageUpload]) -> None:
    """Refuse the upload when any file is byte-identical to an image of the lesion (one query)."""
    digests = {hashlib.sha256(upload.data).hexdigest(): upload.name for upload in files}
    stored = {
        image.source_sha256: image
        for image in LesionImage.objects.filter(lesion=lesion, source_sha256__in=digests).order_by("-id")
    }
    repeated = [(name, stored[digest]) for digest, name in digests.items() if digest in stored]
    if repeated:
        raise DuplicateUpload(repeated)


@transaction.atomic
def lesion_image_upload(
    *,
    user: AbstractBaseUser,
    lesion: Lesion,
    files: Sequence[ImageUpload],
    captured_at: dt.date | None = None,
    pixels_per_mm: float | None = None,
) -> list[LesionImage]:
    """Store one or more images of a lesion (pixels only) and queue each for classification.
    `pixels_per_mm`, the images' scale when known, gives the lesion's area in mm² too.

    Classification is sent after the transaction commits; with Celery eager (the embedded
    default) it runs before this returns to the caller's caller, so pages show the result.
    A file byte-identical to an image already on the lesion refuses the upload (DuplicateUpload).
    """
    require_write(user=user, organisation_id=lesion.patient.organisation_id)
    captured_at = check_captured_at(captured_at)
    pixels_per_mm = _check_pixels_per_mm(pixels_per_mm)
    _refuse_repeats(lesion, files)  # before anything is decoded: a repeat costs no budget
    prepared = _prepare_uploads(files, budget=UploadBudget.for_request())
    with stored_files_removed_on_failure() as images:
        for upload, item in zip(files, prepared):
            images.append(
                lesion_image_build(
                    lesion=lesion,
                    item=item,
                    source=upload.data,
                    name=upload.name or "",
                    captured_at=captured_at,
                    user=user,
                    batch=None,
                )
            )
            if pixels_per_mm is not None:  # the clinician's scale wins over a DICOM file's own
                images[-1].pixels_per_mm = pixels_per_mm
        LesionImage.objects.bulk_create(images)  # one INSERT for them all
    classification_enqueue_on_commit(image_ids=[image.pk for image in images])
    return images


def lesion_image_build(
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
        pixels_per_mm=_file_scale(item),
        uploaded_by=user,
    )
    image.file.save(f"upload.{item.extension}", ContentFile(item.data), save=False)
    return image


def _file_scale(item: inference.SanitisedImage) -> float | None:
    """The scale a file states (a DICOM file's PixelSpacing), when within the portal's range."""
    scale = item.pixels_per_mm
    if scale is None or not (math.isfinite(scale) and PIXELS_PER_MM_MIN <= scale <= PIXELS_PER_MM_MAX):
        return None
    return float(scale)


@contextmanager
def stored_files_removed_on_failure() -> Iterator[list[LesionImage]]:
    """Collect, in the list it gives, the images whose files the block writes: when the block
    raises (a file that cannot be written, an INSERT or a transaction that fails), their files
    are deleted, so no row that was never stored leaves a file behind. Enter it outside the
    block's transaction, so the rows are rolled back first."""
    images: list[LesionImage] = []
    try:
        yield images
    except Exception:
        for image in images:
            image.file.delete(save=False)
        raise
