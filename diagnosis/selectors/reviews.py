"""Clinician reviews, the review queue (triage), and the model's agreement with the reviews."""

from __future__ import annotations

from collections.abc import Sequence

from django.db.models import (
    Exists,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    TextField,
)
from django.db.models.functions import Cast

from diagnosis import agreement
from diagnosis.inference import CLASSES, MALIGNANT_CLASSES
from diagnosis.models import (
    Classification,
    ClassificationStatus,
    ClinicianReview,
    LesionImage,
    Organisation,
)
from diagnosis.selectors._base import User, _get_or_404
from diagnosis.selectors.accounts import _organisation_ids


def review_list(
    *, user: User, image_id: int | None = None, lesion_id: int | None = None, patient_id: int | None = None
) -> QuerySet[ClinicianReview]:
    reviews = ClinicianReview.objects.filter(
        image__lesion__patient__organisation__in=_organisation_ids(user)
    ).select_related("author", "image", "image__lesion")
    if image_id is not None:
        reviews = reviews.filter(image_id=image_id)
    if lesion_id is not None:
        reviews = reviews.filter(image__lesion_id=lesion_id)
    if patient_id is not None:
        reviews = reviews.filter(image__lesion__patient_id=patient_id)
    return reviews.order_by("-created_at", "-id")


def review_get(*, user: User, review_id: int | str) -> ClinicianReview:
    return _get_or_404(review_list(user=user), review_id, "review")


def _reviewed_images(organisation: Organisation) -> QuerySet[LesionImage]:
    return LesionImage.objects.filter(lesion__patient__organisation=organisation).filter(
        Exists(ClinicianReview.objects.filter(image=OuterRef("pk")))
    )


def _latest_review(image_ref: str) -> QuerySet[ClinicianReview]:
    return ClinicianReview.objects.filter(image=OuterRef(image_ref)).order_by("-created_at", "-id")


def agreement_model_versions(*, organisation: Organisation) -> list[agreement.VersionCount]:
    """Each model version with a succeeded result on a reviewed image of the organisation: how many
    such images it classified, and how many of those have a histopathology-confirmed latest review
    (one query)."""
    rows = (
        Classification.objects.filter(
            image__in=_reviewed_images(organisation).values("pk"), status=ClassificationStatus.SUCCEEDED
        )
        .annotate(confirmed=Subquery(_latest_review("image_id").values("histopathology_confirmed")[:1]))
        .values_list("model_version", "image_id", "confirmed")
    )
    images: dict[str, set[int]] = {}
    confirmed: dict[str, set[int]] = {}
    for version, image_id, is_confirmed in rows:
        images.setdefault(version, set()).add(image_id)
        if is_confirmed:
            confirmed.setdefault(version, set()).add(image_id)
    return [
        agreement.VersionCount(version, len(ids), len(confirmed.get(version, ())))
        for version, ids in sorted(images.items())
    ]


def agreement_report(
    *,
    organisation: Organisation,
    model_version: str | None = None,
    versions: Sequence[agreement.VersionCount] | None = None,
) -> agreement.AgreementReport:
    """The model's top class and malignancy flag against the organisation's clinician reviews
    (diagnosis/agreement.py has the maths). Each reviewed image counts once: its latest review
    against the model's latest succeeded classification of it (of `model_version` when given).
    Pass `versions` when the caller has them already (agreement_model_versions)."""
    review = _latest_review("pk")
    result = Classification.objects.filter(image=OuterRef("pk"), status=ClassificationStatus.SUCCEEDED)
    if model_version:
        result = result.filter(model_version=model_version)
    result = result.order_by("-created_at", "-id")
    rows = (
        _reviewed_images(organisation)
        .annotate(
            diagnosis=Subquery(review.values("diagnosis")[:1]),
            confirmed=Subquery(review.values("histopathology_confirmed")[:1]),
            top=Subquery(result.values("top_class")[:1]),
            flagged=Subquery(result.values("malignant")[:1]),
            version=Subquery(result.values("model_version")[:1]),
        )
        .order_by("id")
        .values_list("diagnosis", "confirmed", "top", "flagged", "version")
    )
    pairs = [
        agreement.Pair(diagnosis, bool(confirmed), top or None, None if flagged is None else bool(flagged), version)
        for diagnosis, confirmed, top, flagged, version in rows
    ]
    return agreement.agreement_report(
        pairs,
        classes=CLASSES,
        malignant=MALIGNANT_CLASSES,
        model_version=model_version or None,
        versions=agreement_model_versions(organisation=organisation) if versions is None else versions,
    )


def with_review_state(images: QuerySet[LesionImage]) -> QuerySet[LesionImage]:
    """Annotate each image with `reviewed` (a clinician reviewed it) and `confirmed_diagnosis` (the
    diagnosis of its newest review confirmed by histopathology; None without one)."""
    confirmed = ClinicianReview.objects.filter(image=OuterRef("pk"), histopathology_confirmed=True).order_by(
        "-created_at", "-id"
    )
    return images.annotate(
        reviewed=Exists(ClinicianReview.objects.filter(image=OuterRef("pk"))),
        confirmed_diagnosis=Subquery(confirmed.values("diagnosis")[:1]),
    )


def _latest_succeeded_of_image() -> QuerySet[Classification]:
    return Classification.objects.filter(image=OuterRef("pk"), status=ClassificationStatus.SUCCEEDED).order_by(
        "-created_at", "-id"
    )


def review_queue(*, user: User) -> QuerySet[LesionImage]:
    """Images of the user's organisations whose latest successful result is flagged or carries a
    warning (any level but reassuring), that no clinician has reviewed yet and whose lesion is
    still open: highest malignancy score first. A review takes the image out of the queue.

    Each image is annotated with its result: `queue_classification_id`, `queue_top_class`,
    `queue_score`, `queue_malignant`, `queue_warnings`, `queue_threshold`."""
    latest = _latest_succeeded_of_image()
    # The warnings as JSON text: "[]" when there are none (SQLite has no JSON length lookup).
    warnings_text = latest.annotate(warnings_text=Cast("warnings", TextField())).values("warnings_text")[:1]
    images = (
        LesionImage.objects.filter(
            lesion__patient__organisation__in=_organisation_ids(user), lesion__closed_on__isnull=True
        )
        .select_related("lesion", "lesion__patient")
        .annotate(
            queue_classification_id=Subquery(latest.values("id")[:1]),
            queue_top_class=Subquery(latest.values("top_class")[:1]),
            queue_score=Subquery(latest.values("malignancy_score")[:1]),
            queue_malignant=Subquery(latest.values("malignant")[:1]),
            queue_warnings=Subquery(latest.values("warnings")[:1]),
            queue_threshold=Subquery(latest.values("threshold")[:1]),
            queue_warnings_text=Subquery(warnings_text),
        )
        .filter(
            Q(queue_malignant=True) | (Q(queue_warnings_text__isnull=False) & ~Q(queue_warnings_text__in=("[]", "")))
        )
        .exclude(Exists(ClinicianReview.objects.filter(image=OuterRef("pk"))))
    )
    return images.order_by(F("queue_score").desc(nulls_last=True), "-captured_at", "-id")
