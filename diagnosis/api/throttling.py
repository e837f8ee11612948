"""Rate limits for the expensive or sensitive API writes (scopes in DEFAULT_THROTTLE_RATES).

* "token": POST /api/v1/auth/token/, per client IP (password guessing; django-axes locks the
  username too).
* "uploads": the image and batch uploads, per user (each upload costs a classification).

A throttled request gets 429 with Retry-After, in the API's error format. Counters live in the
default cache: set CACHE_URL (Redis) when several processes serve the API, or each one counts alone.
"""

from __future__ import annotations

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
