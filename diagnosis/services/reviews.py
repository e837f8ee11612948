"""A clinician's own diagnosis of an image, beside the model's."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from diagnosis.models import DIAGNOSIS_CHOICES, ClinicianReview, LesionImage
from diagnosis.permissions import require_write


@transaction.atomic
def review_create(
    *,
    user: AbstractBaseUser,
    image: LesionImage,
    diagnosis: str,
    histopathology_confirmed: bool = False,
    comment: str = "",
) -> ClinicianReview:
    require_write(user=user, organisation_id=image.lesion.patient.organisation_id)
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
