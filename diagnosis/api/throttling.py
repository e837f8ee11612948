"""Rate limits for the expensive or sensitive API writes (scopes in DEFAULT_THROTTLE_RATES).

* "token": POST /api/v1/auth/token/, per client IP (password guessing; django-axes locks the
  username too).
* "uploads": the image and batch uploads, per user (each upload costs a classification), through
  the API and the upload pages alike: one bucket (`page_upload_throttled` for the pages).

A throttled request gets 429 with Retry-After, in the API's error format (a page: its form again
with the message). Counters live in the default cache: set CACHE_URL (Redis) when several
processes serve the API, or each one counts alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import ScopedRateThrottle

from skinportal.accounts import client_ip


class ScopedWriteRateThrottle(ScopedRateThrottle):
    """ScopedRateThrottle for writes only (a list GET on an upload endpoint is not an upload), with
    the rates read per request rather than frozen at import, so a settings override applies."""

    @property
    def THROTTLE_RATES(self) -> dict[str, Any]:  # the attribute DRF reads
        return api_settings.DEFAULT_THROTTLE_RATES

    def allow_request(self, request: Request, view: Any) -> bool:
        if request.method in SAFE_METHODS:
            return True
        return super().allow_request(request, view)

    def get_ident(self, request: Request | HttpRequest) -> str:
        # The lockout's and the audit trail's rule: X-Forwarded-For only from a trusted proxy's
        # address. DRF's own (NUM_PROXIES) believes the header from whoever sends it.
        return client_ip(getattr(request, "_request", request)) or ""


UPLOADS = "uploads"
_PERIODS = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}  # DRF's rate units


@dataclass(frozen=True)
class Throttled:
    wait: int  # seconds until the next upload is allowed (Retry-After)
    message: str


@dataclass(frozen=True)
class _PageView:
    """What the throttle reads of a view: pages have no DRF view."""

    throttle_scope: str


def page_upload_throttled(request: HttpRequest) -> Throttled | None:
    """Count a page's upload (a POST) in the API's "uploads" bucket of its user; None while under
    the rate, else how long to wait. The same class, scope and cache key as the API's image and
    batch uploads, so uploads through pages and the API add up."""
    throttle = ScopedWriteRateThrottle()
    if throttle.allow_request(request, _PageView(UPLOADS)):
        return None
    wait = max(1, math.ceil(throttle.wait() or 1))
    period = _PERIODS.get(throttle.duration, f"{throttle.duration} seconds")
    return Throttled(
        wait=wait,
        message=f"Too many uploads: at most {throttle.num_requests} a {period}. "
        f"Try again in {wait} second{'s' if wait != 1 else ''}.",
    )
