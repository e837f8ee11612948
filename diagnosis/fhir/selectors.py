"""The FHIR API's reads: searches by identifier and by patient, each starting from the caller's
organisations (diagnosis.selectors.organisation_list_for_user), so another organisation's rows
never appear; a search naming another organisation's patient finds nothing (FHIR's empty Bundle),
while a read by id of it is a 404 (done by the scoped `<entity>_get` selectors in the views).

Lighter than diagnosis.selectors' lists: no latest-result annotations nor prefetches, only the
relations the builders in resources.py read.
"""

from __future__ import annotations

from django.db.models import QuerySet

from diagnosis import selectors
from diagnosis.models import Classification, ClassificationStatus, Lesion, LesionImage, Patient
from diagnosis.selectors import User


def _organisation_ids(user: User) -> QuerySet:
    return selectors.organisation_list_for_user(user=user).values("id")


def fhir_patient_list(
    *, user: User, identifier_value: str | None = None, organisation_id: int | None = None
) -> QuerySet[Patient]:
    """Patients of the user's organisations, optionally by exact external id (and organisation,
    when the identifier's system named one)."""
    patients = Patient.objects.filter(organisation__in=_organisation_ids(user)).select_related("organisation")
    if identifier_value is not None:
        patients = patients.filter(external_id=identifier_value)
    if organisation_id is not None:
        patients = patients.filter(organisation_id=organisation_id)
    return patients.order_by("id")


def fhir_lesion_list(*, user: User, patient_id: int | None = None) -> QuerySet[Lesion]:
    lesions = Lesion.objects.filter(patient__organisation__in=_organisation_ids(user))
    if patient_id is not None:
        lesions = lesions.filter(patient_id=patient_id)
    return lesions.order_by("id")


def fhir_image_list(*, user: User, patient_id: int | None = None) -> QuerySet[LesionImage]:
    images = LesionImage.objects.filter(lesion__patient__organisation__in=_organisation_ids(user)).select_related(
        "lesion"
    )
    if patient_id is not None:
        images = images.filter(lesion__patient_id=patient_id)
    return images.order_by("id")


def fhir_classification_list(*, user: User, patient_id: int | None = None) -> QuerySet[Classification]:
    """Succeeded classifications only: the ones the FHIR API exports (resources.exported)."""
    classifications = (
        Classification.objects.filter(
            image__lesion__patient__organisation__in=_organisation_ids(user), status=ClassificationStatus.SUCCEEDED
        )
        .select_related("image", "image__lesion")
        .defer("activation_map")
    )  # the map is not exported
    if patient_id is not None:
        classifications = classifications.filter(image__lesion__patient_id=patient_id)
    return classifications.order_by("id")
