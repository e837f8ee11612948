"""API token authentication: django-rest-knox's, with the `Token` keyword integrators already send.

knox keeps only a SHA-512 digest of each key (and its first 15 characters, to find it), refuses
an expired token (and deletes it), and refuses an inactive user. This subclass answers a header
that is not even a key (not ASCII, not hex, too long) with the same 401 as a wrong key: knox's
own decode would raise a UnicodeDecodeError (a 500) on a non-UTF-8 byte.
"""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from knox.auth import TokenAuthentication
from rest_framework import exceptions

# knox's keys: 64 hex digits (AUTH_TOKEN_CHARACTER_LENGTH), no prefix (TOKEN_PREFIX is empty).
_KEY = re.compile(rb"[0-9a-f]{64}")


class ApiTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, token: bytes) -> tuple[Any, Any]:
        if not _KEY.fullmatch(token):
            raise exceptions.AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(token)


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """The schema's security scheme: `Authorization: Token <key>` (the name DRF's tokens had)."""

    target_class = ApiTokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Token")
