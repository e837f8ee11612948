"""What every API view shares: organisation scoping, pagination, filters, input parsing, ?wait=."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import Http404
from rest_framework import serializers as drf_serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from diagnosis.api import serializers as s
from diagnosis.api.pagination import StandardPagination
from diagnosis.api.waiting import wait_for
from diagnosis.scoping import scope_request, url_object


def _filters(serializer_class: type[drf_serializers.Serializer], request: Request) -> dict[str, Any]:
    """Validated query parameters (a plain dict: DRF reads a missing boolean in a QueryDict as false)."""
    serializer = serializer_class(data=request.query_params.dict())
    serializer.is_valid(raise_exception=True)
    return {key: value for key, value in serializer.validated_data.items() if value is not None}


def _waited(request: Request, settled: Callable[[], bool]) -> bool:
    """Honour the request's `wait` query parameter (s.WaitQuery): when it asks to wait and
    `settled()` is false, block until it is true or the wait runs out. True when it waited, so
    the view fetches its object again and answers with the state then."""
    wait = _filters(s.WaitQuery, request).get("wait")
    if not wait or settled():
        return False
    wait_for(settled, timeout=wait)
    return True


def _input(
    serializer_class: type[drf_serializers.Serializer], request: Request, *, partial: bool = False
) -> dict[str, Any]:
    serializer = serializer_class(data=request.data, partial=partial)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _referenced(getter, field: str, **kwargs: Any):
    """An object named in a request body; unknown or another organisation's: a field error, same text."""
    try:
        return getter(**kwargs)
    except Http404 as exc:
        raise drf_serializers.ValidationError({field: [f"No such {field}."]}) from exc


class ScopedApiView(APIView):
    """Every API view: after DRF authenticated the caller (token or session) and checked the
    permission, every object named in the URL is fetched through its scoped selector, so another
    organisation's id is a 404 whatever the method (a 405 would tell an outsider the id exists)."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        scope_request(request._request, user=request.user, url_kwargs=kwargs)

    def url_object(self, key: str) -> Any:
        """The object the URL names under `key` ("image_id"), fetched once (scoping.url_object)."""
        return url_object(self.request._request, key)


class PaginatedListMixin:
    pagination_class = StandardPagination  # also tells drf-spectacular the list is paginated

    def paginate(self, request: Request, queryset, serializer_class) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(serializer_class(page, many=True, context={"request": request}).data)
