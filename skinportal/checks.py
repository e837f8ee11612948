"""Start-up checks of a deployment's safety that Django's own `check --deploy` does not know.

They run with every `manage.py` command (`check`, `check --deploy`, `runserver`, `migrate`) as
Django system checks, and at gunicorn's start (skinportal/wsgi.py logs them as warnings), so a
recipe that is unsafe as configured says so where the operator looks:

* skinportal.W001: production with a per-process cache: every gunicorn worker keeps its own rate
  counters and allows the full rate (3 workers: 30 token attempts a minute, not 10).
* skinportal.W002: behind a TLS proxy (SECURE_PROXY_SSL_HEADER) with no trusted proxy: every
  client has the proxy's address, so one lockout and one token rate for everyone.
* skinportal.W003: a trusted proxy address that is everyone (0.0.0.0/0, ::/0): anyone who reaches
  gunicorn picks their address with X-Forwarded-For (lockout bypass, forged audit addresses).
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Warning, register

logger = logging.getLogger(__name__)

PER_PROCESS_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)


def _production() -> bool:
    return getattr(settings, "SKINPORTAL_ENV", "development") == "production"


@register("security")
def shared_cache_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    if not _production() or backend not in PER_PROCESS_CACHES:
        return []
    return [
        Warning(
            f"The cache ({backend.rsplit('.', 1)[-1]}) is per process: each gunicorn worker counts the API "
            "throttles and password-reset limits alone and allows the full rate.",
            hint="Unset CACHE_URL (production default: the database, dbcache://skinportal_cache) or set it to "
            "a Redis URL shared by every web process.",
            id="skinportal.W001",
        )
    ]


@register("security")
def trusted_proxy_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    proxies = settings.SKINPORTAL_TRUSTED_PROXIES
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None) and proxies == 0:
        messages.append(
            Warning(
                "SECURE_PROXY_SSL_HEADER says a TLS proxy is in front, but SKINPORTAL_TRUSTED_PROXIES is 0: every "
                "client has the proxy's address, so one login lockout and one token rate apply to everyone.",
                hint="Set SKINPORTAL_TRUSTED_PROXIES=1 (the proxy appends X-Forwarded-For) and, if the proxy is "
                "not on this machine, SKINPORTAL_TRUSTED_PROXY_ADDRESSES to its address.",
                id="skinportal.W002",
            )
        )
    everyone = [
        text
        for text in settings.SKINPORTAL_TRUSTED_PROXY_ADDRESSES
        if ipaddress.ip_network(text, strict=False).prefixlen == 0
    ]
    if proxies and everyone:
        messages.append(
            Warning(
                f"SKINPORTAL_TRUSTED_PROXY_ADDRESSES includes {', '.join(everyone)}: anyone who reaches the portal "
                "chooses the address its lockouts, throttles and audit trail record, with X-Forwarded-For.",
                hint="List only your reverse proxies' addresses (default 127.0.0.1 and ::1).",
                id="skinportal.W003",
            )
        )
    return messages


CHECKS = (shared_cache_check, trusted_proxy_check)


def log_startup_warnings() -> list[CheckMessage]:
    """Log this module's warnings (gunicorn runs no system checks; skinportal/wsgi.py calls this)."""
    found = [message for check in CHECKS for message in check()]
    for message in found:
        logger.warning("%s: %s HINT: %s", message.id, message.msg, message.hint)
    return found
