"""Reads. Every query is scoped to the organisations the user belongs to.

The `<entity>_get` helpers are the ONE way pages and the API fetch a single object (all through
`_get_or_404`): an id from another organisation raises Http404, exactly like an id that does
not exist, so an outsider learns nothing. List selectors never return another organisation's rows.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import (
    BooleanField,
    Case,
    Count,
    Exists,
    F,
    Model,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    TextField,
    Value,
    When,
)
from django.db.models.functions import Cast
from django.http import Http404
from django.utils import timezone
from knox.models import AuthToken

from diagnosis import agreement
from diagnosis.inference import CLASSES, IMAGE_WARNINGS, MALIGNANT_CLASSES
from diagnosis.interpretation import FLAGGED, REASSURING, UNCERTAIN, UNRELIABLE
from diagnosis.models import (
    FOLLOW_UP_SUGGESTED_MONTHS,
    WRITE_ROLES,
    AuditEvent,
    Batch,
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
from diagnosis.progress import (
    DONE,
    BatchImageStatus,
    BatchProgress,
    ResultBadge,
    image_bucket,
    result_badge,
)

User = AbstractBaseUser | AnonymousUser
M = TypeVar("M", bound=Model)


def _get_or_404(objects: QuerySet[M], pk: int | str, what: str) -> M:
    """The one object of `objects` with this id. Unknown, malformed, or outside the user's
    organisations (`objects` is scoped): the same Http404, so an outsider learns nothing."""
    try:
        return objects.get(pk=int(pk))
    except (objects.model.DoesNotExist, ValueError, TypeError) as exc:
        raise Http404(f"No such {what}.") from exc


# --- Organisations and roles -------------------------------------------------------------


def organisation_list_for_user(*, user: User) -> QuerySet[Organisation]:
    if not user.is_authenticated:
        return Organisation.objects.none()
    return Organisation.objects.filter(memberships__user=user).distinct()


def organisation_list_writable_by_user(*, user: User) -> QuerySet[Organisation]:
    if not user.is_authenticated:
        return Organisation.objects.none()
    return Organisation.objects.filter(memberships__user=user, memberships__role__in=WRITE_ROLES).distinct()


def user_can_write(*, user: User, organisation_id: int) -> bool:
    if not user.is_authenticated:
        return False
    return Membership.objects.filter(user=user, organisation_id=organisation_id, role__in=WRITE_ROLES).exists()


def user_is_admin(*, user: User, organisation_id: int) -> bool:
    if not user.is_authenticated:
        return False
    return Membership.objects.filter(user=user, organisation_id=organisation_id, role=Role.ADMIN).exists()


def organisation_get(*, user: User, organisation_id: int | str) -> Organisation:
    return _get_or_404(organisation_list_for_user(user=user), organisation_id, "organisation")


def membership_list(*, organisation: Organisation) -> QuerySet[Membership]:
    return Membership.objects.filter(organisation=organisation).select_related("user").order_by("user__username")


def membership_get(*, organisation: Organisation, membership_id: int | str) -> Membership:
    return _get_or_404(membership_list(organisation=organisation), membership_id, "member")


def user_can_write_anywhere(*, user: User) -> bool:
    return organisation_list_writable_by_user(user=user).exists()


# --- Patients ------------------------------------------------------------------------------


def _organisation_ids(user: User) -> QuerySet:
    return organisation_list_for_user(user=user).values("id")


def patient_list(*, user: User, query: str = "") -> QuerySet[Patient]:
    """Patients of the user's organisations; `query` matches name or external id (case-insensitive)."""
    patients = Patient.objects.filter(organisation__in=_organisation_ids(user)).select_related("organisation")
    query = query.strip()
    if query:
        patients = patients.filter(Q(name__icontains=query) | Q(external_id__icontains=query))
    return patients.order_by("name", "id")


def patient_get(*, user: User, patient_id: int | str) -> Patient:
    return _get_or_404(patient_list(user=user), patient_id, "patient")


# --- Lesions -------------------------------------------------------------------------------


def _latest_classification(outer_ref: str) -> QuerySet[Classification]:
    """Succeeded classifications of the latest-captured image first (ties: newest result)."""
    return Classification.objects.filter(**{outer_ref: OuterRef("pk")}, status=ClassificationStatus.SUCCEEDED).order_by(
        "-image__captured_at", "-image__uploaded_at", "-image_id", "-created_at", "-id"
    )


def with_latest_result(lesions: QuerySet[Lesion]) -> QuerySet[Lesion]:
    """Annotate each lesion with its latest image's result (None where there is none yet)."""
    latest = _latest_classification("image__lesion")
    return lesions.annotate(
        latest_top_class=Subquery(latest.values("top_class")[:1]),
        latest_malignancy_score=Subquery(latest.values("malignancy_score")[:1]),
        latest_malignant=Subquery(latest.values("malignant")[:1]),
        latest_threshold=Subquery(latest.values("threshold")[:1]),
        latest_captured_at=Subquery(latest.values("image__captured_at")[:1]),
        latest_image_id=Subquery(latest.values("image_id")[:1]),
    )


def _scoped_lesions(user: User) -> QuerySet[Lesion]:
    return Lesion.objects.filter(patient__organisation__in=_organisation_ids(user)).select_related(
        "patient", "patient__organisation"
    )


def lesion_list(*, user: User, patient_id: int | None = None) -> QuerySet[Lesion]:
    lesions = _scoped_lesions(user)
    if patient_id is not None:
        lesions = lesions.filter(patient_id=patient_id)
    return with_latest_result(lesions).order_by("patient__name", "label", "id")


def lesion_get(*, user: User, lesion_id: int | str, with_latest_result: bool = True) -> Lesion:
    """One lesion of the user's organisations. `with_latest_result=False` leaves out the latest
    result (six subqueries over all the lesion's classifications): for a lesion named as the
    target of an upload, where only its identity and organisation matter."""
    lesions = lesion_list(user=user) if with_latest_result else _scoped_lesions(user)
    return _get_or_404(lesions, lesion_id, "lesion")


def _image_doubt(warnings_text: str) -> Q:
    """The JSON text of a warnings list names an image warning. Text, because SQLite has no JSON
    `contains` lookup; each code is matched with its quotes, so one never matches inside another."""
    doubt = Q()
    for code in sorted(IMAGE_WARNINGS):
        doubt |= Q(**{f"{warnings_text}__contains": f'"{code}"'})
    return doubt


def with_latest_warnings(lesions: QuerySet[Lesion]) -> QuerySet[Lesion]:
    """Annotate each lesion with its latest result's `latest_warnings` (codes) and
    `latest_image_doubt` (one of them is an image warning). Kept out of with_latest_result, which
    every lesion read pays for: only the lists that sort by trust need them."""
    latest = _latest_classification("image__lesion")
    doubt = latest.annotate(warnings_text=Cast("warnings", TextField())).annotate(
        doubt=Case(When(_image_doubt("warnings_text"), then=Value(True)), default=Value(False),
                   output_field=BooleanField())
    )
    return lesions.annotate(
        latest_warnings=Subquery(latest.values("warnings")[:1]),
        latest_image_doubt=Subquery(doubt.values("doubt")[:1]),
    )


def lesion_list_flagged(*, user: User, limit: int = 20) -> list[Lesion]:
    """Lesions whose latest result is at or above the model's malignancy threshold, from an image
    without warnings: a score from an image in doubt is not ranked with them (see
    lesion_list_needing_image). Each has `latest_warnings` (low_confidence at most)."""
    lesions = with_latest_warnings(lesion_list(user=user)).filter(latest_malignant=True, latest_image_doubt=False)
    return list(lesions.order_by("-latest_captured_at", "-id")[:limit])


def lesion_list_needing_image(*, user: User, limit: int = 20) -> list[Lesion]:
    """Lesions whose latest result has an image warning (not dermatoscopic, blurred, too dark or
    bright, low contrast), above the threshold or not: the picture should be taken again."""
    lesions = with_latest_warnings(lesion_list(user=user)).filter(latest_image_doubt=True)
    return list(lesions.order_by("-latest_captured_at", "-id")[:limit])


# --- Follow-up ------------------------------------------------------------------------------

# A planned follow-up is "due" from this many days before its date, "overdue" the day after it.
FOLLOW_UP_DUE_DAYS = 14
DUE, OVERDUE = "due", "overdue"
FOLLOW_UP_STATES: tuple[str, ...] = (DUE, OVERDUE)


def follow_up_state(*, lesion: Lesion, today: dt.date | None = None) -> str | None:
    """overdue (the date has passed), due (within FOLLOW_UP_DUE_DAYS), or None (none planned,
    later, or the lesion is closed)."""
    if lesion.closed_on is not None or lesion.follow_up_on is None:
        return None
    today = today or timezone.localdate()
    if lesion.follow_up_on < today:
        return OVERDUE
    return DUE if lesion.follow_up_on <= today + dt.timedelta(days=FOLLOW_UP_DUE_DAYS) else None


def follow_up_suggestion(*, lesion: Lesion) -> dt.date | None:
    """The follow-up date to suggest for an open lesion with none planned whose latest result is
    flagged: FOLLOW_UP_SUGGESTED_MONTHS after that visit (never before today). Needs the
    annotations of with_latest_result (lesion_get, lesion_list)."""
    if lesion.closed_on is not None or lesion.follow_up_on is not None:
        return None
    if not getattr(lesion, "latest_malignant", False) or getattr(lesion, "latest_captured_at", None) is None:
        return None
    return max(_months_later(lesion.latest_captured_at, FOLLOW_UP_SUGGESTED_MONTHS), timezone.localdate())


def _months_later(day: dt.date, months: int) -> dt.date:
    """The same day of the month `months` later (the month's last day when it has no such day)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    last = calendar.monthrange(year, month)[1]
    return dt.date(year, month, min(day.day, last))


def follow_up_list(*, user: User, state: str | None = None, today: dt.date | None = None) -> QuerySet[Lesion]:
    """Open lesions of the user's organisations whose follow-up is overdue or due (`state`: one of
    them, None: both), earliest date first, each with its latest result."""
    today = today or timezone.localdate()
    horizon = today + dt.timedelta(days=FOLLOW_UP_DUE_DAYS)
    lesions = lesion_list(user=user).filter(closed_on__isnull=True, follow_up_on__isnull=False)
    if state == OVERDUE:
        lesions = lesions.filter(follow_up_on__lt=today)
    elif state == DUE:
        lesions = lesions.filter(follow_up_on__gte=today, follow_up_on__lte=horizon)
    else:
        lesions = lesions.filter(follow_up_on__lte=horizon)
    return lesions.order_by("follow_up_on", "id")


# --- Images ----------------------------------------------------------------------------------


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


# --- Classifications ------------------------------------------------------------------------


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


# --- Reviews --------------------------------------------------------------------------------


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


# --- Agreement: the model against the organisation's reviews -----------------------------------


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


# --- Batches ----------------------------------------------------------------------------------


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


# --- Triage: the review queue ------------------------------------------------------------------


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


# --- Model upgrades -----------------------------------------------------------------------------


def image_ids_missing_classification(*, model_version: str, organisation: Organisation | None = None) -> QuerySet:
    """Ids of images without a successful classification by `model_version` (oldest first)."""
    done = Classification.objects.filter(
        image=OuterRef("pk"), model_version=model_version, status=ClassificationStatus.SUCCEEDED
    )
    images = LesionImage.objects.exclude(Exists(done))
    if organisation is not None:
        images = images.filter(lesion__patient__organisation=organisation)
    return images.order_by("id").values_list("id", flat=True)


# --- API tokens ------------------------------------------------------------------------------


def api_token_list(*, user: AbstractBaseUser) -> QuerySet[AuthToken]:
    """The user's own unexpired API tokens, newest first (rows hold digests, never keys)."""
    return AuthToken.objects.filter(user=user, expiry__gt=timezone.now()).order_by("-created", "token_key")


# --- Bulk import --------------------------------------------------------------------------------


def import_already_present(*, organisation: Organisation, data: bytes) -> bool:
    """Re-running an import skips files already stored in this organisation (sha256 of the bytes)."""
    return LesionImage.objects.filter(
        lesion__patient__organisation=organisation, source_sha256=hashlib.sha256(data).hexdigest()
    ).exists()


# --- Operations (staff) -------------------------------------------------------------------------


def classification_status_counts() -> dict[str, int]:
    rows = Classification.objects.values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}


# --- Audit trail -----------------------------------------------------------------------------


def audit_event_list(*, organisation: Organisation, filters: dict[str, Any] | None = None) -> QuerySet[AuditEvent]:
    """An organisation's log, newest first; filters: action, object_type, outcome, actor (username),
    date_from, date_to (inclusive, UTC dates)."""
    filters = filters or {}
    events = AuditEvent.objects.filter(organisation_id=organisation.pk)
    for field in ("action", "object_type", "outcome"):
        if filters.get(field):
            events = events.filter(**{field: filters[field]})
    if filters.get("actor"):
        events = events.filter(actor_username=filters["actor"])
    if filters.get("date_from"):
        events = events.filter(at__date__gte=filters["date_from"])
    if filters.get("date_to"):
        events = events.filter(at__date__lte=filters["date_to"])
    return events.order_by("-at", "-id")
