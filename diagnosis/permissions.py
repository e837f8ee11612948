"""Who may change what: the write and admin rules, each written once.

A role that may write (clinician, admin) changes patient data; an admin also manages members,
deletes patients and reads the audit log. Services enforce these before every change; views
call the same helpers before showing a form, so a read-only user gets a 403 rather than a form
that would be refused. The `message` is what the 403 page (or the API's error) says.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied

from diagnosis.selectors import user_can_write, user_is_admin

READ_ONLY = "Your role in this organisation is read-only: you cannot make changes."
READ_ONLY_PAGE = "Your role in this organisation is read-only."  # a page asked for its form
ADMIN_ONLY = "Only an owner/admin of this organisation can manage its members."
ADMIN_ONLY_DELETE = "Only an owner/admin of this organisation can delete a patient."
ADMIN_ONLY_AUDIT = "Only an owner/admin of this organisation can see its audit log."
NO_PATIENTS_ANYWHERE = "Your role is read-only: you cannot add patients."  # no organisation it may write


def require_write(*, user: AbstractBaseUser | AnonymousUser, organisation_id: int, message: str = READ_ONLY) -> None:
    if not user_can_write(user=user, organisation_id=organisation_id):
        raise PermissionDenied(message)


def require_admin(*, user: AbstractBaseUser | AnonymousUser, organisation_id: int, message: str = ADMIN_ONLY) -> None:
    if not user_is_admin(user=user, organisation_id=organisation_id):
        raise PermissionDenied(message)
