"""The API's request parsers: DRF's three, the JSON one with a nesting guard. They keep DRF's
names, so a view lists them as before (`parser_classes = [JSONParser, ...]`), and they are the
default of every view (settings.REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]); a test walks the URL
resolver and fails on any API view that parses with another class.

What a hostile body meets, in order: Django refuses a JSON or form body over
DATA_UPLOAD_MAX_MEMORY_SIZE, and a multipart form with more fields or files than allowed (the
exception handler, errors.py, words those as 400s); DRF refuses a charset that is not a text
encoding; a JSON body nested deeper than MAX_JSON_DEPTH is a 400 here (DRF's parser let the
RecursionError of 100,000 `[` through as a 500, on the unauthenticated token endpoint too).
"""

from __future__ import annotations

import json
from typing import IO, Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.parsers import FormParser, MultiPartParser, get_encoding
from rest_framework.utils.json import strict_constant

__all__ = ["MAX_JSON_DEPTH", "FormParser", "JSONParser", "MultiPartParser"]

# The API's JSON bodies are flat objects (depth 1); 32 leaves room for any client's habits and
# stays far below Python's recursion limit.
MAX_JSON_DEPTH = 32
TOO_DEEP = f"JSON parse error - nested more than {MAX_JSON_DEPTH} levels deep."


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """True when `value` nests lists and objects deeper than `limit` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (list, dict)))
    return False


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser (strict: no NaN or Infinity), with the nesting limit."""

    def parse(self, stream: IO[bytes], media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = get_encoding(parser_context or {})
        try:
            data = json.loads(stream.read().decode(encoding), parse_constant=strict_constant if self.strict else None)
        except RecursionError as exc:  # json's scanner recurses once per level: about 900 with room to spare
            raise ParseError(TOO_DEEP) from exc
        except ValueError as exc:  # UnicodeDecodeError too
            raise ParseError(f"JSON parse error - {exc}") from exc
        if json_depth_exceeds(data, MAX_JSON_DEPTH):
            raise ParseError(TOO_DEEP)
        return data
