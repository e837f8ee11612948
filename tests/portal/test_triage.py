"""Triage: the review queue (dashboard and API) and the batch page's sortable, filterable list of
images with thumbnail, top class, score, warnings and review state (page and API)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse

from diagnosis import selectors, services
from diagnosis.models import Classification
from tests.portal.helpers import BLUE, GREEN, RED, image_bytes

pytestmark = pytest.mark.django_db

ORANGE = (200, 90, 40)


def _queue_ids(user) -> list[int]:
    return list(selectors.review_queue(user=user).values_list("pk", flat=True))


def test_it_queues_flagged_and_warned_images_not_yet_reviewed_highest_score_first(owner, upload):
    red, green, blue = upload(image_bytes(RED)), upload(image_bytes(GREEN)), upload(image_bytes(BLUE))
    orange = upload(image_bytes(ORANGE))
    queue = list(selectors.review_queue(user=owner))
    ids = [image.pk for image in queue]
    assert red.pk in ids and blue.pk in ids and green.pk not in ids  # blue: not dermatoscopic
    scores = [image.queue_score for image in queue]
    assert scores == sorted(scores, reverse=True)
    result = orange.classifications.get()
    assert (orange.pk in ids) == bool(result.malignant or result.warnings)


def test_it_reads_each_images_own_latest_result(owner, upload):
    """Image and classification ids apart (an image classified twice): each image's warnings are its own."""
    green = upload(image_bytes(GREEN))
    first = green.classifications.get()
    first.pk, first.model_version = None, "older-model"
    first.save()
    first.refresh_from_db()
    Classification.objects.filter(pk=first.pk).update(created_at=first.created_at - dt.timedelta(days=1))
    blue, red = upload(image_bytes(BLUE)), upload(image_bytes(RED))
    assert blue.classifications.get().pk != blue.pk
    assert set(_queue_ids(owner)) == {blue.pk, red.pk}


def test_it_takes_a_reviewed_image_out_of_the_queue(owner, colleague, upload):
    image = upload(image_bytes(RED))
    assert _queue_ids(owner) == [image.pk]
    services.reviews.review_create(user=colleague, image=image, diagnosis="mel")
    assert _queue_ids(owner) == []


def test_it_leaves_images_of_closed_lesions_and_other_organisations_out(owner, outsider, lesion, upload):
    upload(image_bytes(RED))
    assert _queue_ids(outsider) == []
    services.patients.lesion_close(user=owner, lesion=lesion, outcome="discharged")
    assert _queue_ids(owner) == []


def test_it_shows_the_review_queue_on_the_dashboard(owner, upload, client_for):
    image = upload(image_bytes(RED))
    page = client_for(owner).get(reverse("dashboard")).content.decode()
    assert 'id="review-queue"' in page and f'data-image="{image.pk}"' in page
    assert "Decision support, not a diagnosis" in page


def test_it_lists_the_review_queue_in_the_api(owner, colleague, outsider, upload, api_for):
    image = upload(image_bytes(RED))
    body = api_for(owner).get("/api/v1/review-queue/").json()
    assert body["count"] == 1
    (row,) = body["results"]
    assert row["image"] == image.pk and row["level"] == "flagged" and row["top_class"] == "mel"
    assert row["url"] == reverse("image-detail", args=[image.pk]) and "not a diagnosis" in row["notice"]
    assert api_for(outsider).get("/api/v1/review-queue/").json()["count"] == 0
    services.reviews.review_create(user=colleague, image=image, diagnosis="nv")
    assert api_for(owner).get("/api/v1/review-queue/").json()["count"] == 0


@pytest.fixture
def batch(owner, lesion, colleague, run_on_commit):
    files = [services.uploads.ImageUpload(name=name, data=image_bytes(colour))
             for name, colour in (("a-green.png", GREEN), ("b-red.png", RED), ("c-blue.png", BLUE))]
    with run_on_commit():
        batch = services.batches.batch_create(user=owner, lesion=lesion, files=files)
    red = batch.images.get(source_name="b-red.png")
    services.reviews.review_create(user=colleague, image=red, diagnosis="mel", histopathology_confirmed=True)
    return batch


def test_it_sorts_the_batch_rows_flagged_first_and_filters_them(batch):
    rows = selectors.batch_image_rows(batch=batch)
    assert [row.image.source_name for row in rows] == ["b-red.png", "c-blue.png", "a-green.png"]
    assert rows[0].confirmed_diagnosis == "mel" and rows[0].reviewed and not rows[1].reviewed
    by_name = selectors.batch_image_rows(batch=batch, sort="name")
    assert [row.image.source_name for row in by_name] == ["a-green.png", "b-red.png", "c-blue.png"]
    assert [r.image.source_name for r in selectors.batch_image_rows(batch=batch, show="flagged")] == ["b-red.png"]
    assert [r.image.source_name for r in selectors.batch_image_rows(batch=batch, show="warnings")] == ["c-blue.png"]
    unreviewed = selectors.batch_image_rows(batch=batch, show="unreviewed")
    assert {r.image.source_name for r in unreviewed} == {"a-green.png", "c-blue.png"}
    assert len(selectors.batch_image_rows(batch=batch, sort="nonsense", show="nonsense")) == 3


def test_it_shows_thumbnails_results_and_the_confirmed_diagnosis_on_the_batch_page(owner, batch, client_for):
    client = client_for(owner)
    url = reverse("batch-detail", kwargs={"batch_id": batch.pk})
    page = client.get(url).content.decode()
    red = batch.images.get(source_name="b-red.png")
    assert page.index("b-red.png") < page.index("c-blue.png") < page.index("a-green.png")
    assert 'class="thumb"' in page and f'href="#zoom-{red.pk}"' in page and f'id="zoom-{red.pk}"' in page
    assert "Confirmed: Melanoma (mel)" in page and "Not reviewed" in page
    flagged = client.get(url, {"show": "flagged", "sort": "score"}).content.decode()
    assert "b-red.png" in flagged and "a-green.png" not in flagged and "c-blue.png" not in flagged


def test_it_lists_the_batch_images_with_the_same_fields_in_the_api(owner, batch, api_for):
    body = api_for(owner).get(f"/api/v1/batches/{batch.pk}/").json()
    rows = {row["name"]: row for row in body["images"]}
    red = rows["b-red.png"]
    assert red["top_class"] == "mel" and red["level"] == "flagged" and red["malignancy_score"] > 0.5
    assert red["reviewed"] is True and red["confirmed_diagnosis"] == "mel"
    assert red["url"] == reverse("image-detail", args=[red["id"]])
    assert red["file_url"] == reverse("api-image-file", args=[red["id"]])
    assert rows["c-blue.png"]["warnings"] == ["not_dermoscopic"] or rows["c-blue.png"]["level"] == "unreliable"
    assert rows["a-green.png"]["reviewed"] is False and rows["a-green.png"]["confirmed_diagnosis"] is None
