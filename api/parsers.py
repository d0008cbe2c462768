"""Request bodies: JSON, as DRF parses it, that is also storable text."""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError

__all__ = ["JSONParser", "is_storable", "whole_number"]


def whole_number(text: str, max_digits: int) -> int | None:
    """``text`` as a number if it is 1 to ``max_digits`` ASCII digits, else
    None. (``str.isdigit`` alone also takes "²" and "١", which ``int()``
    refuses or reads, and ``int()`` refuses very long runs.)"""
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None


def is_storable(value: Any) -> bool:
    """False if decoded JSON holds a lone surrogate (``"\\ud800"``) or a
    NUL character (``"\\u0000"``) in any key or string: valid JSON, but
    not text that can be encoded, stored or sent on (PostgreSQL refuses
    both; a topic name holding a surrogate cannot name a group)."""
    # A stack, not recursion: JSON nested as deep as the parser allows
    # would overflow Python's.
    waiting = [value]
    while waiting:
        item = waiting.pop()
        if isinstance(item, dict):
            waiting.extend(item.keys())
            waiting.extend(item.values())
        elif isinstance(item, list):
            waiting.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return False
            try:
                item.encode()
            except UnicodeEncodeError:
                return False
    return True


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        if not is_storable(data):
            raise ParseError(
                "JSON parse error - the body holds a NUL character or a lone "
                "surrogate escape (\\ud800-\\udfff), which are not text"
            )
        return data
