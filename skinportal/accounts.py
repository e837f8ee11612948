"""Login protection glue for django-axes (settings name these by dotted path).

* `client_ip`: the address lockouts are keyed on, correct behind trusted reverse proxies.
* `lockout_response`: what a locked-out login gets: an HTML page, or for the API's token
  endpoint a JSON error in the API's format. Both 429 with Retry-After (the cool-off).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from typing import Any

from axes.helpers import get_client_username, get_cool_off, get_failure_limit, get_lockout_message
from django.conf import settings
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
