"""Request bodies: JSON, as DRF parses it, that is also text."""

from __future__ import annotations

import json
from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError

__all__ = ["JSONParser", "is_unicode"]


def is_unicode(value: Any) -> bool:
    """False if decoded JSON holds a lone surrogate (``"\\ud800"``): valid
    JSON, but not text that can be encoded, stored or sent on (PostgreSQL's
    jsonb refuses it; a topic name holding one cannot name a group)."""
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        if not is_unicode(data):
            raise ParseError(
                "JSON parse error - the body holds a lone surrogate escape "
                "(\\ud800-\\udfff), which is not text"
            )
        return data
