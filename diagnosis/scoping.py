"""Organisation scoping of every object named in a URL, before anything else sees the request.

Each `<thing>_id` in a route is fetched through its one scoped selector (`patient_get`,
`lesion_get`, ...). An id of another organisation, or one that does not exist, is a 404 for every
method: an outsider cannot tell "not yours" from "not there", nor learn which methods a route
takes. Pages are checked by `ObjectScopeMiddleware` (diagnosis/middleware.py) and API views by
`ScopedApiView` (diagnosis/api/views.py), after DRF has authenticated the caller. Both keep what
they fetched on the request: the view reads it with `url_object` instead of fetching it again,
and the audit trail files the request under it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.models import Model
from django.http import HttpRequest

from diagnosis import selectors


@dataclass(frozen=True)
class ScopedObject:
    object_type: str  # "patient", "lesion", "image", ...
    instance: Model
    organisation_id: int
    # Every object the URL names, by keyword ("image_id": the image), as its selector returned it:
    # a view that reads one before changing anything uses it instead of fetching it again.
    url_objects: Mapping[str, Model] = field(default_factory=dict)


# Object type -> the path from it to its organisation's id (ORM lookup syntax). Scoping follows
# it through loaded attributes; the audit trail uses it as a query for ids it could not fetch.
ORGANISATION_PATHS: dict[str, str] = {
    "organisation": "pk",
    "membership": "organisation_id",
    "patient": "organisation_id",
    "batch": "organisation_id",
    "lesion": "patient__organisation_id",
    "image": "lesion__patient__organisation_id",
    "classification": "image__lesion__patient__organisation_id",
    "review": "image__lesion__patient__organisation_id",
}


def _organisation_id(object_type: str, instance: Model) -> int:
    value: Any = instance
    for attribute in ORGANISATION_PATHS[object_type].split("__"):
        value = getattr(value, attribute)
    return value


# URL keyword -> (object type, scoped getter). The order matters only for membership_id, which
# is looked up inside the organisation named before it.
_GETTERS: dict[str, tuple[str, Callable[..., Model]]] = {
    "organisation_id": (
        "organisation",
        lambda user, pk, found: selectors.organisation_get(user=user, organisation_id=pk),
    ),
    "membership_id": (
        "membership",
        lambda user, pk, found: selectors.membership_get(organisation=found["organisation_id"], membership_id=pk),
    ),
    "patient_id": ("patient", lambda user, pk, found: selectors.patient_get(user=user, patient_id=pk)),
    "lesion_id": ("lesion", lambda user, pk, found: selectors.lesion_get(user=user, lesion_id=pk)),
    "image_id": ("image", lambda user, pk, found: selectors.image_get(user=user, image_id=pk)),
    "batch_id": ("batch", lambda user, pk, found: selectors.batch_get(user=user, batch_id=pk)),
    "classification_id": (
        "classification",
        lambda user, pk, found: selectors.classification_get(user=user, classification_id=pk),
    ),
    "review_id": ("review", lambda user, pk, found: selectors.review_get(user=user, review_id=pk)),
}

SCOPED_URL_KWARGS = frozenset(_GETTERS)


def scope_url_objects(*, user: Any, url_kwargs: Mapping[str, Any]) -> ScopedObject | None:
    """Fetch every object named in the URL as `user` may see it; raises Http404 for the first one
    they may not. Returns the innermost object (the one the route is about), or None.

    An `_id` keyword this module does not know is a programming error, refused loudly rather
    than served unscoped.
    """
    unknown = [key for key in url_kwargs if key.endswith("_id") and key not in _GETTERS]
    if unknown:
        raise ImproperlyConfigured(f"URL keyword(s) {unknown} have no scoped getter in diagnosis/scoping.py")
    found: dict[str, Model] = {}
    last: ScopedObject | None = None
    for key, (object_type, getter) in _GETTERS.items():
        if key in url_kwargs:
            found[key] = getter(user, url_kwargs[key], found)
            last = ScopedObject(object_type, found[key], _organisation_id(object_type, found[key]), found)
    return last


def scope_request(request: HttpRequest, *, user: Any, url_kwargs: Mapping[str, Any]) -> None:
    """Scope the URL's objects (Http404 for one `user` may not see) and keep them on the
    request: for the view (`url_object`) and for the audit trail (`audit_object`)."""
    scoped = scope_url_objects(user=user, url_kwargs=url_kwargs)
    request.url_objects = scoped.url_objects if scoped is not None else {}
    if scoped is not None:
        request.audit_object = (scoped.object_type, scoped.instance.pk, scoped.organisation_id)


def url_object(request: HttpRequest, key: str) -> Any:
    """The object the URL names under `key` ("image_id"), as its scoped selector fetched it
    for this request: no second query. Fetch again after changing it."""
    return request.url_objects[key]
