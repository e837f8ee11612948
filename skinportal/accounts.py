"""Login protection (settings name several of these by dotted path).

* `client_ip`: the address lockouts are keyed on, correct behind trusted reverse proxies.
* `lockout_response`: what a locked-out login gets: an HTML page, or for the API's token
  endpoint a JSON error in the API's format. Both 429 with Retry-After (the cool-off).
* `login_authenticate`, `LoginForm`, `AdminLoginForm`: every password check (login page, admin
  login, API token, re-authentication before delete/export/new API token) runs inside
  `login_attempt_serialised`, so django-axes' "locked out?" check, the password check and its
  count of a failure are one atomic step per username (`SerialisedAxesHandler` refuses a check
  made outside it, so a new login path cannot skip it).
* `validate_username`: the one rule for a new username (command, services, admin, demo).
* `request_is_cross_site`: a browser request sent from another site's page.
* `PasswordResetView`: password-reset requests limited per client address and per e-mail address.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from axes.handlers.database import AxesDatabaseHandler
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_client_username, get_cool_off, get_failure_limit, get_lockout_message
from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from skinportal.errors import error_response

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def _networks(addresses: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(address, strict=False) for address in addresses)


def _is_trusted_proxy(address: str | None) -> bool:
    try:
        peer = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if peer.version == 6 and peer.ipv4_mapped is not None:  # ::ffff:127.0.0.1 from a dual-stack socket
        peer = peer.ipv4_mapped
    return any(peer in network for network in _networks(tuple(settings.SKINPORTAL_TRUSTED_PROXY_ADDRESSES)))


_untrusted_forwarders_logged: set[str] = set()


def client_ip(request: HttpRequest) -> str | None:
    """The client's address, the one lockouts, throttles and the audit trail key on.

    REMOTE_ADDR, unless the connection comes from a trusted proxy (SKINPORTAL_TRUSTED_PROXY_ADDRESSES)
    and SKINPORTAL_TRUSTED_PROXIES > 0: then the address the outermost trusted proxy saw, read
    from X-Forwarded-For from the right (entries further left were written by the client and can
    be anything). A header from any other peer is the client's own invention and is ignored, so
    whoever reaches gunicorn directly cannot pick their address."""
    remote = request.META.get("REMOTE_ADDR")
    proxies: int = settings.SKINPORTAL_TRUSTED_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if not proxies or not forwarded:
        return remote
    if not _is_trusted_proxy(remote):
        # Once per peer and process: a proxy that is not listed (everyone would share its address).
        if remote not in _untrusted_forwarders_logged and len(_untrusted_forwarders_logged) < 100:
            _untrusted_forwarders_logged.add(remote or "")
            logger.warning(
                "X-Forwarded-For from %s ignored: not in SKINPORTAL_TRUSTED_PROXY_ADDRESSES. If it is your "
                "reverse proxy, list its address there.",
                remote,
            )
        return remote
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    if not hops:
        return remote
    return hops[-min(proxies, len(hops))]


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict[str, Any] | None = None
) -> HttpResponse:
    status = settings.AXES_HTTP_RESPONSE_CODE
    cool_off = get_cool_off(request)
    seconds = int(cool_off.total_seconds()) if cool_off else None
    if request.path_info.startswith("/api/"):
        response: HttpResponse = error_response(status=status, code="locked_out", message=str(get_lockout_message()))
    else:
        response = render(
            request,
            "registration/locked_out.html",
            {
                "failure_limit": get_failure_limit(request, credentials),
                "username": get_client_username(request, credentials) or "",
                "cool_off_minutes": -(-seconds // 60) if seconds else None,
            },
            status=status,
        )
    if seconds:
        response["Retry-After"] = str(seconds)
    return response


# --- One login attempt per username at a time ------------------------------------------------

# The username whose attempt holds the lock in this thread (or task), for SerialisedAxesHandler.
_serialised_attempt: ContextVar[str | None] = ContextVar("skinportal_login_attempt", default=None)
_LOCK_NAMESPACE = b"skinportal.login:"


def _advisory_lock_key(username: str) -> int:
    """A signed 64-bit number for pg_advisory_xact_lock, stable across processes (hash() is not)."""
    return int.from_bytes(
        hashlib.blake2b(_LOCK_NAMESPACE + username.encode(), digest_size=8).digest(), "big", signed=True
    )


@contextmanager
def login_attempt_serialised(username: str) -> Iterator[None]:
    """Run one login attempt for `username` while holding a lock that every process shares.

    django-axes checks the failure count, the password is checked, then axes counts a failure:
    unlocked, 30 parallel guesses all passed the check before any was counted (8 failures
    counted against a limit of 5, and the right password got in). Inside this block they happen
    one after another, in one transaction:

    * PostgreSQL: a transaction-level advisory lock on the username (other usernames do not wait);
    * SQLite: settings open every transaction with BEGIN IMMEDIATE, which takes the database's
      write lock at once, so attempts (for any username) wait for one another.

    The caller raises its "wrong password" error after the block: an exception inside it would
    roll the failure count back.
    """
    with transaction.atomic():
        connection = transaction.get_connection()
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_advisory_lock_key(username)])
        elif connection.vendor == "sqlite":
            if connection.settings_dict.get("OPTIONS", {}).get("transaction_mode") != "IMMEDIATE":
                raise ImproperlyConfigured("SQLite needs OPTIONS transaction_mode IMMEDIATE (skinportal/settings.py).")
        else:
            raise ImproperlyConfigured(f"No login lock for the {connection.vendor} database: use PostgreSQL or SQLite.")
        token = _serialised_attempt.set(username)
        try:
            yield
        finally:
            _serialised_attempt.reset(token)


def login_authenticate(request: HttpRequest, *, username: str, password: str) -> AbstractBaseUser | None:
    """django.contrib.auth.authenticate, serialised per username (see login_attempt_serialised).
    Every password check of the portal goes through here; None for a wrong password or a
    locked-out username (axes flags the request, and its middleware answers 429)."""
    with login_attempt_serialised(username):
        user = authenticate(request, username=username, password=password)
        if user is not None:
            # A success forgets this username's failures from this address, inside the lock (axes'
            # own reset, at login(), came after it: failures counted meanwhile were forgotten too).
            AxesProxyHandler.get_implementation().reset_user_attempts(request, {"username": username})
        return user


class SerialisedAxesHandler(AxesDatabaseHandler):
    """django-axes' database handler (settings.AXES_HANDLER) that refuses a lockout check made
    outside login_attempt_serialised: a login path that called authenticate() directly would be
    open to the race again, so it fails loudly (in the tests) instead."""

    def is_allowed(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> bool:
        if _serialised_attempt.get() is None:
            raise ImproperlyConfigured(
                "authenticate() was called outside skinportal.accounts.login_attempt_serialised: "
                "use skinportal.accounts.login_authenticate (or LoginForm) so the lockout count is atomic."
            )
        return super().is_allowed(request, credentials)


class SerialisedLoginMixin:
    """AuthenticationForm.clean with the password check inside the per-username lock, and its
    error raised after it (inside, it would roll back the failure that axes just counted)."""

    request: HttpRequest | None
    user_cache: AbstractBaseUser | None
    cleaned_data: dict[str, Any]

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is not None and password:
            self.user_cache = login_authenticate(self.request, username=username, password=password)
            if self.user_cache is None:
                raise self.get_invalid_login_error()  # type: ignore[attr-defined]
            self.confirm_login_allowed(self.user_cache)  # type: ignore[attr-defined]
        return self.cleaned_data


class LoginForm(SerialisedLoginMixin, AuthenticationForm):
    """The login page's form (skinportal/urls.py)."""


class AdminLoginForm(SerialisedLoginMixin, AdminAuthenticationForm):
    """The admin site's login form (admin.site.login_form, skinportal/urls.py)."""


# --- Usernames -------------------------------------------------------------------------------

USERNAME_RULE = (
    "A username has 1 to {max} letters, digits and @ . + - _ characters, and does not start with "
    "= + - or @ (a spreadsheet would read it as a formula)."
)
# Django's own rule ([\w.@+-], UnicodeUsernameValidator), and a first character that no
# spreadsheet takes for the start of a formula: usernames end up in CSV exports and admin lists.
_USERNAME = re.compile(r"(?![=+\-@])[\w.@+-]+")


def validate_username(value: str) -> None:
    """The one check of a new username: createclinician, the services, the admin site, demo."""
    user_model = get_user_model()
    max_length = user_model._meta.get_field(user_model.USERNAME_FIELD).max_length or 150
    if not value or len(value) > max_length or not _USERNAME.fullmatch(value):
        raise ValidationError(USERNAME_RULE.format(max=max_length), code="invalid")


# --- Requests from another site's page -------------------------------------------------------


def request_is_cross_site(request: HttpRequest) -> bool:
    """True for a browser request sent by another site's page: its Origin names another origin
    (or is "null": a sandboxed frame), or Sec-Fetch-Site says so. Scripts and curl send neither
    header, so they pass; so do pages of this site and of CSRF_TRUSTED_ORIGINS."""
    fetch_site = request.META.get("HTTP_SEC_FETCH_SITE")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return True
    origin = request.META.get("HTTP_ORIGIN")
    if origin is None:
        return False
    own = f"{request.scheme}://{request.get_host()}"
    return origin != own and origin not in settings.CSRF_TRUSTED_ORIGINS


# --- Password-reset requests ------------------------------------------------------------------

PASSWORD_RESET_THROTTLED = (
    "Too many password reset requests: try again in {minutes} minute(s). "
    "If you asked for a link already, look for it in your e-mail (and its spam folder)."
)
_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _parse_rate(rate: str) -> tuple[int, int]:
    """'5/hour' -> (5, 3600): the format of DRF's throttle rates (settings check it at start)."""
    count, period = rate.split("/")
    return int(count), _PERIODS[period[0]]


def rate_limits_take(limits: list[tuple[str, str]]) -> int:
    """Sliding-window counters in the default cache, as DRF's throttles keep them. `limits`:
    (key, rate) pairs. 0 when one more request fits every rate (it is then counted under each
    key); otherwise the seconds until it would fit, and nothing is counted."""
    now = time.time()
    histories: list[tuple[str, list[float], int]] = []
    wait = 0.0
    for key, rate in limits:
        count, seconds = _parse_rate(rate)
        history = [at for at in cache.get(key, []) if at > now - seconds]
        if len(history) >= count:
            wait = max(wait, history[len(history) - count] + seconds - now)
        histories.append((key, history, seconds))
    if wait > 0:
        return max(1, math.ceil(wait))
    for key, history, seconds in histories:
        cache.set(key, [*history, now], seconds)
    return 0


class PasswordResetView(auth_views.PasswordResetView):
    """Django's reset page with requests limited per client address
    (SKINPORTAL_THROTTLE_PASSWORD_RESET) and per e-mail address entered
    (SKINPORTAL_THROTTLE_PASSWORD_RESET_EMAIL). The second counts every address entered, whether
    an account has it or not, and both answer with the same message: the limit tells nobody
    which addresses have an account. Beyond either: the form again, 429 with Retry-After."""

    def form_valid(self, form: PasswordResetForm) -> HttpResponse:
        email = form.cleaned_data["email"].strip().casefold()
        wait = rate_limits_take(
            [
                (f"password-reset:ip:{client_ip(self.request)}", settings.SKINPORTAL_THROTTLE_PASSWORD_RESET),
                (
                    "password-reset:email:" + hashlib.sha256(email.encode()).hexdigest(),
                    settings.SKINPORTAL_THROTTLE_PASSWORD_RESET_EMAIL,
                ),
            ]
        )
        if wait:
            form.add_error(None, forms.ValidationError(PASSWORD_RESET_THROTTLED.format(minutes=-(-wait // 60))))
            response = self.form_invalid(form)
            response.status_code = 429
            response["Retry-After"] = str(wait)
            return response
        return super().form_valid(form)
