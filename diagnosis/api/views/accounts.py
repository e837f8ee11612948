"""API views of authentication: tokens (create, list, revoke, rotate) and the caller."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions as drf_exceptions
from rest_framework import serializers as drf_serializers
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from diagnosis import selectors, services
from diagnosis.api import serializers as s
from diagnosis.api.parsers import JSONParser
from diagnosis.api.schema import ERROR
from diagnosis.api.throttling import ScopedWriteRateThrottle
from diagnosis.api.views.base import PaginatedListMixin, ScopedApiView, _input
from diagnosis.models import Membership
from skinportal.accounts import login_authenticate, request_is_cross_site


class TokenLimitReached(drf_exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "token_limit"


CROSS_SITE_TOKEN_REQUEST = (
    "A token request from another site's page is refused: send it from a script (no Origin header) or from this site."
)


class AuthTokenApi(ScopedApiView):
    """A new API token for a username and password. JSON bodies only, and never from another
    site's page: a hidden form elsewhere could otherwise make a visitor's browser post wrong
    passwords here and lock a user out (form bodies answer 415, another Origin 403, and neither
    reaches the password check or the lockout count)."""

    authentication_classes: list = []  # no session, so no CSRF check on this one POST: hence the Origin check
    throttle_classes = (ScopedWriteRateThrottle,)
    throttle_scope = "token"  # per client address
    permission_classes = [AllowAny]
    parser_classes = [JSONParser]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        if request_is_cross_site(request._request):  # before the throttle counts it
            raise drf_exceptions.PermissionDenied(CROSS_SITE_TOKEN_REQUEST, code="cross_site")
        super().initial(request, *args, **kwargs)

    @extend_schema(
        request=s.TokenInput,
        responses={200: s.TokenOutput, 400: ERROR, 403: ERROR, 409: ERROR, 429: ERROR},
        tags=["auth"],
        auth=[],
    )
    def post(self, request: Request) -> Response:
        data = _input(s.TokenInput, request)
        # The Django request, so django-axes counts the failure; once the username is locked out for
        # this address, its middleware answers 429 "locked_out" (skinportal.accounts) instead of the 400.
        user = login_authenticate(request._request, username=data["username"], password=data["password"])
        if user is None or not user.is_active:
            raise drf_serializers.ValidationError(
                {"non_field_errors": ["Unable to log in with the username and password given."]}
            )
        try:
            issued = services.accounts.api_token_create(user=user)
        except services.accounts.ApiTokenLimitReached as exc:
            raise TokenLimitReached(exc.messages[0]) from exc
        return Response(s.TokenOutput(issued).data)


class ApiTokenListApi(PaginatedListMixin, ScopedApiView):
    @extend_schema(responses={200: s.ApiTokenOutput(many=True)}, tags=["auth"])
    def get(self, request: Request) -> Response:
        """Your unexpired API tokens (never their keys: only a digest is stored), newest first."""
        return self.paginate(request, selectors.api_token_list(user=request.user), s.ApiTokenOutput)


class ApiTokenDetailApi(ScopedApiView):
    @extend_schema(responses={204: None, 404: ERROR}, tags=["auth"])
    def delete(self, request: Request, token_key: str) -> Response:
        """Revoke one of your tokens (the one this request carries, too): it stops working now."""
        services.accounts.api_token_revoke(user=request.user, token_key=token_key)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ApiTokenRotateApi(ScopedApiView):
    @extend_schema(request=None, responses={200: s.TokenOutput, 404: ERROR}, tags=["auth"])
    def post(self, request: Request, token_key: str) -> Response:
        """Replace one of your tokens by a new key with the same expiry; the old key stops working now."""
        issued = services.accounts.api_token_rotate(user=request.user, token_key=token_key)
        return Response(s.TokenOutput(issued).data)


class MeApi(ScopedApiView):
    @extend_schema(responses={200: s.MeOutput}, tags=["auth"])
    def get(self, request: Request) -> Response:
        memberships = Membership.objects.filter(user=request.user).select_related("organisation")
        return Response(
            s.MeOutput(
                {"id": request.user.pk, "username": request.user.get_username(), "memberships": memberships}
            ).data
        )
