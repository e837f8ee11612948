"""Login protection glue for django-axes (settings name these by dotted path).

* `client_ip`: the address lockouts are keyed on, correct behind trusted reverse proxies.
* `lockout_response`: what a locked-out login gets: an HTML page, or for the API's token
  endpoint a JSON error in the API's format. Both 429 with Retry-After (the cool-off).
"""

from __future__ import annotations

from typing import Any

from axes.helpers import get_client_username, get_cool_off, get_failure_limit, get_lockout_message
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from skinportal.errors import error_response


def client_ip(request: HttpRequest) -> str | None:
    """REMOTE_ADDR, or behind SKINPORTAL_TRUSTED_PROXIES reverse proxies the address the outermost
    trusted proxy saw. X-Forwarded-For is read from the right: entries further left were written
    by the client and can be anything. Same rule as DRF's NUM_PROXIES, so throttles agree."""
    proxies: int = settings.SKINPORTAL_TRUSTED_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    if proxies and hops:
        return hops[-min(proxies, len(hops))]
    return request.META.get("REMOTE_ADDR")


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
