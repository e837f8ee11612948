"""Organisations, memberships and roles; the user's API tokens; the audit trail; staff counts."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import (
    Count,
    QuerySet,
)
from django.utils import timezone
from knox.models import AuthToken

from diagnosis.models import (
    WRITE_ROLES,
    AuditEvent,
    Classification,
    Membership,
    Organisation,
    Role,
)
from diagnosis.selectors._base import User, _get_or_404


def organisation_list_for_user(*, user: User) -> QuerySet[Organisation]:
    if not user.is_authenticated:
        return Organisation.objects.none()
    return Organisation.objects.filter(memberships__user=user).distinct()


def organisation_list_writable_by_user(*, user: User) -> QuerySet[Organisation]:
    if not user.is_authenticated:
        return Organisation.objects.none()
    return Organisation.objects.filter(memberships__user=user, memberships__role__in=WRITE_ROLES).distinct()


def user_can_write(*, user: User, organisation_id: int) -> bool:
    if not user.is_authenticated:
        return False
    return Membership.objects.filter(user=user, organisation_id=organisation_id, role__in=WRITE_ROLES).exists()


def user_is_admin(*, user: User, organisation_id: int) -> bool:
    if not user.is_authenticated:
        return False
    return Membership.objects.filter(user=user, organisation_id=organisation_id, role=Role.ADMIN).exists()


def organisation_get(*, user: User, organisation_id: int | str) -> Organisation:
    return _get_or_404(organisation_list_for_user(user=user), organisation_id, "organisation")


def membership_list(*, organisation: Organisation) -> QuerySet[Membership]:
    return Membership.objects.filter(organisation=organisation).select_related("user").order_by("user__username")


def membership_get(*, organisation: Organisation, membership_id: int | str) -> Membership:
    return _get_or_404(membership_list(organisation=organisation), membership_id, "member")


def user_can_write_anywhere(*, user: User) -> bool:
    return organisation_list_writable_by_user(user=user).exists()


def _organisation_ids(user: User) -> QuerySet:
    return organisation_list_for_user(user=user).values("id")


def api_token_list(*, user: AbstractBaseUser) -> QuerySet[AuthToken]:
    """The user's own unexpired API tokens, newest first (rows hold digests, never keys)."""
    return AuthToken.objects.filter(user=user, expiry__gt=timezone.now()).order_by("-created", "token_key")


def classification_status_counts() -> dict[str, int]:
    rows = Classification.objects.values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}


def audit_event_list(*, organisation: Organisation, filters: dict[str, Any] | None = None) -> QuerySet[AuditEvent]:
    """An organisation's log, newest first; filters: action, object_type, outcome, actor (username),
    date_from, date_to (inclusive, UTC dates)."""
    filters = filters or {}
    events = AuditEvent.objects.filter(organisation_id=organisation.pk)
    for field in ("action", "object_type", "outcome"):
        if filters.get(field):
            events = events.filter(**{field: filters[field]})
    if filters.get("actor"):
        events = events.filter(actor_username=filters["actor"])
    if filters.get("date_from"):
        events = events.filter(at__date__gte=filters["date_from"])
    if filters.get("date_to"):
        events = events.filter(at__date__lte=filters["date_to"])
    return events.order_by("-at", "-id")
