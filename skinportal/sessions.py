"""Session lifetime: an idle timeout and an absolute lifetime, enforced on the server.

SESSION_COOKIE_AGE (sliding, saved on every request) already lets an idle session's row expire,
but that depends on the cookie and the session store behaving; this middleware checks two
timestamps kept inside the session itself and logs the user out once either limit has passed:

* SKINPORTAL_SESSION_IDLE_TIMEOUT: seconds since the last request;
* SKINPORTAL_SESSION_MAX_AGE: seconds since the login, however active the session is.

Pages then redirect to the login page with a message; the session-authenticated API answers 401
in the API's error format.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.signals import user_logged_in
from django.contrib.auth.views import redirect_to_login
from django.contrib.messages.storage import default_storage
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

from skinportal.errors import error_response

log = logging.getLogger(__name__)

LOGIN_AT = "_skinportal_login_at"  # time.time() of the login
SEEN_AT = "_skinportal_seen_at"  # time.time() of the last request
API_PREFIX = "/api/"

MESSAGES = {
    "idle": "You were logged out after {minutes} minutes without activity. Please log in again.",
    "max_age": "Your session reached its maximum length of {hours} hours. Please log in again.",
}


@receiver(user_logged_in, dispatch_uid="skinportal.sessions.start_clock")
def start_clock(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    """A login starts both clocks (login() has just given the session a new key)."""
    session = getattr(request, "session", None)
    if session is not None:
        now = time.time()
        session[LOGIN_AT] = now
        session[SEEN_AT] = now


def expiry_reason(session: Any, now: float) -> str | None:
    """'max_age', 'idle' or None (the session may go on)."""
    login_at = session.get(LOGIN_AT)
    seen_at = session.get(SEEN_AT)
    if login_at is not None and now - login_at >= settings.SKINPORTAL_SESSION_MAX_AGE:
        return "max_age"
    if seen_at is not None and now - seen_at >= settings.SKINPORTAL_SESSION_IDLE_TIMEOUT:
        return "idle"
    return None


class SessionLifetimeMiddleware:
    """Place right after AuthenticationMiddleware (it needs request.user and request.session)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = getattr(request, "session", None)
        user = getattr(request, "user", None)
        if session is not None and user is not None and user.is_authenticated:
            now = time.time()
            reason = expiry_reason(session, now)
            if reason is not None:
                expired = self._expire(request, reason)
                if expired is not None:
                    return expired
            else:
                # A session from before this middleware (or a login without the signal) starts now.
                session.setdefault(LOGIN_AT, now)
                session[SEEN_AT] = now
        return self.get_response(request)

    def _expire(self, request: HttpRequest, reason: str) -> HttpResponse | None:
        username = request.user.get_username()
        logout(request)  # flushes the session: a new key, no data, user_logged_out sent
        log.info("Session of %s ended (%s).", username, reason)
        text = MESSAGES[reason].format(
            minutes=settings.SKINPORTAL_SESSION_IDLE_TIMEOUT // 60, hours=settings.SKINPORTAL_SESSION_MAX_AGE // 3600
        )
        if request.path_info.startswith(API_PREFIX):
            if "HTTP_AUTHORIZATION" in request.META:
                return None  # a token request that also carried a stale cookie: the token decides
            response = error_response(status=401, code="session_expired", message=text)
            response["WWW-Authenticate"] = "Token"
            return response
        response = redirect_to_login(request.get_full_path())
        # MessageMiddleware runs after this one, so store the message ourselves.
        storage = default_storage(request)
        storage.add(messages.INFO, text)
        storage.update(response)
        return response
