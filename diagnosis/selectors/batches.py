"""Batches: their images with results and review state, progress, the batch page's rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.db.models import (
    Exists,
    OuterRef,
    Prefetch,
    QuerySet,
    Subquery,
)

from diagnosis.interpretation import FLAGGED, REASSURING, UNCERTAIN, UNRELIABLE
from diagnosis.models import (
    Batch,
    Classification,
    ClassificationStatus,
    LesionImage,
)
from diagnosis.progress import (
    DONE,
    BatchImageStatus,
    BatchProgress,
    ResultBadge,
    image_bucket,
    result_badge,
)
from diagnosis.selectors._base import User, _get_or_404
from diagnosis.selectors.accounts import _organisation_ids
from diagnosis.selectors.reviews import with_review_state


def batch_list(*, user: User) -> QuerySet[Batch]:
    return (
        Batch.objects.filter(organisation__in=_organisation_ids(user))
        .select_related("organisation", "lesion", "lesion__patient", "created_by")
        .order_by("-created_at", "-id")
    )


def batch_get(*, user: User, batch_id: int | str) -> Batch:
    return _get_or_404(batch_list(user=user), batch_id, "batch")


def _newest_classification() -> QuerySet[Classification]:
    return Classification.objects.filter(image=OuterRef("pk")).order_by("-created_at", "-id")


def _latest_status() -> Subquery:
    return Subquery(_newest_classification().values("status")[:1])


def batch_images(*, batch: Batch) -> QuerySet[LesionImage]:
    """The batch's images, each annotated with `latest_status`, the review state
    (with_review_state) and prefetched classifications."""
    return (
        with_review_state(LesionImage.objects.filter(batch=batch))
        .select_related("lesion", "lesion__patient")
        .annotate(latest_status=_latest_status())
        .prefetch_related(Prefetch("classifications", queryset=Classification.objects.order_by("-created_at", "-id")))
        .order_by("id")
    )


def batch_progress(*, batch: Batch, images: Sequence[BatchImageStatus] | None = None) -> BatchProgress:
    """Counts of the batch's images by bucket; pass `images` (batch_image_statuses) to reuse them."""
    if images is None:
        statuses = LesionImage.objects.filter(batch=batch).annotate(s=_latest_status()).values_list("s", flat=True)
        buckets = [image_bucket(status) for status in statuses]
    else:
        buckets = [image.status for image in images]
    return BatchProgress.of(received=batch.received, rejected=len(batch.rejected or []), buckets=buckets)


def batch_image_statuses(*, batch: Batch) -> list[BatchImageStatus]:
    """Each image of the batch with its bucket, in upload order. One query whatever the batch's
    size, so a client polling a 500-image batch costs the server little."""
    newest = _newest_classification()
    rows = (
        with_review_state(LesionImage.objects.filter(batch=batch))
        .annotate(
            s=_latest_status(),
            w=Subquery(newest.values("warnings")[:1]),
            m=Subquery(newest.values("malignant")[:1]),
            t=Subquery(newest.values("top_class")[:1]),
            score=Subquery(newest.values("malignancy_score")[:1]),
        )
        .order_by("id")
        .values_list("id", "source_name", "lesion_id", "lesion__patient_id", "captured_at", "s", "w", "m", "t",
                     "score", "reviewed", "confirmed_diagnosis")
    )
    statuses = []
    for *head, status, warnings, malignant, top_class, score, reviewed, confirmed in rows:
        bucket = image_bucket(status)
        done = bucket == DONE  # a queued re-run's empty warnings say nothing yet
        statuses.append(BatchImageStatus(
            *head, status=bucket,
            warnings=tuple(warnings or ()) if done else (), malignant=bool(malignant) if done else None,
            top_class=(top_class or None) if done else None, malignancy_score=score if done else None,
            reviewed=bool(reviewed), confirmed_diagnosis=confirmed,
        ))
    return statuses


@dataclass(frozen=True)
class BatchImageRow:
    """One image of the batch page: its bucket, once done its result and badge, and whether a
    clinician reviewed it (confirmed: the diagnosis histopathology confirmed)."""

    image: LesionImage
    status: str  # queued, running, done or failed
    badge: ResultBadge | None
    classification: Classification | None = None  # the newest, once done
    reviewed: bool = False
    confirmed_diagnosis: str | None = None

    @property
    def level(self) -> str | None:
        return self.badge.level if self.badge else None

    @property
    def score(self) -> float | None:
        return self.badge.score if self.badge else None


# The batch page's orders and filters (?sort=, ?show=); the first of each is the default.
BATCH_SORTS: dict[str, str] = {
    "flagged": "Flagged first",
    "score": "Highest score first",
    "name": "File name",
    "captured": "Capture date",
}


BATCH_FILTERS: dict[str, str] = {
    "all": "All images",
    "flagged": "Flagged",
    "warnings": "With a warning",
    "unreviewed": "Not reviewed",
}


# Flagged first, then the image in doubt, then the unsure, then the reassuring; unfinished last.
_LEVEL_RANK = {FLAGGED: 0, UNRELIABLE: 1, UNCERTAIN: 2, REASSURING: 3}


def _batch_row_key(sort: str) -> Callable[[BatchImageRow], tuple]:
    def score_desc(row: BatchImageRow) -> float:
        return -(row.score if row.score is not None else -1.0)

    if sort == "score":
        return lambda row: (score_desc(row), row.image.pk)
    if sort == "name":
        return lambda row: ((row.image.source_name or "").lower(), row.image.pk)
    if sort == "captured":
        return lambda row: (row.image.captured_at, row.image.pk)
    return lambda row: (_LEVEL_RANK.get(row.level, len(_LEVEL_RANK)), score_desc(row), row.image.pk)


def _batch_row_shown(row: BatchImageRow, show: str) -> bool:
    if show == "flagged":
        return row.level == FLAGGED
    if show == "warnings":
        return bool(row.badge and row.badge.warnings)
    if show == "unreviewed":
        return not row.reviewed
    return True


def batch_image_rows(*, batch: Batch, sort: str = "flagged", show: str = "all") -> list[BatchImageRow]:
    """The batch page's images (batch_images: a fixed number of queries), each with its result,
    badge and review state, ordered by `sort` and filtered by `show` (BATCH_SORTS, BATCH_FILTERS;
    anything else: the default). Sorted here: a batch holds at most a few hundred images."""
    rows = []
    for image in batch_images(batch=batch):
        status = image_bucket(image.latest_status)
        newest = next(iter(image.classifications.all()), None)  # the prefetch, newest first
        done = status == DONE
        rows.append(BatchImageRow(
            image=image, status=status, badge=result_badge(newest) if done else None,
            classification=newest if done else None, reviewed=image.reviewed,
            confirmed_diagnosis=image.confirmed_diagnosis,
        ))
    show = show if show in BATCH_FILTERS else "all"
    rows = [row for row in rows if _batch_row_shown(row, show)]
    return sorted(rows, key=_batch_row_key(sort if sort in BATCH_SORTS else "flagged"))


def batch_settled(*, batch_id: int) -> bool:
    """Every file of the batch stored or refused, and every stored image classified with none of
    its classifications queued or running. A few indexed queries, whatever the batch's size."""
    batch = Batch.objects.only("received", "rejected").get(pk=batch_id)
    images = LesionImage.objects.filter(batch_id=batch_id)
    if images.count() + len(batch.rejected or []) < batch.received:
        return False  # still being stored
    if images.exclude(Exists(Classification.objects.filter(image=OuterRef("pk")))).exists():
        return False  # queued, not claimed yet
    in_flight = (ClassificationStatus.PENDING, ClassificationStatus.RUNNING)
    return not Classification.objects.filter(image__batch_id=batch_id, status__in=in_flight).exists()
