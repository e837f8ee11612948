"""API tokens end with the credentials that issued them (receivers connected in apps.py).

A user's API tokens are revoked when their password changes (the change page, a reset link, the
admin, `createclinician` on an existing login, `changepassword`), when it is made unusable, and
when the account is deactivated: whichever way the user row is saved, so no path is missed.
Django logs other sessions out on a password change in the same spirit.

Not a change: a login that re-hashes the same password with a newer hasher (Django marks it),
or rows loaded by `loaddata` / restore.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

from diagnosis.services.accounts import api_tokens_revoke_all

_REVOKE = "_skinportal_revoke_api_tokens"


def _credentials_ended(instance: Any, update_fields: frozenset[str] | None) -> bool:
    if update_fields is not None and not {"password", "is_active"} & update_fields:
        return False  # e.g. the last_login stamp of every login
    # set_password() keeps the new password here until the save; a re-hash at login clears it first.
    if getattr(instance, "_password", None) is not None:
        return True
    before = type(instance)._base_manager.filter(pk=instance.pk).values("password", "is_active").first()
    if before is None:
        return False
    deactivated = before["is_active"] and not instance.is_active
    made_unusable = before["password"] != instance.password and not instance.has_usable_password()
    return deactivated or made_unusable


@receiver(pre_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="api_tokens_credentials_before")
def _before_user_saved(
    sender: Any, instance: Any, raw: bool = False, update_fields: frozenset[str] | None = None, **kwargs: Any
) -> None:
    setattr(instance, _REVOKE, not raw and instance.pk is not None and _credentials_ended(instance, update_fields))


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="api_tokens_credentials_after")
def _after_user_saved(sender: Any, instance: Any, **kwargs: Any) -> None:
    if instance.__dict__.pop(_REVOKE, False):
        api_tokens_revoke_all(user=instance)
