"""ETags that are topic versions: ``ETag: "<version>"``."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

from .parsers import whole_number


def etag(version: int) -> str:
    return f'"{version}"'


def _tags(header: str) -> list[str]:
    tags = []
    for raw in header.split(","):
        tag = raw.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        tags.append(tag.strip('"'))
    return tags


def if_none_match(request: Request, version: int) -> bool:
    """True when the client already holds ``version``: answer 304."""
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    tags = _tags(header)
    return "*" in tags or str(version) in tags


def expected_version(request: Request) -> int | None:
    """The version ``If-Match`` asks for, or None when absent or ``*``."""
    header = request.headers.get("If-Match")
    if header is None:
        return None
    if header.strip().startswith("W/"):
        # If-Match compares strongly (RFC 9110): a weak tag matches nothing.
        raise ValidationError(
            {"If-Match": ['a weak ETag never matches; send the ETag as given, "3"']}
        )
    tags = _tags(header)
    if tags == ["*"]:
        return None
    version = whole_number(tags[0], 18) if len(tags) == 1 else None
    if version is None:
        raise ValidationError(
            {"If-Match": ['expected one version as an ETag, for example "3"']}
        )
    return version
