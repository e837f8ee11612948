"""What every API sub-domain's serializers share: the notice, id fields, absolute links."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

NOTICE = (
    "Decision support, not a diagnosis. SkinPortal is research and education software, not a certified medical device."
)


# Ids are 64-bit (BigAutoField). A larger or non-positive number in a filter or a reference is a
# 400, never a database error: the fuzz found ?patient=<40 digits> answered 500 (OverflowError in
# SQLite on a lookup across a relation; Django only guards lookups on the field itself).
MAX_ID = 2**63 - 1


class IdField(serializers.IntegerField):
    """An object id in a request: a query filter or a reference in a body."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(min_value=1, max_value=MAX_ID, **kwargs)


def _absolute(request, url: str) -> str:
    return request.build_absolute_uri(url) if request else url
