"""Selectors: every read is scoped to the user's organisations."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import AnonymousUser
from django.http import Http404

from diagnosis import selectors, services
from tests.portal.helpers import GREEN, RED, image_bytes

pytestmark = pytest.mark.django_db


def test_it_lists_only_the_users_organisation_patients(patient, colleague, outsider, other_org):
    theirs = services.patients.patient_create(
        user=outsider, organisation=other_org, external_id="S-1", name="Southside patient"
    )
    assert list(selectors.patient_list(user=colleague)) == [patient]
    assert list(selectors.patient_list(user=outsider)) == [theirs]
    assert list(selectors.patient_list(user=AnonymousUser())) == []


def test_it_searches_patients_by_name_or_external_id(owner, org, patient):
    services.patients.patient_create(user=owner, organisation=org, external_id="MRN-777", name="Grace Hopper")
    assert [p.name for p in selectors.patient_list(user=owner, query="hopper")] == ["Grace Hopper"]
    assert [p.name for p in selectors.patient_list(user=owner, query="mrn-001")] == ["Ada Lovelace"]


@pytest.mark.parametrize(
    ("getter", "kwarg"),
    [
        (selectors.patient_get, "patient_id"),
        (selectors.lesion_get, "lesion_id"),
        (selectors.image_get, "image_id"),
        (selectors.classification_get, "classification_id"),
        (selectors.review_get, "review_id"),
    ],
)
def test_it_hides_other_organisations_objects_behind_404(getter, kwarg, upload, owner, colleague, outsider):
    image = upload(image_bytes())
    review = services.reviews.review_create(user=owner, image=image, diagnosis="nv")
    ids = {
        "patient_id": image.lesion.patient_id,
        "lesion_id": image.lesion_id,
        "image_id": image.pk,
        "classification_id": image.classifications.get().pk,
        "review_id": review.pk,
    }
    assert getter(user=colleague, **{kwarg: ids[kwarg]}).pk == ids[kwarg]
    with pytest.raises(Http404):
        getter(user=outsider, **{kwarg: ids[kwarg]})
    with pytest.raises(Http404):
        getter(user=colleague, **{kwarg: 999999})
    with pytest.raises(Http404):
        getter(user=colleague, **{kwarg: "not-a-number"})


def test_it_annotates_lesions_with_the_latest_visits_result(upload, owner, lesion):
    upload(image_bytes(RED), captured_at=dt.date(2024, 1, 1))
    upload(image_bytes(GREEN), captured_at=dt.date(2024, 6, 1))
    annotated = selectors.lesion_get(user=owner, lesion_id=lesion.pk)
    assert (annotated.latest_top_class, annotated.latest_malignant) == ("nv", False)
    assert annotated.latest_captured_at == dt.date(2024, 6, 1)


def test_it_lists_flagged_lesions_by_their_latest_result(upload, owner, colleague, patient, outsider):
    flagged = services.patients.lesion_create(user=owner, patient=patient, body_site="face", label="Nose")
    upload(image_bytes(RED), target=flagged)
    upload(image_bytes(GREEN))  # the `lesion` fixture: below threshold
    assert [lesion.pk for lesion in selectors.lesion_list_flagged(user=colleague)] == [flagged.pk]
    assert selectors.lesion_list_flagged(user=outsider) == []


def test_it_orders_the_timeline_by_capture_date(upload, lesion):
    later = upload(image_bytes(GREEN), captured_at=dt.date(2024, 6, 1))
    earlier = upload(image_bytes(RED), captured_at=dt.date(2023, 6, 1))
    timeline = selectors.lesion_timeline(lesion=lesion)
    assert [point.image.pk for point in timeline] == [earlier.pk, later.pk]
    assert [point.classification.top_class for point in timeline] == ["mel", "nv"]


def test_it_filters_classifications(upload, owner, lesion):
    upload(image_bytes(RED), captured_at=dt.date(2024, 1, 10))
    upload(image_bytes(GREEN), captured_at=dt.date(2024, 2, 10))
    assert [c.top_class for c in selectors.classification_list(user=owner, flagged=True)] == ["mel"]
    assert [c.top_class for c in selectors.classification_list(user=owner, flagged=False)] == ["nv"]
    assert [c.top_class for c in selectors.classification_list(user=owner, date_from=dt.date(2024, 2, 1))] == ["nv"]
    assert [c.top_class for c in selectors.classification_list(user=owner, date_to=dt.date(2024, 1, 31))] == ["mel"]
    assert selectors.classification_list(user=owner, lesion_id=lesion.pk).count() == 2
    assert selectors.classification_list(user=owner, patient_id=lesion.patient_id + 1000).count() == 0


def test_it_knows_who_may_write(owner, colleague, reader, outsider, org):
    assert selectors.user_can_write(user=owner, organisation_id=org.pk)
    assert selectors.user_can_write(user=colleague, organisation_id=org.pk)
    assert not selectors.user_can_write(user=reader, organisation_id=org.pk)
    assert not selectors.user_can_write(user=outsider, organisation_id=org.pk)
    assert not selectors.user_can_write(user=AnonymousUser(), organisation_id=org.pk)
