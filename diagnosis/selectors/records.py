"""Patients and lesions (with each lesion's latest result), and the lesions' follow-up."""

from __future__ import annotations

import calendar
import datetime as dt

from django.db.models import (
    BooleanField,
    Case,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    TextField,
    Value,
    When,
)
from django.db.models.functions import Cast
from django.utils import timezone

from diagnosis.inference import IMAGE_WARNINGS
from diagnosis.models import (
    FOLLOW_UP_SUGGESTED_MONTHS,
    Classification,
    ClassificationStatus,
    Lesion,
    Patient,
)
from diagnosis.selectors._base import User, _get_or_404
from diagnosis.selectors.accounts import _organisation_ids


def patient_list(*, user: User, query: str = "") -> QuerySet[Patient]:
    """Patients of the user's organisations; `query` matches name or external id (case-insensitive)."""
    patients = Patient.objects.filter(organisation__in=_organisation_ids(user)).select_related("organisation")
    query = query.strip()
    if query:
        patients = patients.filter(Q(name__icontains=query) | Q(external_id__icontains=query))
    return patients.order_by("name", "id")


def patient_get(*, user: User, patient_id: int | str) -> Patient:
    return _get_or_404(patient_list(user=user), patient_id, "patient")


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
