"""Organisations, their members and logins."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from rest_framework.authtoken.models import Token

from diagnosis.models import Membership, Organisation, Role
from diagnosis.permissions import require_admin


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
    username = username.strip()
    if not username:
        raise ValidationError({"username": "A username is required."})
    if role not in Role.values:
        raise ValidationError({"role": f"Unknown role {role!r}; choose one of {', '.join(Role.values)}."})
    organisation, organisation_created = organisation_get_or_create(name=organisation_name)
    user_model = get_user_model()
    user = user_model.objects.filter(username=username).first()
    user_created = user is None
    if user is None:
        user = user_model(username=username, email=email)
    if validate:
        validate_password(password, user=user)
    user.set_password(password)
    if email:
        user.email = email
    user.save()
    membership = membership_set(user=user, organisation=organisation, role=role)
    return ClinicianAccount(user, organisation, membership, user_created, organisation_created)


@transaction.atomic
def api_token_get_or_create(*, user: AbstractBaseUser) -> Token:
    token, _ = Token.objects.get_or_create(user=user)
    return token
