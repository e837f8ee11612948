"""Every URL pattern of the project, found by walking the resolver, so that security tests cover
routes added later without anyone remembering to list them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from django.urls import URLPattern, URLResolver, get_resolver


@dataclass(frozen=True)
class UrlRoute:
    namespace: str  # "admin" for the admin site, "" for the portal and its API
    name: str | None
    route: str  # the full pattern, e.g. "patients/<int:patient_id>/edit/"
    kwargs: tuple[str, ...]  # the URL's keyword arguments


def _walk(patterns, prefix: str = "", namespace: str = "", kwargs: tuple[str, ...] = ()) -> Iterator[UrlRoute]:
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        here = kwargs + tuple(pattern.pattern.converters)
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, route, pattern.namespace or namespace, here)
        elif isinstance(pattern, URLPattern):
            yield UrlRoute(namespace, pattern.name, route, here)


def url_routes() -> list[UrlRoute]:
    return list(_walk(get_resolver().url_patterns))
