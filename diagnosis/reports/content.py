"""What a report shows, read through the selectors only: the patient, the lesion, each visit's
image with its current result, reading, measured model performance, pictures and reviews.

Everything the renderer (layout.py) needs is gathered here, so drawing the PDF runs no query.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.utils import timezone

from diagnosis import inference, selectors
from diagnosis.interpretation import Reading, read_result
from diagnosis.models import Classification, ClinicianReview, Lesion, LesionImage, Organisation, Patient
from diagnosis.reports.pictures import Pictures, visit_pictures

LESION, IMAGE = "lesion", "image"


@dataclass(frozen=True)
class Visit:
    number: int  # 1 = the oldest capture
    image: LesionImage
    classification: Classification | None  # the newest finished one; None while pending
    reading: Reading | None  # None unless the classification succeeded
    performance: inference.ModelPerformance | None
    reviews: list[ClinicianReview]
    pictures: Pictures


@dataclass(frozen=True)
class ReportContent:
    kind: str  # LESION or IMAGE
    organisation: Organisation
    patient: Patient
    lesion: Lesion
    visits: list[Visit]
    generated_at: dt.datetime
    generated_by: str
    follow_up_state: str | None = None  # due or overdue (selectors.follow_up_state); None otherwise

    @property
    def title(self) -> str:
        return f"SkinPortal {self.kind} report"


def lesion_report_content(*, user: User, lesion: Lesion) -> ReportContent:
    """Every image of the lesion, oldest capture first, each with its current result."""
    timeline = selectors.lesion_timeline(lesion=lesion)
    reviews = _reviews_by_image(selectors.review_list(user=user, lesion_id=lesion.pk))
    visits = [
        _visit(number, point.image, point.classification, reviews.get(point.image.pk, []))
        for number, point in enumerate(timeline, start=1)
    ]
    return _content(LESION, user=user, lesion=lesion, visits=visits)


def image_report_content(*, user: User, image: LesionImage) -> ReportContent:
    """One image (as image_get fetched it, classifications prefetched) and its current result."""
    classification = selectors.image_latest_classification(image=image)
    reviews = list(selectors.review_list(user=user, image_id=image.pk))
    return _content(IMAGE, user=user, lesion=image.lesion, visits=[_visit(1, image, classification, reviews)])


def _content(kind: str, *, user: User, lesion: Lesion, visits: list[Visit]) -> ReportContent:
    patient = lesion.patient
    return ReportContent(
        kind=kind,
        organisation=_organisation(user, patient),
        patient=patient,
        lesion=lesion,
        visits=visits,
        generated_at=timezone.localtime(),
        generated_by=user.get_username(),
        follow_up_state=selectors.follow_up_state(lesion=lesion),
    )


def _organisation(user: User, patient: Patient) -> Organisation:
    # lesion_get loads it with the patient; image_get does not, so fetch it (scoped) only then.
    if Patient.organisation.is_cached(patient):
        return patient.organisation
    return selectors.organisation_get(user=user, organisation_id=patient.organisation_id)


def _reviews_by_image(reviews: Iterable[ClinicianReview]) -> dict[int, list[ClinicianReview]]:
    grouped: dict[int, list[ClinicianReview]] = defaultdict(list)
    for review in reviews:  # newest first, as on the pages
        grouped[review.image_id].append(review)
    return grouped


def _visit(
    number: int, image: LesionImage, classification: Classification | None, reviews: list[ClinicianReview]
) -> Visit:
    succeeded = classification is not None and classification.succeeded
    return Visit(
        number=number,
        image=image,
        classification=classification,
        reading=read_result(classification) if succeeded else None,
        performance=(
            inference.model_performance(classification.model_version, classification.model_variant or "fp32",
                                        with_context=bool(classification.context))
            if succeeded
            else None
        ),
        reviews=reviews,
        pictures=visit_pictures(image=image, classification=classification),
    )
