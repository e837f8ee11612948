"""The readiness probe, /readyz: what it checks (database, cache, broker, model), and who sees why.

Load balancers call it without a login, over plain HTTP inside the network, so an anonymous
caller gets the status alone; the checks' details (the database engine, the broker, the model
version, file paths on a failure) go to staff and to a monitor holding SKINPORTAL_MONITORING_TOKEN.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.portal.helpers import PASSWORD, build_stand_in_bundle

pytestmark = pytest.mark.django_db

MONITORING_TOKEN = "m0nitor-" + "x" * 40


@pytest.fixture
def monitor(settings) -> Client:
    """A monitoring system: the configured token in `Authorization: Bearer ...`."""
    settings.SKINPORTAL_MONITORING_TOKEN = MONITORING_TOKEN
    return Client(HTTP_AUTHORIZATION=f"Bearer {MONITORING_TOKEN}")


@pytest.fixture
def staff_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_user("sam", password=PASSWORD, is_staff=True))
    return client


def _no_model(settings, tmp_path) -> str:
    missing = tmp_path / "secret-place" / "nowhere"
    settings.SKINPORTAL_MODEL_DIR = str(missing)
    return str(missing)


# --- Anyone: the status, nothing else -------------------------------------------------------------


def test_it_tells_an_anonymous_caller_only_the_status(client, settings, tmp_path):
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    path = _no_model(settings, tmp_path)
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.json() == {"status": "not ready"}
    body = not_ready.content.decode()
    for detail in ("sqlite", "embedded", "manifest", path, str(tmp_path), "stand-in"):
        assert detail not in body, detail


def test_it_shows_the_details_to_a_monitor_with_the_token_and_to_staff(monitor, staff_client, settings):
    for caller in (monitor, staff_client):
        body = caller.get("/readyz").json()
        assert body["status"] == "ready" and set(body["checks"]) == {"database", "cache", "broker", "model"}
        assert all(check["ok"] for check in body["checks"].values())


@pytest.mark.parametrize(
    "header",
    ["Bearer wrong-token-" + "x" * 40, "Bearer ", f"Token {MONITORING_TOKEN}", MONITORING_TOKEN, "Bearer é"],
)
def test_it_keeps_the_details_from_a_wrong_token_or_a_member(header, monitor, client_for, colleague):
    assert Client(HTTP_AUTHORIZATION=header).get("/readyz").json() == {"status": "ready"}
    assert client_for(colleague).get("/readyz").json() == {"status": "ready"}  # a clinician is not staff


def test_it_shows_no_details_when_no_token_is_configured(settings):
    settings.SKINPORTAL_MONITORING_TOKEN = None
    assert Client(HTTP_AUTHORIZATION="Bearer ").get("/readyz").json() == {"status": "ready"}


# --- What it checks (seen with the token) ---------------------------------------------------------


def test_it_is_not_ready_without_the_model(monitor, settings, tmp_path):
    _no_model(settings, tmp_path)
    response = monitor.get("/readyz")
    assert response.status_code == 503
    model = response.json()["checks"]["model"]
    assert model["ok"] is False and "manifest not found" in model["detail"]


def test_it_is_not_ready_with_a_tampered_model(monitor, settings, tmp_path):
    bundle = build_stand_in_bundle(tmp_path / "tampered")
    with (bundle / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    settings.SKINPORTAL_MODEL_DIR = str(bundle)
    response = monitor.get("/readyz")
    assert response.status_code == 503 and "sha256" in response.json()["checks"]["model"]["detail"]


def test_it_is_not_ready_without_the_broker(monitor, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    from skinportal.celery import app

    saved = app.conf.broker_url, app.conf.broker_connection_timeout
    app.conf.broker_url, app.conf.broker_connection_timeout = "redis://127.0.0.1:1/0", 1  # nothing listens on port 1
    try:
        response = monitor.get("/readyz")
    finally:
        app.conf.broker_url, app.conf.broker_connection_timeout = saved
    assert response.status_code == 503
    broker = response.json()["checks"]["broker"]
    assert broker["ok"] is False and "broker unreachable" in broker["detail"]


def test_it_is_not_ready_when_the_database_cache_has_no_table(monitor, settings):
    """CACHE_URL=dbcache://... without its table (`migrate` creates it): every throttled request
    would fail, so the node is not ready."""
    from django.test import override_settings

    missing = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "no_such_table"}}
    with override_settings(CACHES=missing):  # Django rebuilds its cache handlers on the change
        response = monitor.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["cache"]["ok"] is False
