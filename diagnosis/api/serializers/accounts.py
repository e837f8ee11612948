"""Serializers of the API's authentication, tokens and the caller."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from diagnosis.limits import PASSWORD_MAX_CHARS
from diagnosis.models import (
    Role,
)


class TokenInput(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False,
                                     max_length=PASSWORD_MAX_CHARS)


class TokenOutput(serializers.Serializer):
    token = serializers.CharField(
        source="key",
        help_text="The key: send it as `Authorization: Token <key>`. Shown this once: only its digest is stored.",
    )
    expiry = serializers.DateTimeField(
        help_text="When the key stops working; a password change or reset ends it sooner."
    )


class ApiTokenOutput(serializers.Serializer):
    key = serializers.CharField(
        source="token_key", help_text="The key's first 15 characters: name the token when you revoke or rotate it."
    )
    created = serializers.DateTimeField()
    expiry = serializers.DateTimeField()
    current = serializers.SerializerMethodField(help_text="Whether this request was authenticated with it.")

    def get_current(self, token: Any) -> bool:
        request = self.context.get("request")
        used = getattr(request, "auth", None)
        return getattr(used, "digest", None) == token.digest


class MembershipOutput(serializers.Serializer):
    organisation = serializers.IntegerField(source="organisation_id")
    organisation_name = serializers.CharField(source="organisation.name")
    role = serializers.ChoiceField(choices=Role.choices)
    can_write = serializers.BooleanField()


class MeOutput(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    memberships = MembershipOutput(many=True)
