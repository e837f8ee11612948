"""Organisations, their members, logins and their API tokens."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404
from django.utils import timezone
from knox.models import AuthToken, get_digest_token
from knox.settings import CONSTANTS

from diagnosis.models import Membership, Organisation, Role
from diagnosis.permissions import require_admin
from skinportal.accounts import validate_username


@transaction.atomic
def organisation_get_or_create(*, name: str) -> tuple[Organisation, bool]:
    name = name.strip()
    if not name:
        raise ValidationError({"name": "The organisation needs a name."})
    return Organisation.objects.get_or_create(name=name)


@transaction.atomic
def membership_set(*, user: AbstractBaseUser, organisation: Organisation, role: str) -> Membership:
    """Add the user to the organisation, or change their role there."""
    if role not in Role.values:
        raise ValidationError({"role": f"Unknown role {role!r}; choose one of {', '.join(Role.values)}."})
    membership, _ = Membership.objects.update_or_create(user=user, organisation=organisation, defaults={"role": role})
    return membership


def _keep_an_admin(*, organisation: Organisation, leaving: Membership) -> None:
    """An organisation must keep at least one owner/admin, or nobody could manage it again."""
    if leaving.role != Role.ADMIN:
        return
    if not Membership.objects.filter(organisation=organisation, role=Role.ADMIN).exclude(pk=leaving.pk).exists():
        raise ValidationError("The organisation needs at least one owner/admin: appoint another one first.")


@transaction.atomic
def membership_grant(*, actor: AbstractBaseUser, organisation: Organisation, username: str, role: str) -> Membership:
    """An admin adds an existing login to the organisation, or changes their role there."""
    require_admin(user=actor, organisation_id=organisation.pk)
    user = get_user_model().objects.filter(username=username.strip()).first()
    if user is None:
        raise ValidationError(
            {"username": f"No login named {username.strip()!r}; an operator creates it with createclinician."}
        )
    existing = Membership.objects.filter(user=user, organisation=organisation).first()
    if existing is not None and role != Role.ADMIN:
        _keep_an_admin(organisation=organisation, leaving=existing)
    return membership_set(user=user, organisation=organisation, role=role)


@transaction.atomic
def membership_revoke(*, actor: AbstractBaseUser, membership: Membership) -> None:
    require_admin(user=actor, organisation_id=membership.organisation_id)
    _keep_an_admin(organisation=membership.organisation, leaving=membership)
    membership.delete()


@dataclass(frozen=True)
class ClinicianAccount:
    user: AbstractBaseUser
    organisation: Organisation
    membership: Membership
    user_created: bool
    organisation_created: bool


@transaction.atomic
def clinician_create(
    *,
    organisation_name: str,
    username: str,
    password: str,
    role: str = Role.CLINICIAN,
    email: str = "",
    validate: bool = True,
) -> ClinicianAccount:
    """Create (or update) a login in an organisation, creating the organisation if needed.

    An existing user keeps their account and other memberships; their password is set to the
    one given and their role in this organisation to `role`.
    """
    user_model = get_user_model()
    username = user_model.normalize_username(username.strip())
    if not username:
        raise ValidationError({"username": "A username is required."})
    if role not in Role.values:
        raise ValidationError({"role": f"Unknown role {role!r}; choose one of {', '.join(Role.values)}."})
    user = user_model.objects.filter(username=username).first()
    user_created = user is None
    if user is None:
        try:
            validate_username(username)  # before anything is written: the organisation neither
        except ValidationError as exc:
            raise ValidationError({"username": exc.messages}) from exc
        user = user_model(username=username, email=email)
    organisation, organisation_created = organisation_get_or_create(name=organisation_name)
    if validate:
        validate_password(password, user=user)
    user.set_password(password)
    if email:
        user.email = email
    user.save()
    membership = membership_set(user=user, organisation=organisation, role=role)
    return ClinicianAccount(user, organisation, membership, user_created, organisation_created)


# --- API tokens (django-rest-knox: only a SHA-512 digest of each key is stored) ---------------

# The first characters of a key, which knox stores in clear to find the token: they name a token
# in lists and in the revoke and rotate requests (15 of 64 hex digits; the other 196 bits stay secret).
API_TOKEN_KEY_ID = re.compile(r"[0-9a-f]{15}")


@dataclass(frozen=True)
class IssuedApiToken:
    """A new API token. `key` is the secret: shown once, never stored (the row holds its digest)."""

    token: AuthToken
    key: str

    @property
    def expiry(self) -> dt.datetime:
        return self.token.expiry


class ApiTokenLimitReached(ValidationError):
    """The user holds SKINPORTAL_API_TOKEN_LIMIT unexpired tokens already."""


def _api_token_issue(*, user: AbstractBaseUser, expiry: dt.datetime) -> IssuedApiToken:
    # AuthToken.objects.create, with an expiry given as a time rather than a time to live.
    digest, key = get_digest_token()
    token = AuthToken(digest=digest, token_key=key[: CONSTANTS.TOKEN_KEY_LENGTH], user=user, expiry=expiry)
    token.save(force_insert=True)
    return IssuedApiToken(token=token, key=key)


def _api_token_owned(*, user: AbstractBaseUser, token_key: str) -> AuthToken:
    """The user's own unexpired token named by `token_key`, locked for the change; 404 otherwise,
    the same for someone else's token as for none."""
    token = None
    if API_TOKEN_KEY_ID.fullmatch(token_key):
        token = (
            AuthToken.objects.select_for_update()
            .filter(user=user, token_key=token_key, expiry__gt=timezone.now())
            .order_by("created")
            .first()
        )
    if token is None:
        raise Http404("No such API token.")
    return token


@transaction.atomic
def api_token_create(*, user: AbstractBaseUser) -> IssuedApiToken:
    """A new token for `user`, valid for SKINPORTAL_API_TOKEN_TTL seconds. Each call gives a new
    key (integrators keep theirs until it expires, rather than asking for one per run); at most
    SKINPORTAL_API_TOKEN_LIMIT unexpired tokens per user."""
    # The user's row, locked: two parallel requests cannot both take the last free place.
    get_user_model().objects.select_for_update().filter(pk=user.pk).exists()
    now = timezone.now()
    AuthToken.objects.filter(user=user, expiry__lte=now).delete()  # expired ones are gone for good
    limit: int = settings.SKINPORTAL_API_TOKEN_LIMIT
    if AuthToken.objects.filter(user=user).count() >= limit:
        raise ApiTokenLimitReached(
            f"You have {limit} API tokens already, the most allowed: revoke one you no longer use "
            "(on your API tokens page, or DELETE /api/v1/auth/tokens/{key}/) and ask again.",
            code="token_limit",
        )
    return _api_token_issue(user=user, expiry=now + dt.timedelta(seconds=settings.SKINPORTAL_API_TOKEN_TTL))


@transaction.atomic
def api_token_rotate(*, user: AbstractBaseUser, token_key: str) -> IssuedApiToken:
    """Replace one of the user's tokens by a new key with the same expiry: a key that may have
    leaked stops working at once. The lifetime is not extended (only a login gives a new one),
    so whoever holds a token cannot keep it alive by rotating it."""
    old = _api_token_owned(user=user, token_key=token_key)
    issued = _api_token_issue(user=user, expiry=old.expiry)
    old.delete()
    return issued


@transaction.atomic
def api_token_revoke(*, user: AbstractBaseUser, token_key: str) -> None:
    """The user's token named by `token_key` stops working now (404 if they have none by that name)."""
    _api_token_owned(user=user, token_key=token_key).delete()


@transaction.atomic
def api_tokens_revoke_all(*, user: AbstractBaseUser) -> int:
    """Every token of `user`: on a password change or reset and on deactivation (diagnosis/credentials.py)."""
    deleted, _ = AuthToken.objects.filter(user=user).delete()
    return deleted
