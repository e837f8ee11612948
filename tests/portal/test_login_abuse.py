"""Login abuse (issue 13): a lockout forced from another site's page (5), parallel guesses that
outran the lockout count (6), a forged line in the server log (10) and unlimited password-reset
requests (12, part).

The race is tried with real threads, each with its own database connection: on PostgreSQL
(DATABASE_URL, as in .ci/run) the per-username advisory lock serialises them, on SQLite the
write lock of BEGIN IMMEDIATE does.
"""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from axes.models import AccessAttempt
from django.conf import settings as django_settings
from django.contrib.auth import authenticate
from django.contrib.auth.base_user import AbstractBaseUser
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.test import Client, RequestFactory
from django.urls import reverse
from rest_framework.test import APIClient

from skinportal import accounts
from skinportal.logging import EscapingFormatter, escape_control
from tests.portal.helpers import PASSWORD

TOKEN = "/api/v1/auth/token/"
EVIL = "https://evil.example"


# --- Defect 5: a lockout forced from another site's page --------------------------------------


def _form_post(client: Client, **extra: str):
    """What a hidden <form method=post> on another site sends: form-encoded, with its Origin."""
    body = urlencode({"username": "alice", "password": "guess"})
    return client.post(TOKEN, body, content_type="application/x-www-form-urlencoded", **extra)


@pytest.mark.django_db
def test_it_keeps_cross_site_token_requests_from_counting_towards_a_lockout(owner):
    client = Client()
    attempts = [
        _form_post(client, HTTP_ORIGIN=EVIL),  # a hidden form
        _form_post(client),  # the same, from a browser that sent no Origin
        client.post(TOKEN, '{"username": "alice", "password": "guess"}', content_type="text/plain", HTTP_ORIGIN=EVIL),
        client.post(  # fetch(..., {mode: "no-cors"}) cannot send JSON; with CORS the preflight fails, but still:
            TOKEN, {"username": "alice", "password": "guess"}, content_type="application/json", HTTP_ORIGIN=EVIL
        ),
        client.post(
            TOKEN,
            {"username": "alice", "password": "guess"},
            content_type="application/json",
            HTTP_SEC_FETCH_SITE="cross-site",
        ),
        client.post(
            TOKEN, {"username": "alice", "password": "guess"}, content_type="application/json", HTTP_ORIGIN="null"
        ),
    ]
    # Another Origin: 403 before anything else; no Origin, but a form body: 415.
    assert [r.status_code for r in attempts] == [403, 415, 403, 403, 403, 403]
    for response in attempts:  # every refusal in the API's error format, none a lockout
        error = response.json()["error"]
        assert error["code"] in ("unsupported_media_type", "cross_site"), error
    assert attempts[3].json()["error"]["message"].startswith("A token request from another site's page is refused")
    assert not AccessAttempt.objects.exists()
    # Five more from the attacker's page change nothing either; the user's own script still gets in.
    for _ in range(5):
        assert _form_post(client, HTTP_ORIGIN=EVIL).status_code == 403
    response = APIClient().post(TOKEN, {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 200 and response.json()["token"]


@pytest.mark.django_db
def test_it_still_counts_wrong_passwords_from_scripts_and_from_this_site(owner, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://skin.example"]
    own_pages = [{}, {"HTTP_ORIGIN": "http://testserver"}, {"HTTP_ORIGIN": "https://skin.example"}]
    statuses = [
        APIClient().post(TOKEN, {"username": "alice", "password": "nope"}, format="json", **extra).status_code
        for extra in own_pages + [{"HTTP_SEC_FETCH_SITE": "same-origin"}, {"HTTP_SEC_FETCH_SITE": "none"}]
    ]
    assert statuses == [400, 400, 400, 400, 429]  # the fifth failure locks, as on the login page


def test_it_tells_a_cross_site_request_from_a_script():
    factory = RequestFactory()
    assert not accounts.request_is_cross_site(factory.post(TOKEN))
    assert not accounts.request_is_cross_site(factory.post(TOKEN, HTTP_ORIGIN="http://testserver"))
    assert accounts.request_is_cross_site(factory.post(TOKEN, HTTP_ORIGIN="http://testserver.evil.example"))
    assert accounts.request_is_cross_site(factory.post(TOKEN, HTTP_ORIGIN="https://testserver"))  # another scheme
    assert accounts.request_is_cross_site(factory.post(TOKEN, HTTP_SEC_FETCH_SITE="same-site"))


@pytest.mark.django_db
def test_it_documents_the_token_endpoint_as_json_only(owner, api_for):
    schema = api_for(owner).get("/api/v1/schema/", {"format": "json"}).json()
    operation = schema["paths"][TOKEN]["post"]
    assert list(operation["requestBody"]["content"]) == ["application/json"]
    assert {"400", "403", "409", "415", "429"} <= set(operation["responses"])


# --- Defect 6: parallel guesses outran the lockout count ---------------------------------------


class PasswordChecks:
    """Records every password check in the order they finish, and makes each take a while (as a
    real PBKDF2 check does), so unserialised attempts overlap for sure."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, seconds: float = 0.05) -> None:
        self.results: list[bool] = []
        self._lock = threading.Lock()
        original = AbstractBaseUser.check_password

        def check_password(user: AbstractBaseUser, raw_password: str) -> bool:
            time.sleep(seconds)
            result = original(user, raw_password)
            with self._lock:
                self.results.append(result)
            return result

        monkeypatch.setattr(AbstractBaseUser, "check_password", check_password)

    def checked_while_locked(self, limit: int) -> list[int]:
        """Positions of checks made while `limit` failures were counted (a success resets the count)."""
        failures, late = 0, []
        for position, ok in enumerate(self.results):
            if failures >= limit:
                late.append(position)
            failures = 0 if ok else failures + 1
        return late


def _in_parallel(passwords: list[str], post) -> list[int]:
    """POST one login per password, all released at once from their own threads."""
    start = threading.Barrier(len(passwords))
    statuses: list[int] = [0] * len(passwords)
    errors: list[str] = []

    def attempt(index: int, password: str) -> None:
        try:
            start.wait()
            statuses[index] = post(password)
        except Exception:  # noqa: BLE001  (reported below, with the traceback)
            errors.append(traceback.format_exc())
        finally:
            connections.close_all()  # this thread's connection: the test database is dropped later

    threads = [threading.Thread(target=attempt, args=(i, p)) for i, p in enumerate(passwords)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors[0]
    return statuses


@pytest.mark.django_db(transaction=True)
def test_it_counts_thirty_parallel_guesses_one_after_another(owner, monkeypatch):
    limit = django_settings.AXES_FAILURE_LIMIT
    checks = PasswordChecks(monkeypatch)
    passwords = [f"wrong-guess-{i}" for i in range(29)] + [PASSWORD]

    def log_in(password: str) -> int:
        return Client().post(reverse("login"), {"username": "alice", "password": password}).status_code

    statuses = _in_parallel(passwords, log_in)
    assert checks.checked_while_locked(limit) == [], checks.results  # never a check past the limit
    got_in = statuses[-1] == 302
    # The right password got in only if fewer than `limit` failures were counted before it.
    assert got_in == (True in checks.results)
    wrong_checked = checks.results.count(False)
    assert wrong_checked <= (2 * limit - 1 if got_in else limit), checks.results
    assert set(statuses[:-1]) <= {200, 429}
    # Afterwards the username is locked from this address, the right password included.
    assert Client().post(reverse("login"), {"username": "alice", "password": PASSWORD}).status_code == 429


@pytest.mark.django_db(transaction=True)
def test_it_counts_parallel_token_guesses_one_after_another(owner, monkeypatch, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"token": "1000/minute"}}
    checks = PasswordChecks(monkeypatch)

    def token(password: str) -> int:
        return APIClient().post(TOKEN, {"username": "alice", "password": password}, format="json").status_code

    statuses = _in_parallel([f"wrong-guess-{i}" for i in range(12)], token)
    assert checks.results == [False] * django_settings.AXES_FAILURE_LIMIT
    assert sorted(statuses) == [400] * 4 + [429] * 8


@pytest.mark.django_db
def test_it_refuses_a_password_check_outside_the_lock(owner):
    request = RequestFactory().post("/accounts/login/")
    with pytest.raises(ImproperlyConfigured, match="login_authenticate"):
        authenticate(request, username="alice", password=PASSWORD)
    assert accounts.login_authenticate(request, username="alice", password=PASSWORD) == owner


@pytest.mark.django_db
def test_it_serialises_the_admin_login_and_the_reauthentication_too(owner, patient, client):
    admin = Client()
    for _ in range(5):
        response = admin.post(reverse("admin:login"), {"username": "alice", "password": "nope"})
    assert response.status_code == 429  # the admin login counted through the same lock
    AccessAttempt.objects.all().delete()
    client.force_login(owner)
    statuses = [
        client.post(reverse("patient-delete", args=[patient.pk]), {"password": "nope"}).status_code for _ in range(5)
    ]
    assert statuses == [400, 400, 400, 400, 429]


# --- Defect 10: a forged line in the server log -----------------------------------------------

FORGED = "2026-01-01 00:00:00,000 INFO django.contrib.auth: User admin logged in from 10.0.0.1"
LINE_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


@pytest.fixture
def server_log() -> Iterator[io.StringIO]:
    """What the portal's console handler (settings.LOGGING) writes, captured."""
    handlers = [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler]
    assert len(handlers) == 1, handlers
    stream = io.StringIO()
    previous = handlers[0].setStream(stream)
    try:
        yield stream
    finally:
        handlers[0].setStream(previous)


@pytest.mark.django_db
def test_it_escapes_a_forged_line_in_a_failed_login_username(client, owner, server_log):
    for username in (f"alice\n{FORGED}", f"alice\r\n{FORGED}", f"alice\u2028{FORGED}", f"alice\x1b[2K\r{FORGED}"):
        response = client.post(reverse("login"), {"username": username, "password": "nope"})
        assert response.status_code == 200
    APIClient().post(TOKEN, {"username": f"bob\n{FORGED}", "password": "nope"}, format="json")
    text = server_log.getvalue()
    assert "AXES: New login failure" in text and "\\n" + FORGED in text  # logged, escaped
    lines = text.split("\n")
    assert not [line for line in lines if line.startswith(FORGED[:20])], text
    assert all(LINE_START.match(line) or line.startswith("    ") or not line for line in lines), text
    assert "\x1b" not in text and "\u2028" not in text and "\r" not in text


def test_it_indents_tracebacks_and_escapes_every_control_character():
    formatter = EscapingFormatter("%(levelname)s %(name)s: %(message)s")
    try:
        raise ValueError(f"bad name x\n{FORGED}")
    except ValueError:
        record = logging.getLogger("t").makeRecord("t", logging.ERROR, __file__, 1, "failed for %s", ("a\nb",), None)
        record.exc_info = sys.exc_info()
    text = formatter.format(record)
    first, *rest = text.split("\n")
    assert first == "ERROR t: failed for a\\nb"
    assert rest and all(line.startswith("    ") for line in rest)
    assert any(FORGED in line for line in rest)
    assert record.exc_text is None  # not cached on the record for the other handlers
    assert escape_control("tab\tdel\x7f c1\x85 nul\x00") == "tab\\tdel\\x7f c1\\x85 nul\\x00"


def test_it_sends_djangos_own_loggers_through_the_escaping_handler():
    config = django_settings.LOGGING
    assert config["formatters"]["plain"]["()"] == "skinportal.logging.EscapingFormatter"
    for name in ("django", "django.server", "django.request", "axes.handlers.database"):
        logger = logging.getLogger(name)
        assert not logger.handlers and logger.propagate, name


# --- Defect 12 (part): password-reset requests --------------------------------------------------


def _reset(client: Client, email: str):
    return client.post(reverse("password_reset"), {"email": email})


def _page_text(response, email: str) -> str:
    """The page, less its CSRF token and the address the visitor typed (the form shows it again)."""
    text = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", response.content.decode())
    return text.replace(email, "EMAIL")


@pytest.mark.django_db
def test_it_limits_password_reset_requests_per_address_and_per_account(client, owner, settings):
    assert (settings.SKINPORTAL_THROTTLE_PASSWORD_RESET, settings.SKINPORTAL_THROTTLE_PASSWORD_RESET_EMAIL) == (
        "5/hour",
        "3/hour",
    )
    # Per account: the victim's mailbox gets three links an hour, however many addresses ask.
    assert [_reset(Client(REMOTE_ADDR=f"10.0.0.{i}"), "alice@example.org").status_code for i in range(3)] == [302] * 3
    refused = _reset(client, "ALICE@example.org")
    assert refused.status_code == 429 and 0 < int(refused["Retry-After"]) <= 3600
    assert "Too many password reset requests: try again in" in refused.content.decode()
    assert len(mail.outbox) == 3
    # Per address: five requests an hour, whichever e-mail addresses they name.
    for i in range(5):
        assert _reset(client, f"nobody{i}@example.org").status_code == 302
    assert _reset(client, "nobody9@example.org").status_code == 429
    assert _reset(Client(REMOTE_ADDR="10.0.0.50"), "nobody9@example.org").status_code == 302


@pytest.mark.django_db
def test_it_answers_a_throttled_reset_the_same_whether_the_account_exists_or_not(owner):
    for email in ("alice@example.org", "nobody@example.org"):
        for i in range(3):
            assert _reset(Client(REMOTE_ADDR=f"10.1.0.{i}"), email).status_code == 302
    known = _reset(Client(REMOTE_ADDR="10.2.0.1"), "alice@example.org")
    unknown = _reset(Client(REMOTE_ADDR="10.2.0.2"), "nobody@example.org")
    assert known.status_code == unknown.status_code == 429
    assert _page_text(known, "alice@example.org") == _page_text(unknown, "nobody@example.org")
    assert len(mail.outbox) == 3  # links went to the account only; the unknown address got none


@pytest.mark.django_db
def test_it_refuses_a_bad_reset_rate_setting():
    from tests.portal.test_settings import _settings_in_subprocess

    result = _settings_in_subprocess({"SKINPORTAL_THROTTLE_PASSWORD_RESET": "often"}, "settings.DEBUG")
    assert result.returncode != 0 and "SKINPORTAL_THROTTLE_PASSWORD_RESET must look like 10/minute" in result.stderr
