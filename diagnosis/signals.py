"""Sign-in events for the audit trail: every failed login (pages, API token, admin) and every
lockout by django-axes is a denied attempt."""

from __future__ import annotations

from typing import Any

from axes.signals import user_locked_out
from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver

from diagnosis.audit import audit_sign_in_record


@receiver(user_login_failed, dispatch_uid="audit_login_failed")
def _login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    audit_sign_in_record(request=request, username=str(credentials.get("username", "")), action="login_failed")


@receiver(user_locked_out, dispatch_uid="audit_locked_out")
def _locked_out(sender: Any, request: Any = None, username: str = "", **kwargs: Any) -> None:
    audit_sign_in_record(request=request, username=username or "", action="locked_out")
