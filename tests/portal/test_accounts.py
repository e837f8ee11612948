"""Accounts and sessions: django-axes lockout, password rules, session rotation, idle timeout and
absolute lifetime, cookie flags, and the settings behind them."""

from __future__ import annotations

import datetime as dt
import io
import logging
import time
from collections.abc import Callable

import pytest
from axes.models import AccessAttempt
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.contrib.sessions.backends.db import SessionStore
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db.models import F
from django.test import Client, RequestFactory
from django.urls import reverse
from rest_framework.test import APIClient

from diagnosis import services
from diagnosis.models import Organisation
from skinportal import accounts, sessions
from tests.portal.helpers import PASSWORD
from tests.portal.test_settings import _settings_in_subprocess

pytestmark = pytest.mark.django_db

API = "/api/v1"


def _log_in(client: Client, username: str = "alice", password: str = PASSWORD, **extra: str):
    return client.post(reverse("login"), {"username": username, "password": password}, **extra)


def _fail(client: Client, times: int, username: str = "alice", **extra: str) -> list[int]:
    return [_log_in(client, username, "not-the-password", **extra).status_code for _ in range(times)]


# --- Brute-force lockout (django-axes) -------------------------------------------------------


def test_it_locks_out_a_username_after_repeated_failures(client, owner, caplog):
    assert django_settings.AXES_FAILURE_LIMIT == 5
    with caplog.at_level(logging.INFO):
        statuses = _fail(client, 5)
    assert statuses == [200, 200, 200, 200, 429]  # the fifth failure locks
    response = _log_in(client)  # even the right password, now
    assert response.status_code == 429
    assert "registration/locked_out.html" in [t.name for t in response.templates]
    html = response.content.decode()
    assert "Too many failed login attempts" in html and "15 minutes" in html and "alice" in html
    assert response["Retry-After"] == "900"
    assert client.get(reverse("dashboard")).status_code == 302  # not logged in
    lockouts = [r for r in caplog.records if r.name == "axes.handlers.database" and "Locking out" in r.getMessage()]
    assert lockouts and lockouts[0].levelno == logging.WARNING
    assert 'username: "alice"' in lockouts[0].getMessage() and 'ip_address: "127.0.0.1"' in lockouts[0].getMessage()
    assert "not-the-password" not in caplog.text


def test_it_sends_the_lockout_log_to_the_console_handler():
    logger = logging.getLogger("axes.handlers.database")
    assert logger.isEnabledFor(logging.WARNING) and logger.isEnabledFor(logging.INFO)
    assert django_settings.LOGGING["root"]["handlers"] == ["console"] and logger.propagate


def test_it_keys_the_lockout_on_username_and_address(client, owner, colleague):
    _fail(client, 5)
    assert _log_in(client).status_code == 429
    # The same user from another address, and another user from the same address, log in.
    assert _log_in(Client(), REMOTE_ADDR="10.0.0.9").status_code == 302
    assert _log_in(Client(), "bob").status_code == 302


def test_it_unlocks_after_the_cool_off(client, owner):
    _fail(client, 5)
    assert _log_in(client).status_code == 429
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - dt.timedelta(minutes=16))
    assert _log_in(client).status_code == 302


def test_it_forgets_failures_after_a_successful_login(client, owner):
    _fail(client, 4)
    assert _log_in(client).status_code == 302
    assert not AccessAttempt.objects.exists()
    client.post(reverse("logout"))
    assert _fail(client, 4) == [200] * 4  # counting starts again


def test_it_lets_an_administrator_unlock_in_the_admin(client, owner, client_for):
    _fail(client, 5)
    attempt = AccessAttempt.objects.get(username="alice")
    assert attempt.failures_since_start == 5
    staff = User.objects.create_superuser("root", "root@example.org", "a-long-admin-passphrase")
    admin = client_for(staff)
    listing = admin.get(reverse("admin:axes_accessattempt_changelist"))
    assert listing.status_code == 200 and "alice" in listing.content.decode()
    response = admin.post(reverse("admin:axes_accessattempt_delete", args=[attempt.pk]), {"post": "yes"})
    assert response.status_code == 302 and not AccessAttempt.objects.exists()
    assert _log_in(Client()).status_code == 302


def test_it_lets_an_operator_unlock_with_a_command(client, owner):
    _fail(client, 5)
    call_command("axes_reset_username", "alice", stdout=io.StringIO())
    assert _log_in(client).status_code == 302


def test_it_answers_a_locked_out_api_token_request_in_the_error_format(owner):
    api = APIClient()
    url = f"{API}/auth/token/"
    statuses = [api.post(url, {"username": "alice", "password": "nope"}, format="json").status_code for _ in range(5)]
    assert statuses == [400, 400, 400, 400, 429]
    response = api.post(url, {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 429 and response["Content-Type"] == "application/json"
    assert response["Retry-After"] == "900"
    error = response.json()["error"]
    assert error["status"] == 429 and error["code"] == "locked_out" and "too many login attempts" in error["message"]
    # The API and the login page share the count: the page is locked too.
    assert _log_in(Client()).status_code == 429


def test_it_locks_until_an_administrator_unlocks_when_there_is_no_cool_off(client, owner, settings):
    settings.AXES_COOLOFF_TIME = None
    _fail(client, 5)
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - dt.timedelta(days=30))
    response = _log_in(client)
    assert response.status_code == 429 and "until an administrator unlocks it" in response.content.decode()
    assert "Retry-After" not in response


@pytest.mark.parametrize(
    ("proxies", "meta", "expected"),
    [
        (0, {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "6.6.6.6"}, "10.0.0.2"),  # a forged header
        (1, {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 203.0.113.7"}, "203.0.113.7"),
        (2, {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "203.0.113.7, 10.0.0.3"}, "203.0.113.7"),
        (1, {"REMOTE_ADDR": "10.0.0.2"}, "10.0.0.2"),  # no header: the direct peer
    ],
)
def test_it_reads_the_client_address_behind_trusted_proxies(settings, proxies, meta, expected):
    settings.SKINPORTAL_TRUSTED_PROXIES = proxies
    settings.SKINPORTAL_TRUSTED_PROXY_ADDRESSES = ["10.0.0.0/24"]  # the proxies' addresses (tests/portal/test_proxy_trust.py)
    request = RequestFactory().post("/accounts/login/", **meta)
    assert accounts.client_ip(request) == expected


def test_it_locks_out_the_forwarded_client_not_the_proxy(client, owner, settings):
    settings.SKINPORTAL_TRUSTED_PROXIES = 1
    _fail(client, 5, HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert _log_in(client, HTTP_X_FORWARDED_FOR="203.0.113.7").status_code == 429
    assert _log_in(Client(), HTTP_X_FORWARDED_FOR="198.51.100.4").status_code == 302


# --- Passwords -----------------------------------------------------------------------------


def test_it_requires_passwords_of_at_least_twelve_characters(owner):
    assert django_settings.PASSWORD_MIN_LENGTH == 12
    with pytest.raises(ValidationError, match="at least 12 characters"):
        validate_password("Tr0ub4dor&3x"[:11], user=owner)
    validate_password("Tr0ub4dor&3x", user=owner)


def test_it_accepts_the_test_and_demo_passwords():
    for password in [PASSWORD, "tardis-blue-box-1963", "another-long-one-42", "a-new-long-passphrase-1"]:
        validate_password(password)
    out = io.StringIO()
    call_command("demo", stdout=out)  # a random password, validated by clinician_create
    assert "Password:" in out.getvalue()


def test_it_refuses_a_short_new_password_on_the_change_page(client_for, owner):
    response = client_for(owner).post(
        reverse("password_change"),
        {"old_password": PASSWORD, "new_password1": "sh0rt-Pass1", "new_password2": "sh0rt-Pass1"},
    )
    assert response.status_code == 200 and "at least 12 characters" in response.content.decode()
    owner.refresh_from_db()
    assert owner.check_password(PASSWORD)


# --- Sessions ------------------------------------------------------------------------------


class Clock:
    """Stands in for the `time` module inside skinportal.sessions."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(sessions, "time", fake)
    return fake


def test_it_gives_the_session_a_new_key_at_login(client, owner):
    session = client.session  # an anonymous session, as a visitor (or an attacker fixing one) has
    session["visited"] = True
    session.save()
    before = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    assert _log_in(client).status_code == 302
    after = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    assert before != after
    assert not SessionStore().exists(before)  # the old key is gone, not just unused
    assert client.get(reverse("dashboard")).status_code == 200


def test_it_marks_the_cookies_httponly_samesite_and_for_this_browser_session_only(client, owner):
    csrf_cookie = client.get(reverse("login")).cookies[django_settings.CSRF_COOKIE_NAME]
    assert csrf_cookie["httponly"] is True and csrf_cookie["samesite"] == "Lax"
    session_cookie = _log_in(client).cookies[django_settings.SESSION_COOKIE_NAME]
    assert session_cookie["httponly"] is True and session_cookie["samesite"] == "Lax"
    assert session_cookie["max-age"] == "" and session_cookie["expires"] == ""  # gone when the browser closes
    assert not session_cookie["secure"]  # development; production: see the settings test below


def test_it_logs_out_an_idle_session(client, owner, clock):
    idle = django_settings.SKINPORTAL_SESSION_IDLE_TIMEOUT
    assert idle == 30 * 60
    _log_in(client)
    for _ in range(3):  # activity keeps it alive well past one idle period
        clock.advance(idle - 60)
        assert client.get(reverse("dashboard")).status_code == 200
    clock.advance(idle)
    response = client.get(reverse("patient-list"))
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={reverse('patient-list')}"
    html = client.get(response["Location"]).content.decode()
    assert "logged out after 30 minutes without activity" in html
    clock.advance(-idle)  # the session itself is gone, not just judged too old
    assert client.get(reverse("dashboard")).status_code == 302


def test_it_ends_a_session_at_its_absolute_lifetime(client, owner, clock, settings):
    settings.SKINPORTAL_SESSION_MAX_AGE = 3 * 3600
    _log_in(client)
    step = 25 * 60
    elapsed = 0
    while elapsed + step < settings.SKINPORTAL_SESSION_MAX_AGE:
        clock.advance(step)
        elapsed += step
        assert client.get(reverse("dashboard")).status_code == 200, elapsed
    clock.advance(step)
    response = client.get(reverse("dashboard"), follow=True)
    assert response.redirect_chain[0][0].startswith(reverse("login"))
    assert "maximum length of 3 hours" in response.content.decode()


def test_it_starts_the_clocks_for_a_session_without_them(client, owner, clock):
    client.force_login(owner)
    session = client.session
    for key in (sessions.LOGIN_AT, sessions.SEEN_AT):
        session.pop(key, None)
    session.save()
    assert client.get(reverse("dashboard")).status_code == 200
    assert client.session[sessions.LOGIN_AT] == clock.now
    clock.advance(django_settings.SKINPORTAL_SESSION_IDLE_TIMEOUT + 1)
    assert client.get(reverse("dashboard")).status_code == 302


def test_it_answers_an_expired_api_session_with_401_in_the_error_format(client, owner, clock):
    client.force_login(owner)
    assert client.get(f"{API}/me/").status_code == 200
    clock.advance(django_settings.SKINPORTAL_SESSION_IDLE_TIMEOUT + 1)
    response = client.get(f"{API}/me/")
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
    error = response.json()["error"]
    assert error["code"] == "session_expired" and "without activity" in error["message"]
    clock.advance(-django_settings.SKINPORTAL_SESSION_IDLE_TIMEOUT)
    assert client.get(f"{API}/me/").status_code in (401, 403)  # logged out for good


def test_it_lets_the_token_decide_when_a_stale_session_cookie_rides_along(
    api_for: Callable[..., APIClient], owner, clock
):
    api = api_for(owner)
    api.force_login(owner)
    clock.advance(django_settings.SKINPORTAL_SESSION_IDLE_TIMEOUT + 1)
    response = api.get(f"{API}/me/")
    assert response.status_code == 200 and response.json()["username"] == "alice"


# --- Usernames (issue 13, defect 8) --------------------------------------------------------

FORMULA_USERNAMES = ['=HYPERLINK("http://evil.example","Click")', "=1+1", "+cmd", "-2+3", "@SUM(A1)", "x" * 151, "a b"]


def test_it_refuses_a_formula_username_in_createclinician_and_the_services(db):
    for username in FORMULA_USERNAMES:
        with pytest.raises(CommandError, match="A username has 1 to 150 letters"):
            call_command(
                "createclinician", "--org", "Formula Clinic", f"--username={username}", "--password", PASSWORD,
                stdout=io.StringIO(),
            )  # fmt: skip
        with pytest.raises(ValidationError) as refused:
            services.accounts.clinician_create(organisation_name="Formula Clinic", username=username, password=PASSWORD)
        assert "username" in refused.value.message_dict
    assert not User.objects.exists() and not Organisation.objects.exists()  # nothing written
    for username in ("dr_who", "a.b@clinic", "jane-doe", "O'Brien"[:1] + "brien", "zoë"):
        services.accounts.clinician_create(organisation_name="Formula Clinic", username=username, password=PASSWORD)
    assert User.objects.count() == 5


def test_it_keeps_updating_a_login_created_before_the_rule(db):
    User.objects.create_user("-legacy", password=PASSWORD)
    account = services.accounts.clinician_create(organisation_name="X", username="-legacy", password=PASSWORD + "-2")
    assert not account.user_created and account.user.check_password(PASSWORD + "-2")


def test_it_refuses_a_formula_username_in_the_admin(client):
    staff = User.objects.create_superuser("root", "root@example.org", "a-long-admin-passphrase")
    client.force_login(staff)
    for username in ("@SUM(A1)", "=cmd", "+1"):
        response = client.post(
            reverse("admin:auth_user_add"),
            {"username": username, "password1": PASSWORD, "password2": PASSWORD, "usable_password": "true"},
        )
        assert response.status_code == 200 and "A username has 1 to 150 letters" in response.content.decode()
    assert not User.objects.filter(username__in=["@SUM(A1)", "=cmd", "+1"]).exists()
    ok = client.post(
        reverse("admin:auth_user_add"),
        {"username": "new_clinician", "password1": PASSWORD, "password2": PASSWORD, "usable_password": "true"},
    )
    assert ok.status_code == 302 and User.objects.filter(username="new_clinician").exists()
    user = User.objects.get(username="new_clinician")
    renamed = client.post(
        reverse("admin:auth_user_change", args=[user.pk]),
        {"username": "=evil", "date_joined_0": "2024-01-01", "date_joined_1": "00:00:00", "is_active": "on"},
    )
    assert renamed.status_code == 200 and "A username has 1 to 150 letters" in renamed.content.decode()
    user.refresh_from_db()
    assert user.username == "new_clinician"


def test_it_refuses_a_formula_username_in_the_demo_command(db, monkeypatch):
    from diagnosis.management.commands import demo

    monkeypatch.setattr(demo, "DEMO_USERNAME", "=demo")
    with pytest.raises(CommandError, match="A username has"):
        call_command("demo", stdout=io.StringIO())
    assert not User.objects.exists()


# --- Settings ------------------------------------------------------------------------------


def test_it_configures_accounts_and_sessions_safely_by_default():
    result = _settings_in_subprocess(
        {},
        "settings.AUTHENTICATION_BACKENDS[0], settings.MIDDLEWARE[-1], settings.AXES_LOCKOUT_PARAMETERS, "
        "settings.AXES_FAILURE_LIMIT, int(settings.AXES_COOLOFF_TIME.total_seconds()), settings.AXES_RESET_ON_SUCCESS, "
        "settings.SESSION_COOKIE_AGE, settings.SKINPORTAL_SESSION_MAX_AGE, settings.SESSION_SAVE_EVERY_REQUEST, "
        "settings.SESSION_EXPIRE_AT_BROWSER_CLOSE, settings.SESSION_COOKIE_SECURE, settings.SKINPORTAL_TRUSTED_PROXIES, "
        "settings.REST_FRAMEWORK['NUM_PROXIES'], settings.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'], "
        "settings.CACHES['default']['BACKEND'], settings.AUTH_PASSWORD_VALIDATORS[1]['OPTIONS']",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "axes.backends.AxesStandaloneBackend axes.middleware.AxesMiddleware [['username', 'ip_address']] "
        "5 900 False 1800 43200 True True False 0 0 {'token': '10/minute', 'uploads': '60/minute'} "
        "django.core.cache.backends.locmem.LocMemCache {'min_length': 12}"
    )


def test_it_configures_accounts_and_sessions_for_production_from_the_environment(tmp_path):
    result = _settings_in_subprocess(
        {
            "SKINPORTAL_ENV": "production",
            "SECRET_KEY": "x" * 50,
            "ALLOWED_HOSTS": "skin.example",
            "MEDIA_ROOT": str(tmp_path / "media"),
            "SECURE_PROXY_SSL_HEADER": "true",
            "SKINPORTAL_TRUSTED_PROXIES": "1",  # no longer implied by SECURE_PROXY_SSL_HEADER
            "CACHE_URL": "redis://redis:6379/1",
            "PASSWORD_MIN_LENGTH": "16",
            "SKINPORTAL_LOGIN_FAILURE_LIMIT": "3",
            "SKINPORTAL_LOGIN_COOLOFF": "0",
            "SKINPORTAL_SESSION_IDLE_TIMEOUT": "600",
            "SKINPORTAL_SESSION_MAX_AGE": "28800",
            "SKINPORTAL_THROTTLE_TOKEN": "5/min",
            "SKINPORTAL_THROTTLE_UPLOADS": "1000/hour",
        },
        "settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE, settings.SESSION_COOKIE_HTTPONLY, "
        "settings.CSRF_COOKIE_HTTPONLY, settings.SESSION_COOKIE_SAMESITE, settings.SKINPORTAL_TRUSTED_PROXIES, "
        "settings.REST_FRAMEWORK['NUM_PROXIES'], settings.CACHES['default']['BACKEND'], "
        "settings.CACHES['default']['LOCATION'], settings.AUTH_PASSWORD_VALIDATORS[1]['OPTIONS']['min_length'], "
        "settings.AXES_FAILURE_LIMIT, settings.AXES_COOLOFF_TIME, settings.SESSION_COOKIE_AGE, "
        "settings.SKINPORTAL_SESSION_MAX_AGE, settings.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "True True True True Lax 1 1 django.core.cache.backends.redis.RedisCache redis://redis:6379/1 16 3 None "
        "600 28800 {'token': '5/min', 'uploads': '1000/hour'}"
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SKINPORTAL_THROTTLE_TOKEN": "lots"}, "SKINPORTAL_THROTTLE_TOKEN must look like 10/minute"),
        ({"CACHE_URL": "memcached://cache:11211"}, "CACHE_URL must be a redis://"),
        ({"PASSWORD_MIN_LENGTH": "6"}, "PASSWORD_MIN_LENGTH must be at least 8"),
        ({"SKINPORTAL_SESSION_IDLE_TIMEOUT": "10"}, "SKINPORTAL_SESSION_IDLE_TIMEOUT must be at least 60"),
    ],
)
def test_it_refuses_bad_account_settings(env, message):
    result = _settings_in_subprocess(env, "settings.DEBUG")
    assert result.returncode != 0 and message in result.stderr
