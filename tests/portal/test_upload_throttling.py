"""Page uploads are throttled like the API's (issue 13, defect 9): the upload form and the batch
form count in the same per-user "uploads" bucket as POST /api/v1/images/ and /batches/, so the
rate cannot be dodged by switching to the HTML form; a throttled page answers 429 with
Retry-After and its form again with a message, and stores nothing."""

from __future__ import annotations

import itertools

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from diagnosis.models import Batch, LesionImage
from tests.portal.helpers import RED, image_bytes

pytestmark = pytest.mark.django_db

API = "/api/v1"


@pytest.fixture
def two_a_minute(settings) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "uploads": "2/minute"},
    }


_files = itertools.count()


def _png() -> SimpleUploadedFile:
    """A new file each time: the lesion refuses one it already has."""
    return SimpleUploadedFile("lesion.png", image_bytes(RED, seed=next(_files)), content_type="image/png")


def _page_upload(client, lesion):
    return client.post(reverse("lesion-upload", args=[lesion.pk]), {"images": [_png()], "captured_at": "2024-05-01"})


def _page_batch(client, lesion):
    return client.post(reverse("batch-create"), {"lesion": lesion.pk, "images": [_png()], "captured_at": "2024-05-01"})


def _assert_throttled_page(response) -> None:
    assert response.status_code == 429, response.status_code
    assert 0 < int(response["Retry-After"]) <= 60
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "Too many uploads: at most 2 a minute. Try again in" in html
    assert "<form" in html  # the form again, to send once the wait is over


def test_it_throttles_the_upload_page(two_a_minute, client_for, owner, lesion, run_on_commit) -> None:
    client = client_for(owner)
    with run_on_commit():
        assert [_page_upload(client, lesion).status_code for _ in range(2)] == [302, 302]
    _assert_throttled_page(_page_upload(client, lesion))
    _assert_throttled_page(_page_batch(client, lesion))  # the batch form shares the bucket
    assert LesionImage.objects.count() == 2 and not Batch.objects.exists()
    assert client.get(reverse("lesion-upload", args=[lesion.pk])).status_code == 200  # showing the form is free


def test_it_counts_page_and_api_uploads_in_one_bucket(
    two_a_minute, client_for, api_for, owner, lesion, run_on_commit
) -> None:
    client, api = client_for(owner), api_for(owner)
    with run_on_commit():
        assert _page_upload(client, lesion).status_code == 302
        assert api.post(f"{API}/images/", {"lesion": lesion.pk, "image": _png()}).status_code == 201
    # The API's third upload is refused after one through each door...
    refused = api.post(f"{API}/batches/", {"lesion": lesion.pk, "images": [_png()]})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "throttled"
    # ...and so is the page's.
    _assert_throttled_page(_page_batch(client, lesion))
    assert LesionImage.objects.count() == 2


def test_it_counts_each_user_apart(two_a_minute, client_for, owner, colleague, lesion, run_on_commit) -> None:
    client = client_for(owner)
    with run_on_commit():
        for _ in range(2):
            _page_upload(client, lesion)
    _assert_throttled_page(_page_upload(client, lesion))
    client.force_login(colleague)
    with run_on_commit():
        assert _page_upload(client, lesion).status_code == 302
