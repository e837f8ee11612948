"""Images, a lesion's timeline, classifications; what a model upgrade or an import must skip."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from django.db.models import (
    Exists,
    OuterRef,
    Prefetch,
    QuerySet,
)

from diagnosis.models import (
    Classification,
    ClassificationStatus,
    Lesion,
    LesionImage,
    Organisation,
)
from diagnosis.progress import (
    ResultBadge,
    result_badge,
)
from diagnosis.selectors._base import User, _get_or_404
from diagnosis.selectors.accounts import _organisation_ids


def image_list(
    *, user: User, lesion_id: int | None = None, patient_id: int | None = None, batch_id: int | None = None
) -> QuerySet[LesionImage]:
    images = LesionImage.objects.filter(lesion__patient__organisation__in=_organisation_ids(user)).select_related(
        "lesion", "lesion__patient", "uploaded_by"
    )
    if lesion_id is not None:
        images = images.filter(lesion_id=lesion_id)
    if patient_id is not None:
        images = images.filter(lesion__patient_id=patient_id)
    if batch_id is not None:
        images = images.filter(batch_id=batch_id)
    return images.prefetch_related(
        Prefetch("classifications", queryset=Classification.objects.order_by("-created_at", "-id"))
    ).order_by("captured_at", "uploaded_at", "id")


def image_get(*, user: User, image_id: int | str) -> LesionImage:
    return _get_or_404(image_list(user=user), image_id, "image")


def image_latest_classification(*, image: LesionImage) -> Classification | None:
    """The newest finished (succeeded or failed) classification of an image, using the prefetch
    when present; None while none has finished. A run in progress (e.g. by a new model version
    after an upgrade) does not hide the result shown so far."""
    finished = (ClassificationStatus.SUCCEEDED, ClassificationStatus.FAILED)
    return next((c for c in image.classifications.all() if c.status in finished), None)


def image_clinical_record(*, image: LesionImage) -> dict[str, float | str | None]:
    """What the records say beside the image: the patient's age in whole years on the day it was
    taken (None without a date of birth), their sex and the lesion's body site, as stored."""
    lesion = image.lesion
    patient = lesion.patient
    born, taken = patient.date_of_birth, image.captured_at
    age = None
    if born is not None and taken is not None and taken >= born:
        age = float(taken.year - born.year - ((taken.month, taken.day) < (born.month, born.day)))
    return {"age": age, "sex": patient.sex, "site": lesion.body_site}


def image_classification_settled(*, image_id: int) -> bool:
    """True once the image has a classification and none is queued or running."""
    rows = Classification.objects.filter(image_id=image_id)
    return (
        rows.exists()
        and not rows.filter(status__in=(ClassificationStatus.PENDING, ClassificationStatus.RUNNING)).exists()
    )


@dataclass(frozen=True)
class TimelinePoint:
    image: LesionImage
    classification: Classification | None

    @property
    def badge(self) -> ResultBadge | None:
        """The visit's badge (colour by reading level, warnings in words); None unless succeeded."""
        return result_badge(self.classification)


def lesion_timeline(*, lesion: Lesion) -> list[TimelinePoint]:
    """Every image of a lesion in capture order, each with its latest result."""
    images = (
        LesionImage.objects.filter(lesion=lesion)
        .prefetch_related(Prefetch("classifications", queryset=Classification.objects.order_by("-created_at", "-id")))
        .order_by("captured_at", "uploaded_at", "id")
    )
    return [TimelinePoint(image=image, classification=image_latest_classification(image=image)) for image in images]


def classification_list(
    *,
    user: User,
    patient_id: int | None = None,
    lesion_id: int | None = None,
    image_id: int | None = None,
    flagged: bool | None = None,
    status: str | None = None,
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
) -> QuerySet[Classification]:
    """Classifications in the user's organisations; dates filter the image's capture date."""
    classifications = Classification.objects.filter(
        image__lesion__patient__organisation__in=_organisation_ids(user)
    ).select_related("image", "image__lesion", "image__lesion__patient")
    if patient_id is not None:
        classifications = classifications.filter(image__lesion__patient_id=patient_id)
    if lesion_id is not None:
        classifications = classifications.filter(image__lesion_id=lesion_id)
    if image_id is not None:
        classifications = classifications.filter(image_id=image_id)
    if flagged is not None:
        classifications = classifications.filter(status=ClassificationStatus.SUCCEEDED, malignant=flagged)
    if status:
        classifications = classifications.filter(status=status)
    if date_from is not None:
        classifications = classifications.filter(image__captured_at__gte=date_from)
    if date_to is not None:
        classifications = classifications.filter(image__captured_at__lte=date_to)
    return classifications.order_by("-created_at", "-id")


def classification_get(*, user: User, classification_id: int | str) -> Classification:
    return _get_or_404(classification_list(user=user), classification_id, "classification")


def classification_list_recent(*, user: User, limit: int = 10) -> list[Classification]:
    return list(classification_list(user=user)[:limit])


def image_ids_missing_classification(*, model_version: str, organisation: Organisation | None = None) -> QuerySet:
    """Ids of images without a successful classification by `model_version` (oldest first)."""
    done = Classification.objects.filter(
        image=OuterRef("pk"), model_version=model_version, status=ClassificationStatus.SUCCEEDED
    )
    images = LesionImage.objects.exclude(Exists(done))
    if organisation is not None:
        images = images.filter(lesion__patient__organisation=organisation)
    return images.order_by("id").values_list("id", flat=True)


def import_already_present(*, organisation: Organisation, data: bytes) -> bool:
    """Re-running an import skips files already stored in this organisation (sha256 of the bytes)."""
    return LesionImage.objects.filter(
        lesion__patient__organisation=organisation, source_sha256=hashlib.sha256(data).hexdigest()
    ).exists()
