"""Shared fixtures of the portal tests (plain helpers and constants: tests/portal/helpers.py).

* A stand-in ONNX model bundle (tiny, deterministic; tests/portal/helpers.py) is built once per
  session and served via the SKINPORTAL_MODEL_DIR setting (and the environment variable, for the
  processes tests start), so the suite never needs the shipped model (tests marked
  `shipped_model` switch back to it).
* Three users as in every test module: `owner` (admin of `org`), `colleague` (clinician in
  `org`), `outsider` (clinician in `other_org`), plus `reader` (read-only in `org`).
* Uploaded files go to a per-test MEDIA_ROOT.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings
from rest_framework.test import APIClient

from diagnosis import services
from diagnosis.models import Lesion, LesionImage, Membership, Organisation, Patient, Role
from ml.inference import reset_classifier
from tests.portal.helpers import GREEN, PASSWORD, RED, REPO_ROOT, build_stand_in_bundle, image_bytes


@pytest.fixture(scope="session")
def django_db_modify_db_settings(tmp_path_factory: pytest.TempPathFactory) -> None:
    """SQLite test databases live in a file, not in memory, so a Celery worker started by a
    test (a separate process) sees the same data. PostgreSQL needs nothing."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        database.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("db") / "test.sqlite3")


@pytest.fixture(scope="session")
def stand_in_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_stand_in_bundle(tmp_path_factory.mktemp("stand-in-model"))


@pytest.fixture(scope="session", autouse=True)
def _serve_stand_in_model(stand_in_model_dir: Path) -> Iterator[None]:
    # The settings serve it in this process; the environment variables in the worker, server and
    # command processes that tests start (their settings read them).
    with (
        pytest.MonkeyPatch.context() as mp,
        override_settings(SKINPORTAL_MODEL_DIR=str(stand_in_model_dir), SKINPORTAL_ORT_THREADS=1),
    ):
        mp.setenv("SKINPORTAL_MODEL_DIR", str(stand_in_model_dir))
        mp.setenv("SKINPORTAL_ORT_THREADS", "1")  # the test machine is small and busy
        reset_classifier()
        yield
    reset_classifier()


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings) -> None:
    """Every portal test creates users; PBKDF2's deliberate slowness (about a second per hash on a
    busy 2-core machine) would dominate the suite. Autouse fixtures run before the user fixtures.
    Tests of password rules and lockouts do not depend on the hash algorithm."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """API throttle counters live in the cache: one test's requests must not count against the next."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def shipped_model(monkeypatch: pytest.MonkeyPatch, settings) -> Iterator[str]:
    """Serve the model named by ml/models/CURRENT (skips while it does not exist yet)."""
    current = REPO_ROOT / "ml" / "models" / "CURRENT"
    if not current.is_file():
        pytest.skip(f"the shipped model is not there yet: {current} does not exist (train and package it first)")
    settings.SKINPORTAL_MODEL_DIR = None
    monkeypatch.delenv("SKINPORTAL_MODEL_DIR", raising=False)
    reset_classifier()
    manifest = json.loads((REPO_ROOT / "ml" / "models" / current.read_text().strip() / "manifest.json").read_text())
    yield str(manifest["version"])
    reset_classifier()


# --- People and data -------------------------------------------------------------------------


@pytest.fixture
def org(db) -> Organisation:
    return Organisation.objects.create(name="Northside Dermatology")


@pytest.fixture
def other_org(db) -> Organisation:
    return Organisation.objects.create(name="Southside Skin Clinic")


def _member(username: str, organisation: Organisation, role: str) -> User:
    user = User.objects.create_user(username=username, password=PASSWORD, email=f"{username}@example.org")
    services.accounts.membership_set(user=user, organisation=organisation, role=role)
    return user


@pytest.fixture
def owner(org) -> User:
    return _member("alice", org, Role.ADMIN)


@pytest.fixture
def colleague(org) -> User:
    return _member("bob", org, Role.CLINICIAN)


@pytest.fixture
def reader(org) -> User:
    return _member("rita", org, Role.READONLY)


@pytest.fixture
def outsider(other_org) -> User:
    return _member("charlie", other_org, Role.CLINICIAN)


@pytest.fixture
def patient(owner, org) -> Patient:
    return services.patients.patient_create(
        user=owner,
        organisation=org,
        external_id="MRN-001",
        name="Ada Lovelace",
        date_of_birth=dt.date(1960, 12, 10),
        sex="female",
    )


@pytest.fixture
def lesion(owner, patient) -> Lesion:
    return services.patients.lesion_create(user=owner, patient=patient, body_site="back", label="Upper back, left")


@pytest.fixture
def run_on_commit(django_capture_on_commit_callbacks) -> Callable[[], AbstractContextManager]:
    """`with run_on_commit(): ...` runs the on_commit callbacks (the Celery send) at the end of the block,
    as a real commit would; tests run inside a transaction that never commits."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def upload(owner, lesion, run_on_commit) -> Callable[..., LesionImage]:
    """Upload one image through the service, classification included."""

    def _upload(
        data: bytes | None = None,
        *,
        user: User | None = None,
        target: Lesion | None = None,
        captured_at: dt.date | None = None,
    ) -> LesionImage:
        with run_on_commit():
            (image,) = services.uploads.lesion_image_upload(
                user=user or owner,
                lesion=target or lesion,
                files=[services.uploads.ImageUpload(name="photo.png", data=data or image_bytes(RED))],
                captured_at=captured_at,
            )
        return image

    return _upload


@pytest.fixture
def victim(owner, colleague, org, patient, lesion, upload, run_on_commit) -> dict[str, int]:
    """One object of every kind in `org` (the organisation an outsider attacks), by URL keyword."""
    image = upload(image_bytes(RED))
    review = services.reviews.review_create(user=colleague, image=image, diagnosis="mel", comment="looks irregular")
    with run_on_commit():
        batch = services.batches.batch_create(
            user=owner, lesion=lesion, files=[services.uploads.ImageUpload(name="b.png", data=image_bytes(GREEN))]
        )
    return {
        "organisation_id": org.pk,
        "membership_id": Membership.objects.get(user=owner, organisation=org).pk,
        "patient_id": patient.pk,
        "lesion_id": lesion.pk,
        "image_id": image.pk,
        "batch_id": batch.pk,
        "classification_id": image.classifications.get().pk,
        "review_id": review.pk,
    }


@pytest.fixture
def client_for(client: Client) -> Callable[[User], Client]:
    def _login(user: User) -> Client:
        client.force_login(user)
        return client

    return _login


@pytest.fixture
def api_for() -> Callable[[User], APIClient]:
    keys: dict[int, str] = {}  # one API token per user and test (a user may hold only so many)

    def _api(user: User | None) -> APIClient:
        api = APIClient()
        if user is not None:
            if user.pk not in keys:
                keys[user.pk] = services.accounts.api_token_create(user=user).key
            api.credentials(HTTP_AUTHORIZATION=f"Token {keys[user.pk]}")
        return api

    return _api


# Real-browser tests (test_browser*.py) take their page from here; tests/portal/browser.py says how.
from tests.portal.browser import browser_page  # noqa: E402, F401
