"""API rate limits: token creation per client address, uploads per user; 429 with Retry-After in
the API's error format. (conftest clears the cache, where the counters live, around each test.)"""

from __future__ import annotations

import itertools
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from diagnosis.api.throttling import ScopedWriteRateThrottle
from diagnosis.models import LesionImage
from tests.portal.helpers import PASSWORD, image_bytes

pytestmark = pytest.mark.django_db

API = "/api/v1"
TOKEN = f"{API}/auth/token/"


@pytest.fixture
def tiny_rates(settings) -> None:
    """DRF reloads its settings on a change; ScopedWriteRateThrottle reads the rates per request."""
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"token": "3/minute", "uploads": "2/minute"},
    }


def _token(api: APIClient, **extra: str):
    return api.post(TOKEN, {"username": "alice", "password": PASSWORD}, format="json", **extra)


def _assert_throttled(response) -> int:
    assert response.status_code == 429, response.content
    retry_after = int(response["Retry-After"])
    assert 0 < retry_after <= 60
    error = response.json()["error"]
    assert error["status"] == 429 and error["code"] == "throttled"
    assert f"{retry_after} second" in error["message"]
    return retry_after


_files = itertools.count()


def _png() -> SimpleUploadedFile:
    """A new file each time: the lesion refuses one it already has."""
    return SimpleUploadedFile("lesion.png", image_bytes(seed=next(_files)), content_type="image/png")


def test_it_has_rates_for_tokens_and_uploads_by_default(settings):
    assert settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] == {"token": "10/minute", "uploads": "60/minute"}


def test_it_throttles_token_creation_per_client_address(tiny_rates, owner):
    api = APIClient()
    assert [_token(api).status_code for _ in range(3)] == [200, 200, 200]
    _assert_throttled(_token(api))
    # Failed attempts count too: the rate is about guessing, not only about success.
    assert api.post(TOKEN, {"username": "alice", "password": "x"}, format="json").status_code == 429
    assert _token(APIClient(), REMOTE_ADDR="10.0.0.9").status_code == 200  # another address


def test_it_ignores_a_forged_forwarded_for_header(tiny_rates, owner):
    api = APIClient()
    for _ in range(3):
        _token(api)
    for forged in ["1.2.3.4", "5.6.7.8, 9.9.9.9"]:
        _assert_throttled(_token(api, HTTP_X_FORWARDED_FOR=forged))


def test_it_counts_the_forwarded_client_behind_a_trusted_proxy(tiny_rates, settings, owner):
    settings.SKINPORTAL_TRUSTED_PROXIES = 1
    settings.SKINPORTAL_TRUSTED_PROXY_ADDRESSES = ["10.0.0.2"]
    api = APIClient(REMOTE_ADDR="10.0.0.2")  # the proxy
    for _ in range(3):
        assert _token(api, HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 200
    _assert_throttled(_token(api, HTTP_X_FORWARDED_FOR="203.0.113.7"))
    assert _token(api, HTTP_X_FORWARDED_FOR="198.51.100.4").status_code == 200


def test_it_allows_requests_again_after_the_window(tiny_rates, owner, monkeypatch):
    api = APIClient()
    for _ in range(3):
        _token(api)
    retry_after = _assert_throttled(_token(api))
    start = time.time()
    monkeypatch.setattr(ScopedWriteRateThrottle, "timer", lambda self: start + retry_after + 1)
    assert _token(api).status_code == 200


def test_it_throttles_uploads_per_user_and_only_uploads(tiny_rates, api_for, owner, colleague, lesion):
    api = api_for(owner)
    for _ in range(2):
        assert api.post(f"{API}/images/", {"lesion": lesion.pk, "image": _png()}).status_code == 201
    _assert_throttled(api.post(f"{API}/images/", {"lesion": lesion.pk, "image": _png()}))
    # Image and batch uploads share the scope; reading is not throttled.
    _assert_throttled(api.post(f"{API}/batches/", {"lesion": lesion.pk, "images": [_png()]}))
    assert api.get(f"{API}/images/").status_code == 200
    assert api.get(f"{API}/batches/").status_code == 200
    assert LesionImage.objects.count() == 2
    # Another user has their own count.
    assert api_for(colleague).post(f"{API}/images/", {"lesion": lesion.pk, "image": _png()}).status_code == 201


def test_it_throttles_batch_uploads(tiny_rates, api_for, owner, lesion):
    api = api_for(owner)
    for _ in range(2):
        assert api.post(f"{API}/batches/", {"lesion": lesion.pk, "images": [_png()]}).status_code == 201
    _assert_throttled(api.post(f"{API}/batches/", {"lesion": lesion.pk, "images": [_png()]}))


def test_it_does_not_throttle_other_writes(tiny_rates, api_for, owner, patient):
    api = api_for(owner)
    for number in range(5):
        response = api.post(f"{API}/lesions/", {"patient": patient.pk, "label": f"Spot {number}", "body_site": "back"})
        assert response.status_code == 201
