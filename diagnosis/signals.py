"""Audit-trail receivers (connected in apps.py):

* sign-in: every failed login (pages, API token, admin) and every lockout by django-axes is a
  denied attempt, filed under the organisations of the username tried;
* members: every membership added, given another role or removed, whichever way it happens
  (the organisation page, the admin site, `createclinician`), recorded in the transaction of the
  change itself, so a change is never committed without its event.
"""

from __future__ import annotations

from typing import Any

from axes.signals import user_locked_out
from django.contrib.auth.signals import user_login_failed
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from diagnosis.audit import audit_membership_record, audit_sign_in_record
from diagnosis.models import Membership


@receiver(user_login_failed, dispatch_uid="audit_login_failed")
def _login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    audit_sign_in_record(request=request, username=str(credentials.get("username", "")), action="login_failed")


@receiver(user_locked_out, dispatch_uid="audit_locked_out")
def _locked_out(sender: Any, request: Any = None, username: str = "", **kwargs: Any) -> None:
    audit_sign_in_record(request=request, username=username or "", action="locked_out")


@receiver(pre_save, sender=Membership, dispatch_uid="audit_membership_before")
def _membership_before(sender: Any, instance: Membership, **kwargs: Any) -> None:
    # The role before the save, to tell a role change from a save that changed nothing.
    instance._audit_role_before = (
        Membership.objects.filter(pk=instance.pk).values_list("role", flat=True).first() if instance.pk else None
    )


@receiver(post_save, sender=Membership, dispatch_uid="audit_membership_saved")
def _membership_saved(sender: Any, instance: Membership, created: bool, raw: bool = False, **kwargs: Any) -> None:
    if raw:  # loaddata / restore: history being put back, not a change
        return
    before = getattr(instance, "_audit_role_before", None)
    if created or before is None:
        action = f"add:{instance.role}"
    elif before != instance.role:
        action = f"role:{instance.role}"
    else:
        return
    audit_membership_record(organisation_id=instance.organisation_id, user_id=instance.user_id, action=action)


@receiver(post_delete, sender=Membership, dispatch_uid="audit_membership_removed")
def _membership_removed(sender: Any, instance: Membership, **kwargs: Any) -> None:
    audit_membership_record(
        organisation_id=instance.organisation_id, user_id=instance.user_id, action=f"remove:{instance.role}"
    )
