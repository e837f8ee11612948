"""Shared pieces of the selectors: the user type and the one scoped single-object fetch."""

from __future__ import annotations

from typing import TypeVar

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import (
    Model,
    QuerySet,
)
from django.http import Http404

User = AbstractBaseUser | AnonymousUser


M = TypeVar("M", bound=Model)


def _get_or_404(objects: QuerySet[M], pk: int | str, what: str) -> M:
    """The one object of `objects` with this id. Unknown, malformed, or outside the user's
    organisations (`objects` is scoped): the same Http404, so an outsider learns nothing."""
    try:
        return objects.get(pk=int(pk))
    except (objects.model.DoesNotExist, ValueError, TypeError) as exc:
        raise Http404(f"No such {what}.") from exc
